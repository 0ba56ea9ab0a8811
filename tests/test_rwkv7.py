"""RWKV-7 (models/rwkv7.py): the chunked WKV equals the token-by-token recurrence; the model equals an independent
NumPy transcription of the paper's equations on the same weights; generation's state equals the training form's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import generate as generate_lib
from models import rwkv7

CFG = dict(name='rwkv7', width=32, num_layers=2, head_size=8, chunk_len=4, decay_lora=8, iclr_lora=8, value_lora=8,
           gate_lora=8, tie_embeddings=False)
VOCAB = 50


def _random_wkv_inputs(rng, batch, length, heads, size):
  def rnd(*shape, scale=1.0):
    return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)
  kk = rnd(batch, length, heads, size)
  kk = kk / jnp.linalg.norm(kk, axis=-1, keepdims=True)
  a = jax.nn.sigmoid(rnd(batch, length, heads, size))
  log_w = -np.exp(-0.5) * jax.nn.sigmoid(rnd(batch, length, heads, size, scale=3.0))
  return (rnd(batch, length, heads, size), log_w, rnd(batch, length, heads, size), rnd(batch, length, heads, size),
          -kk, kk * a), rnd(batch, heads, size, size, scale=0.3)


@pytest.mark.parametrize('length, chunk', [(37, 16), (13, 4), (5, 64), (16, 1)])
def test_chunked_wkv_equals_the_recurrence(length, chunk):
  """Lengths not divisible by the chunk, a chunk longer than the sequence, chunks of one token."""
  inputs, sigma0 = _random_wkv_inputs(np.random.default_rng(length), 2, length, 3, 8)
  y_scan, s_scan = rwkv7.wkv_scan(*inputs, sigma0)
  y_chunk, s_chunk = jax.jit(rwkv7.wkv_chunked, static_argnums=(7,))(*inputs, sigma0, chunk)
  scale = float(jnp.max(jnp.abs(y_scan)))
  np.testing.assert_allclose(y_chunk, y_scan, atol=2e-6 * scale)
  np.testing.assert_allclose(s_chunk, s_scan, atol=2e-6 * float(jnp.max(jnp.abs(s_scan))))


@pytest.mark.parametrize('chunk', [16, 64])
def test_chunked_wkv_holds_when_the_removal_keys_align(chunk):
  """A run of one token: every removal key the same, a ~ 0.9, almost no decay. A series for (I - L)^-1 blows up
  here (its terms reach 1e9 at chunk 64, in float32); the chunk's triangular solve stays at float32 rounding."""
  rng = np.random.default_rng(7)
  kk = rng.normal(size=(1, 1, 1, 16))
  kk = jnp.asarray(np.broadcast_to(kk / np.linalg.norm(kk), (1, 128, 1, 16)), jnp.float32)
  r, k, v = (jnp.asarray(rng.normal(size=(1, 128, 1, 16)), jnp.float32) for _ in range(3))
  inputs = (r, jnp.full_like(r, -1e-3), k, v, -kk, 0.9 * kk)
  y_scan, _ = rwkv7.wkv_scan(*inputs, jnp.zeros((1, 1, 16, 16)))
  y_chunk, _ = rwkv7.wkv_chunked(*inputs, jnp.zeros((1, 1, 16, 16)), chunk)
  np.testing.assert_allclose(y_chunk, y_scan, atol=2e-6 * float(jnp.max(jnp.abs(y_scan))))


def test_chunked_wkv_gradients_equal_the_recurrence():
  inputs, sigma0 = _random_wkv_inputs(np.random.default_rng(1), 1, 11, 2, 4)
  loss = lambda fn: lambda *xs: jnp.sum(jnp.sin(fn(*xs, sigma0)[0]))  # pylint: disable=unnecessary-lambda-assignment
  grads_scan = jax.grad(loss(rwkv7.wkv_scan), argnums=tuple(range(6)))(*inputs)
  grads_chunk = jax.grad(loss(lambda *xs: rwkv7.wkv_chunked(*xs, 4)), argnums=tuple(range(6)))(*inputs)
  for g_scan, g_chunk in zip(grads_scan, grads_chunk):
    np.testing.assert_allclose(g_chunk, g_scan, atol=1e-5 * (1 + float(jnp.max(jnp.abs(g_scan)))))


