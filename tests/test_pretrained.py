"""Pretrained Llama checkpoints in our decoder (models/pretrained.py, data/bpe.py): parity with HF transformers on
a tiny random checkpoint (tests/fixtures/tiny_llama/, written by tests/fixtures/make_tiny_llama.py with
transformers: its logits, tokenizer ids and greedy continuations), the same weights as a GGUF file written here
with the `gguf` package (llama.cpp's Q/K row order, F32 and Q8_0), and bad checkpoints as one line each."""
import json
import pathlib
import shutil

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import models
from data import bpe
from models import generate as generate_lib
from models import pretrained

FIXTURE = pathlib.Path(__file__).resolve().parent / 'fixtures' / 'tiny_llama'
EXPECTED = json.loads((FIXTURE / 'expected.json').read_text())


def _logits(checkpoint: pretrained.Checkpoint, ids: list[list[int]]) -> np.ndarray:
  model = models.build(checkpoint.model, vocab_size=checkpoint.vocab_size)
  return np.concatenate([np.asarray(model.apply({'params': checkpoint.params}, jnp.asarray([x], jnp.int32)))[0]
                         for x in ids])


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
  """HF's Q/K rows in llama.cpp's order (what convert_hf_to_gguf.py writes): each head's two halves interleaved."""
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: pathlib.Path, *, arch: str = 'llama', quantize: tuple[str, ...] = (),
               replace: dict[str, np.ndarray] | None = None, extra: dict[str, np.ndarray] | None = None
               ) -> pathlib.Path:
  """The fixture's weights and tokenizer as llama.cpp's converter writes them (`quantize`: tensors in Q8_0)."""
  config = json.loads((FIXTURE / 'config.json').read_text())
  tensors = load_file(str(FIXTURE / 'model.safetensors'))
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_block_count(config['num_hidden_layers'])
  writer.add_context_length(config['max_position_embeddings'])
  writer.add_embedding_length(config['hidden_size'])
  writer.add_feed_forward_length(config['intermediate_size'])
  writer.add_head_count(config['num_attention_heads'])
  writer.add_head_count_kv(config['num_key_value_heads'])
  writer.add_key_length(config['head_dim'])
  writer.add_layer_norm_rms_eps(config['rms_norm_eps'])
  writer.add_rope_freq_base(config['rope_parameters']['rope_theta'])
  vocab = json.loads((FIXTURE / 'tokenizer.json').read_text())
  tokens = sorted(vocab['model']['vocab'], key=vocab['model']['vocab'].get)
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm')
  writer.add_token_list(tokens)
  writer.add_token_types([3 if t in ('<|endoftext|>', '<|im_start|>', '<|im_end|>') else 1 for t in tokens])
  writer.add_token_merges([' '.join(m) if isinstance(m, list) else m for m in vocab['model']['merges']])
  names = {'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight'}
  block = {'input_layernorm': 'attn_norm', 'post_attention_layernorm': 'ffn_norm', 'self_attn.q_proj': 'attn_q',
           'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
           'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down'}
  for name, value in tensors.items():
    if name.startswith('model.layers.'):
      _, _, layer, rest = name.split('.', 3)
      kind, suffix = rest.rsplit('.', 1)
      target = f'blk.{layer}.{block[kind]}.{suffix}'
      if kind == 'self_attn.q_proj':
        value = _permute(value, config['num_attention_heads'])
      elif kind == 'self_attn.k_proj':
        value = _permute(value, config['num_key_value_heads'])
    else:
      target = names[name]
    value = (replace or {}).get(target, value)
    if any(q in target for q in quantize):
      packed = gguf.quants.quantize(value.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
      writer.add_tensor(target, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
      writer.add_tensor(target, value)
  for name, value in (extra or {}).items():
    writer.add_tensor(name, value)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def test_hf_directory_logits_equal_transformers():
  checkpoint = pretrained.load(FIXTURE)
  assert checkpoint.model['num_heads'] == 9 and checkpoint.model['num_kv_heads'] == 3
  ours = _logits(checkpoint, EXPECTED['ids'])
  theirs = np.load(FIXTURE / 'expected_logits.npy')
  assert ours.shape == theirs.shape and np.std(theirs) > 1.0  # Logits that differ between tokens.
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_tokenizer_ids_equal_transformers():
  tokenizer = bpe.load_file(FIXTURE)
  for prompt, ids in zip(EXPECTED['prompts'], EXPECTED['ids']):
    assert tokenizer.encode(prompt, add_special_tokens=False).ids == ids, prompt


def test_greedy_generation_equals_transformers_generate():
  checkpoint = pretrained.load(FIXTURE)
  model = models.build(checkpoint.model, vocab_size=checkpoint.vocab_size)
  for ids, expected in zip(EXPECTED['ids'], EXPECTED['generated']):
    prompt = jnp.asarray([ids], jnp.int32)
    out = generate_lib.generate(model, checkpoint.params, prompt, jnp.ones_like(prompt, bool),
                                max_new_tokens=len(expected), end_id=-1)
    assert np.asarray(out)[0].tolist() == expected


def test_gguf_f32_loads_the_same_params_as_the_hf_directory(tmp_path):
  hf = pretrained.load(FIXTURE)
  from_gguf = pretrained.load(write_gguf(tmp_path / 'tiny.gguf'))
  assert from_gguf.model == hf.model and from_gguf.vocab_size == hf.vocab_size
  jax.tree.map(np.testing.assert_array_equal, from_gguf.params, hf.params)  # Q/K rows unpermuted exactly.


def test_gguf_q8_0_is_close_and_its_tokenizer_matches(tmp_path):
  path = write_gguf(tmp_path / 'tiny_q8.gguf', quantize=('ffn_down',))  # Rows of 64: whole Q8_0 blocks of 32.
  ours = _logits(pretrained.load(path), EXPECTED['ids'])
  theirs = np.load(FIXTURE / 'expected_logits.npy')
  diff = np.max(np.abs(ours - theirs))
  assert 1e-6 < diff < 0.05 * np.std(theirs)  # Quantised (not bit-equal), close.
  tokenizer = bpe.load_file(path)  # Rebuilt from the GGUF's vocabulary and merges.
  for prompt, ids in zip(EXPECTED['prompts'], EXPECTED['ids']):
    assert tokenizer.encode(prompt, add_special_tokens=False).ids == ids, prompt


def test_untied_head_and_sharded_hf_directory(tmp_path):
  directory = tmp_path / 'sharded'
  shutil.copytree(FIXTURE, directory)
  tensors = load_file(str(directory / 'model.safetensors'))
  tensors['lm_head.weight'] = np.ascontiguousarray(tensors['model.embed_tokens.weight'][:, ::-1])
  first = {k: v for k, v in tensors.items() if 'layers.1.' not in k}
  second = {k: v for k, v in tensors.items() if 'layers.1.' in k}
  (directory / 'model.safetensors').unlink()
  save_file(first, str(directory / 'model-00001-of-00002.safetensors'))
  save_file(second, str(directory / 'model-00002-of-00002.safetensors'))
  weight_map = {k: 'model-00001-of-00002.safetensors' for k in first}
  weight_map.update({k: 'model-00002-of-00002.safetensors' for k in second})
  (directory / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  config = json.loads((directory / 'config.json').read_text())
  (directory / 'config.json').write_text(json.dumps(dict(config, tie_word_embeddings=False)))
  checkpoint = pretrained.load(directory)
  assert not checkpoint.model['tie_embeddings']
  np.testing.assert_array_equal(checkpoint.params['head']['kernel'], tensors['lm_head.weight'].T)
  (directory / 'model-00002-of-00002.safetensors').unlink()
  with pytest.raises(pretrained.PretrainedError, match='model-00002-of-00002.safetensors is missing'):
    pretrained.load(directory)


def test_bad_checkpoints_are_one_line(tmp_path):
  with pytest.raises(pretrained.PretrainedError, match="holds a 'qwen2' model; only the llama architecture"):
    pretrained.load(write_gguf(tmp_path / 'qwen.gguf', arch='qwen2'))
  shape = load_file(str(FIXTURE / 'model.safetensors'))['model.layers.0.mlp.down_proj.weight'].shape
  odd = write_gguf(tmp_path / 'int.gguf', replace={'blk.0.ffn_down.weight': np.zeros(shape, np.int32)})
  with pytest.raises(pretrained.PretrainedError, match='blk.0.ffn_down.weight is I32, which the gguf package '
                     'cannot dequantise'):
    pretrained.load(odd)
  scaled = write_gguf(tmp_path / 'scaled.gguf', extra={'rope_freqs.weight': np.ones(2, np.float32)})
  with pytest.raises(pretrained.PretrainedError, match='RoPE scaling .* is not supported'):
    pretrained.load(scaled)
  not_gguf = tmp_path / 'x.gguf'
  not_gguf.write_bytes(b'not a gguf file at all')
  with pytest.raises(pretrained.PretrainedError, match='is not a GGUF file'):
    pretrained.load(not_gguf)
  with pytest.raises(pretrained.PretrainedError, match='has no config.json'):
    pretrained.load(tmp_path)


def test_a_tokenizer_the_embeddings_cannot_hold_is_refused(tmp_path):
  checkpoint = pretrained.load(FIXTURE)
  tokenizer = bpe.load_file(FIXTURE)
  pretrained.check_tokenizer(checkpoint, tokenizer, 'tokenizer.json')  # Fits.
  small = pretrained.Checkpoint(checkpoint.model, checkpoint.params, 300, checkpoint.source)
  with pytest.raises(pretrained.PretrainedError, match=r'tokenizer.json has 384 tokens .* hold 300'):
    pretrained.check_tokenizer(small, tokenizer, 'tokenizer.json')


def test_generation_ends_a_row_at_a_stop_sequence():
  checkpoint = pretrained.load(FIXTURE)
  model = models.build(checkpoint.model, vocab_size=checkpoint.vocab_size)
  ids, expected = EXPECTED['ids'][0], EXPECTED['generated'][0]
  prompt = jnp.asarray([ids, ids], jnp.int32)
  out = np.asarray(generate_lib.generate(model, checkpoint.params, prompt, jnp.ones_like(prompt, bool),
                                         max_new_tokens=len(expected), end_id=-1,
                                         stop_sequences=(tuple(expected[2:4]),)))
  assert out[0].tolist() == expected[:4] + [-1] * (len(expected) - 4)  # Kept the stop tokens, then ended.
  first = np.asarray(generate_lib.generate(model, checkpoint.params, prompt, jnp.ones_like(prompt, bool),
                                           max_new_tokens=3, end_id=-1,
                                           stop_sequences=((expected[0],), tuple(expected[:5]))))
  assert first[0].tolist() == [expected[0], -1, -1]  # A one-token stop ends the row at its first token; a stop
  # longer than max_new_tokens is left out.
  from train.tasks.lm import generation  # pylint: disable=g-import-not-at-top
  assert generation.cut_at_stops([5, 6, 7, 8, 9], ((7, 8), (9,))) == [5, 6]
  assert generation.cut_at_stops([5, 6], ((7, 8),)) == [5, 6]


# The fixture as a run of the language-model task (configs/lm.py's pretrained_llama), on a small corpus.
TINY_ARCHITECTURE = dict(width=36, num_layers=2, num_heads=9, num_kv_heads=3, head_dim=4, mlp_hidden=64,
                         norm_eps=1e-5, rope_base=100000.0, tie_embeddings=True)


def tiny_pretrained_args(corpus: pathlib.Path) -> list[str]:
  fields = dict({f'model.{k}': v for k, v in TINY_ARCHITECTURE.items()}, **{
      'train.init_from': FIXTURE, 'data.tokenizer': FIXTURE, 'data.files': corpus, 'data.seq_len': 256,
      'train.batch_size': 4, 'train.steps': 2, 'train.warmup_steps': 0, 'eval.max_rows': 8,
      'generate.max_new_tokens': 6, 'generate.system': 'Be brief.', 'evals.gsm8k.batch_size': 2,
      'evals.gsm8k.max_new_tokens': 8, 'evals.gsm8k.shots': 1, 'evals.gsm8k.train_file': GSM8K_LINES})
  return ['--config=configs/lm.py:smollm2'] + [f'--config.{k}={v}' for k, v in fields.items()]


GSM8K_LINES = FIXTURE.parent / 'gsm8k_three.jsonl'


@pytest.fixture(scope='module')
def corpus(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp('corpus') / 'text.txt'
  rng = np.random.default_rng(0)
  words = 'the model reads a line of text and writes the next word in a list of many words'.split()
  path.write_text('\n'.join(' '.join(rng.choice(words, 20)) + '.' for _ in range(120)) + '\n')
  return path


def test_a_pretrained_run_evaluates_chats_then_trains_from_the_checkpoint(tmp_path, corpus):
  from tests.conftest import REPO_ROOT, launch, launch_env, ok  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  args = tiny_pretrained_args(corpus) + [f'--workdir={tmp_path}']
  out = ok(launch(*args, '--mode=eval', '--config.eval.file_evaluator=gsm8k',
                  f'--config.data.eval_file={GSM8K_LINES}', '--config.evals.gsm8k.format=gsm8k'))
  assert 'has no checkpoint yet: using the pretrained weights' in out
  assert out.strip().splitlines()[-1].startswith('strict_match=0.0000 flexible_extract=')
  lines = [json.loads(l) for l in (tmp_path / 'gsm8k_gsm8k.jsonl').read_text().splitlines()]
  assert [l['target'] for l in lines] == ['18', '3', '70,000']
  assert all(l['prompt'].count('Question: ') == 2 and l['prompt'].endswith('Answer:') for l in lines)
  proc = subprocess.run([sys.executable, 'launch.py', *args, '--mode=interactive'], input='hello\nwhat is 2 + 2?\n',
                        cwd=REPO_ROOT, text=True, capture_output=True, timeout=300, env=launch_env())
  out = ok(proc)
  assert 'llama, pretrained weights. Chat' in out and proc.stdout.count('> ') == 3
  ok(launch(*args, '--config.train.lr=1e-9'))  # Two steps that barely move the weights.
  from train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from train import sharding  # pylint: disable=g-import-not-at-top
  trained, step, _ = ckpt_lib.restore_eval_params(tmp_path, 'latest', sharding.make_mesh())
  assert step == 2
  start = pretrained.load(FIXTURE).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-6), trained, start)
  out = ok(launch(*args, '--config.train.lr=1e-9', '--mode=generate', '--config.generate.prompt=the model'))
  assert 'latest checkpoint (step 2)' in out  # The eval modes now use the run's checkpoint.


def test_pretrained_config_errors_are_one_line(tmp_path, corpus):
  from tests.conftest import launch  # pylint: disable=g-import-not-at-top
  args = tiny_pretrained_args(corpus) + [f'--workdir={tmp_path}']
  proc = launch(*args, '--config.model.num_layers=3')
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].endswith('does not fit the config: model.num_layers=3 (the checkpoint: 2)')
  proc = launch(*args, '--config.data.tokenizer=', f'--workdir={tmp_path / "b"}')
  assert "needs the checkpoint's tokenizer: set data.tokenizer to the same path" in proc.stderr
  other = tmp_path / 'other_tokenizer.json'  # More tokens than the checkpoint's embeddings hold.
  other.write_text(bpe.train([(FIXTURE.parent.parent.parent / 'README.md').read_text()], 600).to_str())
  proc = launch(*args, f'--config.data.tokenizer={other}', f'--workdir={tmp_path / "c"}')
  assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].endswith(
      f"has 600 tokens but the embeddings of {FIXTURE} hold 384: not the checkpoint's tokenizer"), proc.stderr[-2000:]


