"""Tests of models/decoder.py and models/generate.py: config checks, causality, GQA, RoPE,
looped depth at call time, KV-cache decoding against the full forward, sampling, any model with a cache."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import models
from models import decoder
from models.decoder import Decoder
from models.decoder import DecoderConfig
from models.errors import ModelConfigError
from models import generate as generate_lib
from tests.conftest import fast_jit

VOCAB = 13  # Digits 0..9, '+' 10, '=' 11, end 12.
DIGITS = tuple(range(10))
END = 12
NEVER = VOCAB  # An end id that argmax never produces: generation runs every step.

# generate as it is, compiled with the cheaper settings (generate's own jit is tested too).
fast_generate = fast_jit(generate_lib.generate.__wrapped__, static_argnames=(
    'model', 'max_new_tokens', 'end_id', 'sampling', 'digit_positions', 'prefill_kwargs', 'return_logits'))
ABACUS = generate_lib.DigitPositions(DIGITS)


def tiny(looped: bool = False, **overrides) -> DecoderConfig:
  fields = dict(name='looped' if looped else 'llama', width=16, num_heads=4, num_kv_heads=2, mlp_hidden=32,
                num_layers=2, prelude_layers=1, recurrent_layers=1, coda_layers=1, loops=3)
  fields.update(overrides)
  return DecoderConfig(**fields)


def host_params(model: Decoder, seed: int = 0):
  """Random params of the model's shapes, drawn with NumPy (compiling `init` costs seconds).

  Kernels ~ N(0, 1/fan_in), embeddings ~ N(0, 1) (well separated logits, so that greedy
  choices are not near ties), norm scales near 1.
  """
  tokens = jnp.zeros((1, 4), jnp.int32)
  shapes = jax.eval_shape(functools.partial(model.init, digit_pos_BxL=tokens), jax.random.key(0),
                          tokens)['params']
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'scale':
      return jnp.asarray(1 + 0.1 * rng.normal(size=leaf.shape), jnp.float32)
    fan_in = 1 if name == 'embedding' else int(np.prod(leaf.shape[:2 if path[-2].key == 'out' else 1]))
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.lru_cache(maxsize=None)
def build(cfg: DecoderConfig, seed: int = 0):
  """(model, params, forward) with forward(params, tokens, **kw) jitted (static loops, scan_unroll)."""
  model = Decoder(cfg, VOCAB)
  apply = lambda p, t, **kw: model.apply({'params': p}, t, **kw)  # pylint: disable=unnecessary-lambda-assignment
  return model, host_params(model, seed), fast_jit(apply, static_argnames=('loops', 'scan_unroll'))


def digit_positions(tokens_BxL: np.ndarray, mask_BxL: np.ndarray) -> np.ndarray:
  """Abacus positions as the data side computes them (no offset): 1, 2, ... along a digit run."""
  pos = np.zeros(tokens_BxL.shape, np.int32)
  for b, l in np.ndindex(tokens_BxL.shape):
    if mask_BxL[b, l] and tokens_BxL[b, l] in DIGITS:
      pos[b, l] = (pos[b, l - 1] if l else 0) + 1
  return pos


def test_config_derived_fields():
  cfg = DecoderConfig(width=128, num_heads=8)
  assert (cfg.kv_heads, cfg.head_width, cfg.mlp_width('swiglu')) == (8, 16, 344)
  assert hash(cfg) == hash(DecoderConfig(width=128, num_heads=8))
  assert not cfg.looped and DecoderConfig(name='looped').looped
  assert DecoderConfig.from_config(ml_collections.ConfigDict(
      {'width': 32, 'num_heads': 4, 'rope_base': 100})) == DecoderConfig(width=32, num_heads=4, rope_base=100.0)


@pytest.mark.parametrize('cfg, match', [
    ({'width': 32, 'widht': 32}, r"model\.widht \(did you mean 'width'\?\)"),
    ({'num_heads': 4, 'num_kv_heads': 3}, r'model\.num_kv_heads=3 must divide model\.num_heads=4'),
    ({'position': 'learned'}, r"model\.position='learned' is not one of \['rope', 'abacus'"),
    ({'width': '32'}, r"model\.width='32' should be of type int"),
    ({'loops': 0}, r'model\.loops=0 must be an int >= 1'),
])
def test_from_config_refuses(cfg, match):
  with pytest.raises(ModelConfigError, match=match):
    DecoderConfig.from_config(cfg)


def test_param_dtype_float32_logits_float32_under_bfloat16():
  model = Decoder(tiny(looped=True, dtype='bfloat16', position='rope_abacus'), VOCAB)
  tokens = jnp.zeros((2, 5), jnp.int32)
  variables = jax.eval_shape(functools.partial(model.init, digit_pos_BxL=tokens),
                             jax.random.key(0), tokens)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits = jax.eval_shape(functools.partial(model.apply, digit_pos_BxL=tokens), variables, tokens)
  assert logits.shape == (2, 5, VOCAB) and logits.dtype == jnp.float32


@pytest.mark.parametrize('looped', [False, True])
def test_causal(looped):
  _, params, forward = build(tiny(looped=looped))
  tokens = np.random.default_rng(1).integers(0, VOCAB, (2, 7)).astype(np.int32)
  changed = tokens.copy()
  changed[:, 5] = (changed[:, 5] + 1) % VOCAB
  logits, logits_changed = forward(params, tokens), forward(params, changed)
  assert logits.shape == (2, 7, VOCAB) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits[:, :5], logits_changed[:, :5], atol=1e-6)
  assert np.abs(logits[:, 5:] - logits_changed[:, 5:]).max() > 1e-4


def test_gqa_equals_mha_with_repeated_kv_heads():
  _, gqa_params, gqa_forward = build(tiny(num_layers=1))
  _, _, mha_forward = build(tiny(num_layers=1, num_kv_heads=4))
  # Query head n reads kv head n // (N/G): MHA with each kv head's weights repeated N/G times.
  def repeat(path, a):
    return jnp.repeat(a, 2, axis=1) if path[-2].key in ('key', 'value') else a

  mha_params = jax.tree_util.tree_map_with_path(repeat, gqa_params)
  assert gqa_params['block_0']['attention']['key']['kernel'].shape == (16, 2, 4)
  tokens = np.random.default_rng(2).integers(0, VOCAB, (2, 6)).astype(np.int32)
  np.testing.assert_allclose(gqa_forward(gqa_params, tokens), mha_forward(mha_params, tokens),
                             atol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
  rng = np.random.default_rng(3)
  q, k = (jnp.asarray(rng.normal(size=(1, 6, 2, 8)), jnp.float32) for _ in range(2))
  positions = jnp.arange(6)[None]

  def scores(pos_q, pos_k):
    rot_q = decoder.apply_rope(q, decoder.rope_angles(pos_q, 8, 10000.0))
    rot_k = decoder.apply_rope(k, decoder.rope_angles(pos_k, 8, 10000.0))
    return jnp.einsum('blnk,bsnk->bnls', rot_q, rot_k)

  np.testing.assert_allclose(scores(positions, positions), scores(positions + 37, positions + 37),
                             atol=1e-4)
  assert np.abs(scores(positions, positions) - scores(positions, 2 * positions)).max() > 1e-2
  # Position 0 is the identity; rotations keep norms.
  np.testing.assert_allclose(decoder.apply_rope(q, decoder.rope_angles(0 * positions, 8, 1e4)), q)
  np.testing.assert_allclose(jnp.linalg.norm(decoder.apply_rope(q, decoder.rope_angles(
      positions, 8, 1e4)), axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)


def test_left_padding_with_mask_changes_nothing():
  _, params, forward = build(tiny())
  tokens = np.random.default_rng(4).integers(0, VOCAB, (1, 5)).astype(np.int32)
  padded = np.concatenate([np.full((1, 3), 7, np.int32), tokens], axis=1)
  mask = np.arange(8)[None] >= 3
  np.testing.assert_allclose(forward(params, padded, mask_BxL=mask)[:, 3:], forward(params, tokens),
                             atol=1e-5)


def test_looped_depth_is_a_call_argument():
  cfg = tiny(looped=True)
  model, params, forward = build(cfg)

  def shapes(c):
    tokens = jnp.zeros((1, 4), jnp.int32)
    return jax.tree.map(lambda a: a.shape, jax.eval_shape(Decoder(c, VOCAB).init, jax.random.key(0),
                                                          tokens))

  assert shapes(tiny(looped=True, loops=1)) == shapes(tiny(looped=True, loops=9))
  tokens = np.random.default_rng(5).integers(0, VOCAB, (2, 7)).astype(np.int32)
  one, three = forward(params, tokens, loops=1), forward(params, tokens)
  assert np.abs(one - three).max() > 1e-3
  np.testing.assert_allclose(forward(params, tokens, loops=3, scan_unroll=True), three, atol=1e-5)
  # The core is one scan: the traced program is the same size at any depth.
  jaxpr = lambda loops: jax.make_jaxpr(functools.partial(  # pylint: disable=unnecessary-lambda-assignment
      model.apply, loops=loops))({'params': params}, tokens)
  assert 'length=2' in str(jaxpr(2)) and str(jaxpr(2)).replace('length=2', 'length=17') == str(jaxpr(17))
  with pytest.raises(ValueError, match='loops'):
    forward(params, tokens, loops=0)
  # Huginn-style training: 5 applications of which the first 3 act = 3 applications.
  active = jax.jit(lambda p, t, k: model.apply({'params': p}, t, loops=5, active_loops=k))
  np.testing.assert_allclose(active(params, tokens, 3), three, atol=1e-5)
  np.testing.assert_allclose(active(params, tokens, 1), one, atol=1e-5)
  _, cache = jax.eval_shape(functools.partial(model.apply, max_len=8, loops=2, method=Decoder.prefill),
                            {'params': params}, tokens, tokens > -1)
  assert cache['kv']['core']['block_0']['k'].shape == (2, 2, 8, 2, 4)  # [T, B, S, G, K]
  with pytest.raises(ValueError, match='prefilled with loops=2'):
    jax.eval_shape(functools.partial(model.apply, loops=3, method=Decoder.decode),
                   {'params': params}, tokens[:, 0], cache, 6)


def left_padded_prompts(seed: int, lengths: tuple[int, ...]):
  """Random prompts of the given real lengths, left-padded with random tokens to the longest."""
  rng = np.random.default_rng(seed)
  width = max(lengths)
  tokens = rng.integers(0, END, (len(lengths), width)).astype(np.int32)
  mask = np.arange(width)[None] >= width - np.asarray(lengths)[:, None]
  return tokens, mask, digit_positions(tokens, mask)


KV_CASES = {
    'stacked_rope': tiny(),
    'stacked_abacus': tiny(position='abacus'),
    'looped_rope': tiny(looped=True),
    'looped_rope_abacus_concat': tiny(looped=True, position='rope_abacus', injection='concat',
                                      init_state='prelude', prelude_layers=0, tie_embeddings=True),
    'lm': tiny(tie_embeddings=True, init='gpt', attention_grad='flash'),  # configs/lm.py's decoder.
}


@pytest.mark.parametrize('case', list(KV_CASES))
def test_kv_cache_decoding_matches_full_forward(case):
  model, params, forward = build(KV_CASES[case])
  prompt, mask, digit_pos = left_padded_prompts(6, (5, 3, 1))
  batch, length = prompt.shape
  steps = 6
  # Reference: the full forward on [prompt, generated so far] at every step.
  tokens = np.concatenate([prompt, np.zeros((batch, steps), np.int32)], axis=1)
  full_mask = np.concatenate([mask, np.ones((batch, steps), bool)], axis=1)
  full_pos = np.concatenate([digit_pos, np.zeros((batch, steps), np.int32)], axis=1)
  ref_logits = []
  for t in range(steps):
    logits = np.asarray(forward(params, tokens, digit_pos_BxL=full_pos, mask_BxL=full_mask))
    ref_logits.append(logits[:, length - 1 + t])
    tokens[:, length + t] = ref_logits[-1].argmax(-1)
    is_digit = np.isin(tokens[:, length + t], DIGITS)
    full_pos[:, length + t] = np.where(is_digit, full_pos[:, length + t - 1] + 1, 0)
  # Prefill + decode with the cache (the tokens must be the reference's for the logits to match).
  generated, logits = fast_generate(model, params, prompt, mask, max_new_tokens=steps, end_id=NEVER,
                                    digit_positions=ABACUS, prompt_digit_pos_BxP=digit_pos,
                                    return_logits=True)
  for t in range(steps):
    np.testing.assert_allclose(logits[:, t], ref_logits[t], atol=1e-5, err_msg=f'step {t}')
  assert generated.shape == (batch, steps) and generated.dtype == jnp.int32
  np.testing.assert_array_equal(generated, tokens[:, length:])
  if case == 'stacked_abacus':  # Abacus matters: digit runs were generated and change the logits.
    assert full_pos[:, length:].max() >= 2


def test_generation_stops_at_end_id():
  model, params, _ = build(KV_CASES['stacked_rope'])
  prompt, mask, digit_pos = left_padded_prompts(6, (5, 3, 1))
  kwargs = dict(max_new_tokens=6, digit_positions=ABACUS, prompt_digit_pos_BxP=digit_pos)
  full = np.asarray(fast_generate(model, params, prompt, mask, end_id=NEVER, return_logits=True,
                                  **kwargs)[0])
  end = int(full[0, 2])
  out = np.asarray(generate_lib.generate(model, params, prompt, mask, end_id=end, **kwargs))
  for row_full, row in zip(full, out):
    stop = list(row_full).index(end) if end in row_full else len(row_full) - 1
    np.testing.assert_array_equal(row[:stop + 1], row_full[:stop + 1])
    assert (row[stop + 1:] == end).all()
  assert (out[0, 3:] == end).all()


def test_sampling_choices_follow_the_tempered_and_truncated_distribution():
  probs = np.array([0.6, 0.25, 0.1, 0.05])
  logits_BxV = jnp.log(jnp.broadcast_to(jnp.asarray(probs, jnp.float32), (4000, 4)))
  key = jax.random.key(0)
  freq = lambda s: np.bincount(np.asarray(s.choose(logits_BxV, key)), minlength=4) / 4000  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(freq(generate_lib.Sampling(temperature=1.0)), probs, atol=0.03)
  np.testing.assert_allclose(freq(generate_lib.Sampling(temperature=1.0, top_k=2)), [0.6 / 0.85, 0.25 / 0.85, 0, 0],
                             atol=0.03)
  np.testing.assert_allclose(freq(generate_lib.Sampling(temperature=1.0, top_p=0.8)), [0.6 / 0.85, 0.25 / 0.85, 0, 0],
                             atol=0.03)  # The nucleus: the fewest tokens holding 80% (0.6 + 0.25).
  hot = probs ** 0.5 / np.sum(probs ** 0.5)
  np.testing.assert_allclose(freq(generate_lib.Sampling(temperature=2.0)), hot, atol=0.03)
  assert (np.asarray(generate_lib.GREEDY.choose(logits_BxV, None)) == 0).all()
  with pytest.raises(ValueError, match='top_p'):
    generate_lib.Sampling(temperature=1.0, top_p=0.0)


def test_sampled_generation_is_seeded_and_greedy_at_top_k_1():
  model, params, _ = build(KV_CASES['stacked_rope'])
  prompt, mask, _ = left_padded_prompts(6, (5, 3, 1))
  run = lambda **kw: np.asarray(fast_generate(model, params, prompt, mask, max_new_tokens=5, end_id=NEVER, **kw))  # pylint: disable=unnecessary-lambda-assignment
  greedy = run()
  np.testing.assert_array_equal(run(sampling=generate_lib.Sampling(1.0, top_k=1), rng=jax.random.key(3)), greedy)
  hot = [run(sampling=generate_lib.Sampling(5.0), rng=jax.random.key(i)) for i in range(3)]
  assert any(not np.array_equal(h, greedy) for h in hot)
  np.testing.assert_array_equal(run(sampling=generate_lib.Sampling(5.0), rng=jax.random.key(0)), hot[0])
  with pytest.raises(ValueError, match='needs an rng'):
    run(sampling=generate_lib.Sampling(1.0))


class _Bigram(nn.Module):
  """Not a decoder: next-token logits from the last token alone, its cache that token. Generation takes any
  model with prefill and decode."""

  @nn.compact
  def _logits(self, token_B):
    return self.param('table', lambda k, s: jax.random.normal(k, s) * 3.0, (VOCAB, VOCAB))[token_B]

  def __call__(self, tokens_BxL):
    return self._logits(tokens_BxL)

  def prefill(self, tokens_BxP, mask_BxP, *, max_len):
    del mask_BxP, max_len
    return self._logits(tokens_BxP[:, -1]), {'last': tokens_BxP[:, -1]}

  def decode(self, token_B, cache, index):
    del cache, index
    return self._logits(token_B), {'last': token_B}


def test_generation_takes_any_model_with_prefill_and_decode():
  model = _Bigram()
  params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params']
  prompt = jnp.asarray([[3, 4], [0, 7]], jnp.int32)
  out = np.asarray(generate_lib.generate(model, params, prompt, jnp.ones_like(prompt, bool), max_new_tokens=4,
                                         end_id=NEVER))
  table = np.asarray(params['table'])
  for row, last in zip(out, [4, 7]):
    for token in row:
      assert token == table[last].argmax()
      last = token
  with pytest.raises(TypeError, match='prefill and decode'):
    generate_lib.generate(nn.Dense(3), {}, prompt, prompt > 0, max_new_tokens=1, end_id=0)


def test_dropout_acts_only_with_a_dropout_rng():
  """model.dropout: the residual branches are dropped in training (a 'dropout' rng given), not at evaluation."""
  model = models.build(dict(name='llama', width=32, num_heads=2, num_layers=2, dropout=0.5), vocab_size=20)
  tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
  params = jax.jit(model.init)(jax.random.key(0), tokens)
  plain = models.build(dict(name='llama', width=32, num_heads=2, num_layers=2), vocab_size=20).apply(params, tokens)
  np.testing.assert_array_equal(model.apply(params, tokens), plain)
  dropped = model.apply(params, tokens, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(dropped, plain)
  with pytest.raises(models.ModelConfigError, match=r'model\.dropout=1\.0 must be in \[0, 1\)'):
    models.config_of(dict(name='llama', dropout=1.0))