# ------------------------------------------------------------ the paper's equations, one token at a time, in NumPy
def _layer_norm(x, p, eps=1e-5):
  return (x - x.mean()) / np.sqrt(x.var() + eps) * p['scale'] + p['bias']


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _time_mix(p, x, last_x, state, v_first, heads, size, layer):
  """Eq. of the RWKV-7 time mix for one token; state S is value x key (the paper's orientation)."""
  mix = {n: x + (last_x - x) * p[f'x_{n}'] for n in 'rwkvag'}
  r = mix['r'] @ p['receptance']['kernel']
  w = np.exp(-np.exp(-0.5) * _sigmoid(p['w0'] + np.tanh(mix['w'] @ p['w1']) @ p['w2']))
  k = mix['k'] @ p['key']['kernel']
  v = mix['v'] @ p['value']['kernel']
  if layer == 0:
    v_first = v
  else:
    v = v + (v_first - v) * _sigmoid(p['v0'] + mix['v'] @ p['v1'] @ p['v2'])
  a = _sigmoid(p['a0'] + mix['a'] @ p['a1'] @ p['a2'])
  g = _sigmoid(mix['g'] @ p['g1']) @ p['g2']
  kk = (k * p['k_k']).reshape(heads, size)
  kk = kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)
  k = k * (1 + (a - 1) * p['k_a'])
  r, w, k, v, a = (t.reshape(heads, size) for t in (r, w, k, v, a))
  y = np.zeros((heads, size))
  for h in range(heads):
    s = state[h]
    s = s @ (np.diag(w[h]) - np.outer(kk[h], a[h] * kk[h])) + np.outer(v[h], k[h])
    state[h] = s
    y[h] = s @ r[h]
  y = (y - y.mean(1, keepdims=True)) / np.sqrt(y.var(1, keepdims=True) + 64e-5)
  y = y.reshape(-1) * p['ln_x_scale'] + p['ln_x_bias']
  y = y + ((r * k * p['r_k']).sum(1, keepdims=True) * v).reshape(-1)
  return (y * g) @ p['output']['kernel'], v_first


def _numpy_forward(params, tokens, heads, size, layers):
  p = jax.tree.map(lambda t: np.asarray(t, np.float64), params)
  width = p['embed'].shape[1]
  att_last, ffn_last = np.zeros((layers, width)), np.zeros((layers, width))
  states = np.zeros((layers, heads, size, size))
  logits = []
  for token in tokens:
    x = p['embed'][token]
    v_first = None
    for i in range(layers):
      b = p[f'block_{i}']
      if i == 0:
        x = _layer_norm(x, b['ln0'])
      xa = _layer_norm(x, b['ln1'])
      dx, v_first = _time_mix(b['att'], xa, att_last[i], states[i], v_first, heads, size, i)
      att_last[i] = xa
      x = x + dx
      xf = _layer_norm(x, b['ln2'])
      kx = xf + (ffn_last[i] - xf) * b['ffn']['x_k']
      x = x + np.maximum(kx @ b['ffn']['key']['kernel'], 0) ** 2 @ b['ffn']['value']['kernel']
      ffn_last[i] = xf
    logits.append(_layer_norm(x, p['ln_out']) @ p['head']['kernel'])
  return np.stack(logits), states


@functools.lru_cache(maxsize=None)
def _model_and_params():
  model = models.build(CFG, vocab_size=VOCAB)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  # The reference init zeroes the output matrices and LoRA down projections: perturb every weight so that every
  # term of the equations shows in the logits.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [x + 0.3 * jax.random.normal(key, x.shape) / np.sqrt(x.shape[0] if x.ndim == 2 else 1)
            for x, key in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves)


def test_model_equals_the_numpy_transcription():
  model, params = _model_and_params()
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(1, 11))
  logits, state = jax.jit(functools.partial(model.apply, return_state=True))({'params': params}, jnp.asarray(tokens))
  want, want_states = _numpy_forward(params, tokens[0], heads=4, size=8, layers=2)
  np.testing.assert_allclose(logits[0], want, atol=2e-4 * np.abs(want).max())
  for i in range(2):  # Our state is the transpose (keys x values).
    np.testing.assert_allclose(np.swapaxes(state[f'block_{i}']['wkv'][0], -1, -2), want_states[i], atol=1e-4)


def test_generation_state_equals_the_training_forms():
  """Prefill a left-padded prompt, decode token by token: the logits and state equal one training-form pass over the
  real tokens, and the cache has the same size whatever the length."""
  model, params = _model_and_params()
  variables = {'params': params}
  tokens = jnp.asarray(np.random.default_rng(3).integers(1, VOCAB, size=(2, 9)), jnp.int32)
  full, full_state = jax.jit(functools.partial(model.apply, return_state=True))(variables, tokens)
  prompt = jnp.concatenate([jnp.zeros((2, 3), jnp.int32), tokens[:, :5]], axis=1)  # 3 pads on the left.
  mask = jnp.concatenate([jnp.zeros((2, 3), bool), jnp.ones((2, 5), bool)], axis=1)
  logits, cache = jax.jit(functools.partial(model.apply, max_len=20, method=model.prefill))(variables, prompt, mask)
  np.testing.assert_allclose(logits, full[:, 4], atol=1e-4)
  sizes = jax.tree.map(lambda x: x.shape, cache)
  decode = jax.jit(functools.partial(model.apply, method=model.decode))
  for t in range(5, 9):
    logits, cache = decode(variables, tokens[:, t], cache, t + 3)
    np.testing.assert_allclose(logits, full[:, t], atol=1e-4)
  assert jax.tree.map(lambda x: x.shape, cache) == sizes
  for got, want in zip(jax.tree.leaves(cache['state']), jax.tree.leaves(full_state)):
    np.testing.assert_allclose(got, want, atol=1e-4)
  # The shared generation loop runs it (greedy) and matches the argmax of the full forward.
  out = generate_lib.generate(model, params, tokens[:, :5], jnp.ones((2, 5), bool), max_new_tokens=3, end_id=VOCAB)
  again = jax.jit(model.apply)(variables, jnp.concatenate([tokens[:, :5], out], axis=1))
  np.testing.assert_array_equal(out, jnp.argmax(again[:, 4:7], -1))