def test_lora_merge_is_the_adapted_layer_and_only_adapters_train(tmp_path, corpus):
  from models import lora as lora_lib  # pylint: disable=g-import-not-at-top
  base = pretrained.load(FIXTURE).params
  config = lora_lib.LoRAConfig(rank=2, alpha=4.0, targets=('query', 'out', 'down'))
  adapters = lora_lib.init(base, config, jax.random.PRNGKey(0))
  assert set(adapters['block_0']['attention']) == {'query', 'out'} and set(adapters['block_0']['mlp']) == {'down'}
  with pytest.raises(models.ModelConfigError, match='kye names no module with a kernel'):
    lora_lib.init(base, lora_lib.LoRAConfig(2, 4.0, ('query', 'kye')), jax.random.PRNGKey(0))
  adapters = jax.tree.map(lambda x: x + 0.1, adapters)  # b away from its zero start.
  merged = lora_lib.merge(base, adapters, config.scale)
  x = np.random.default_rng(0).normal(size=(5, 9, 4)).astype(np.float32)  # Heads x head width in, as 'out' reads.
  a, b = adapters['block_1']['attention']['out']['a'], adapters['block_1']['attention']['out']['b']
  kernel = base['block_1']['attention']['out']['kernel']
  unmerged = np.einsum('tnk,nkd->td', x, kernel) + config.scale * (x.reshape(5, 36) @ a) @ b
  np.testing.assert_allclose(np.einsum('tnk,nkd->td', x, merged['block_1']['attention']['out']['kernel']), unmerged,
                             atol=1e-5)
  assert merged['block_0']['attention']['key'] is base['block_0']['attention']['key'] or np.array_equal(
      merged['block_0']['attention']['key']['kernel'], base['block_0']['attention']['key']['kernel'])

  from tests.conftest import launch, ok  # pylint: disable=g-import-not-at-top
  args = tiny_pretrained_args(corpus) + [f'--workdir={tmp_path}', '--config.train.lora_rank=4',
                                         '--config.train.lr=1e-2', '--config.train.steps=4']
  ok(launch(*args))
  from train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  checkpoints = ckpt_lib.Checkpoints(tmp_path, read_only=True)
  state, _ = checkpoints.restore(None, which='latest')
  checkpoints.close()
  jax.tree.map(np.testing.assert_array_equal, state['params']['base'], base)  # The base never moved ...
  assert np.abs(state['params']['lora']['block_0']['mlp']['down']['b']).max() > 0  # ... the adapters did,
  moments = [x for x in jax.tree.leaves(state['opt_state']) if np.ndim(x) >= 2]
  assert sum(np.size(m) for m in moments) == 2 * sum(np.size(p) for p in jax.tree.leaves(state['params']['lora']))
  record = json.loads((tmp_path / 'results.json').read_text())
  assert record['trainable_params'] == sum(np.size(p) for p in jax.tree.leaves(state['params']['lora']))
  out = ok(launch(*args, '--mode=export'))
  assert 'wrote' in out and (tmp_path / 'hf' / 'model.safetensors').is_file()
  exported = pretrained.load(tmp_path / 'hf')  # The merged model, read back as any HF directory.
  merged = lora_lib.merge(state['params']['base'], state['params']['lora'], 16.0 / 4)
  ours = _logits(exported, EXPECTED['ids'][:2])
  model = models.build(exported.model, vocab_size=exported.vocab_size)
  expected = np.concatenate([np.asarray(model.apply({'params': merged}, jnp.asarray([x], jnp.int32)))[0]
                             for x in EXPECTED['ids'][:2]])
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  assert np.abs(ours - np.load(FIXTURE / 'expected_logits.npy')[:len(ours)]).max() > 1e-3  # It was fine-tuned.
  assert bpe.load_file(tmp_path / 'hf').encode('Natalia sold 48').ids == bpe.load_file(FIXTURE).encode(
      'Natalia sold 48').ids


def test_an_export_loads_in_transformers_with_the_same_logits(tmp_path, corpus):
  torch = pytest.importorskip('torch')  # The bench extra; skipped in the test install.
  transformers = pytest.importorskip('transformers')
  from tests.conftest import launch, ok  # pylint: disable=g-import-not-at-top
  ok(launch(*tiny_pretrained_args(corpus), f'--workdir={tmp_path}', '--mode=export'))
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf', dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
  ids = tok(EXPECTED['prompts'][1], add_special_tokens=False)['input_ids']
  assert ids == EXPECTED['ids'][1]
  with torch.no_grad():
    theirs = hf(torch.tensor([ids])).logits[0].numpy()
  np.testing.assert_allclose(_logits(pretrained.load(FIXTURE), [ids]), theirs, atol=1e-4)
  chat = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False, add_generation_prompt=True)
  assert chat == '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n'