def test_scan_form_and_bfloat16_compute():
  model, params = _model_and_params()
  tokens = jnp.asarray(np.random.default_rng(5).integers(0, VOCAB, size=(2, 10)), jnp.int32)
  chunked = jax.jit(model.apply)({'params': params}, tokens)
  scanned = jax.jit(models.build(dict(CFG, wkv='scan'), vocab_size=VOCAB).apply)({'params': params}, tokens)
  np.testing.assert_allclose(scanned, chunked, atol=1e-4)
  low = jax.jit(models.build(dict(CFG, dtype='bfloat16'), vocab_size=VOCAB).apply)({'params': params}, tokens)
  assert low.dtype == jnp.float32 and float(jnp.max(jnp.abs(low - chunked))) < 0.1 * float(jnp.max(jnp.abs(chunked)))


@pytest.mark.parametrize('overrides, match', [
    (dict(head_size=12), r'model\.head_size=12 does not divide model\.width=32'),
    (dict(chunk_len=0), r'model\.chunk_len=0 must be in 1\.\.64'),
    (dict(wkv='fast'), r"model\.wkv='fast' is not one of"),
    (dict(head_size=0, num_heads=5), r'model\.num_heads=5 does not divide model\.width=32'),
])
def test_bad_config_is_one_line(overrides, match):
  with pytest.raises(models.ModelConfigError, match=match):
    models.config_of(dict(CFG, **overrides))


def test_reference_initialisation():
  """The reference's init: zero output matrices and LoRA down projections, decays in (e^-0.607, 1), the mu ramps."""
  model = models.build(dict(CFG, num_layers=3), vocab_size=VOCAB)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  att = params['block_0']['att']
  assert float(jnp.abs(att['output']['kernel']).max()) == 0 and float(jnp.abs(att['w1']).max()) == 0
  assert float(jnp.abs(params['block_0']['ffn']['value']['kernel']).max()) == 0
  assert float(att['x_r'][0]) == 1.0 and float(att['x_r'][-1]) < 1.0  # 1 - (i/D)^p: 1 at channel 0, decreasing.
  assert float(jnp.abs(params['embed']).max()) <= 1e-4
  receptance = np.asarray(att['receptance']['kernel'])
  np.testing.assert_allclose(receptance.T @ receptance, np.eye(32), atol=1e-5)  # Orthogonal, gain 1.
  np.testing.assert_allclose(params['block_2']['att']['ln_x_scale'], 1.0)  # ((layer + 1) / layers)^0.7.
  np.testing.assert_allclose(att['ln_x_scale'], (1 / 3) ** 0.7, rtol=1e-6)
  decay = np.exp(-np.exp(-0.5) * jax.nn.sigmoid(np.asarray(att['w0'])))
  assert decay.min() > np.exp(-np.exp(-0.5)) and decay.max() < 1


def test_remat_keeps_the_loss_and_gradients():
  model, params = _model_and_params()
  tokens = jnp.asarray(np.random.default_rng(6).integers(0, VOCAB, size=(2, 9)), jnp.int32)

  def grads(m):
    return jax.jit(jax.grad(lambda p: jnp.mean(m.apply({'params': p}, tokens) ** 2)))(params)
  plain = grads(model)
  again = grads(models.build(dict(CFG, remat='full'), vocab_size=VOCAB))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(again)):
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('length, chunk', [(64, 16), (37, 16)])
def test_analytic_flops_match_xla(length, chunk):
  """models/flops.py's count of the chunked form against XLA's, the chunk scan unrolled."""
  cfg = dict(name='rwkv7', width=64, num_layers=2, head_size=16, chunk_len=chunk)
  per_token = models.forward_flops_per_token(cfg, vocab_size=48, seq_len=length)
  model = models.build(cfg, vocab_size=48)
  tokens = jnp.zeros((1, length), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tokens)
  cost = jax.jit(lambda v, t: model.apply(v, t, scan_unroll=True)).lower(params, tokens).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert 0.9 < cost['flops'] / (per_token * length) < 1.2, (cost['flops'], per_token * length)
