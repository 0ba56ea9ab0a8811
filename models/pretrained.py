r"""Pretrained Llama-architecture checkpoints in our decoder: a GGUF file (llama.cpp) or an HF directory.

  checkpoint = pretrained.load('~/.cache/reason-small/SmolLM2-135M-Instruct.Q4_1.gguf')
  model = models.build(checkpoint.model, vocab_size=checkpoint.vocab_size)   # DecoderConfig fields
  logits = model.apply({'params': checkpoint.params}, tokens)

GGUF: the `llama.*` metadata gives the architecture; every tensor is dequantised to float32 with the `gguf`
package (F32, F16, BF16, Q8_0, Q4_0, Q4_1, ... as it supports); llama.cpp's converter permutes the rows of Q and K
within each head for its RoPE layout (the first and second halves of a head interleaved), which is undone here.
HF directory: `config.json` (LlamaForCausalLM), `model.safetensors` or its shards by `model.safetensors.index.json`.
Our decoder's blocks are HF Llama's (pre-norm RMSNorm, RoPE rotating the two halves of a head, GQA, SwiGLU); the
parameter names map one to one.

`python -m data.fetch smollm2` puts SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) in the cache and prints where.
"""
import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from models.errors import ModelConfigError
from models.errors import PretrainedError



@dataclasses.dataclass
class Checkpoint:
  model: dict[str, Any]  # Fields of a DecoderConfig (config.model), the architecture the weights need.
  params: dict[str, Any]  # Our decoder's parameter tree (float32 NumPy arrays).
  vocab_size: int
  source: str
  context: int | None = None  # The longest sequence it was trained for (max_position_embeddings).
  chat_template: str | None = None  # Its chat template (Jinja), as the checkpoint carries it.


def _decoder_fields(*, width: int, layers: int, heads: int, kv_heads: int, head_dim: int, mlp: int, eps: float,
                    rope_base: float, tied: bool) -> dict[str, Any]:
  return dict(name='llama', width=width, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
              head_dim=head_dim, mlp_hidden=mlp, norm_eps=eps, rope_base=rope_base, tie_embeddings=tied,
              position='rope')


def _params(tensors: dict[str, np.ndarray], fields: dict[str, Any], where: str) -> dict[str, Any]:
  """Our parameter tree from HF Llama's tensor names (weights [out, in], as HF keeps them)."""
  d, n, g, k = fields['width'], fields['num_heads'], fields['num_kv_heads'], fields['head_dim']

  def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in tensors:
      raise PretrainedError(f'{where}: no tensor {name!r}')
    value = np.asarray(tensors[name], np.float32)
    if value.shape != shape:
      raise PretrainedError(f'{where}: {name} has shape {value.shape}, the architecture needs {shape}')
    return value

  h = fields['mlp_hidden']
  params = {'embed': {'embedding': take('model.embed_tokens.weight', (fields['vocab_size'], d))},
            'final_norm': {'scale': take('model.norm.weight', (d,))}}
  for i in range(fields['num_layers']):
    p = f'model.layers.{i}.'
    params[f'block_{i}'] = {
        'norm_attention': {'scale': take(p + 'input_layernorm.weight', (d,))},
        'norm_mlp': {'scale': take(p + 'post_attention_layernorm.weight', (d,))},
        'attention': {
            'query': {'kernel': take(p + 'self_attn.q_proj.weight', (n * k, d)).T.reshape(d, n, k)},
            'key': {'kernel': take(p + 'self_attn.k_proj.weight', (g * k, d)).T.reshape(d, g, k)},
            'value': {'kernel': take(p + 'self_attn.v_proj.weight', (g * k, d)).T.reshape(d, g, k)},
            'out': {'kernel': take(p + 'self_attn.o_proj.weight', (d, n * k)).T.reshape(n, k, d)}},
        'mlp': {'gate_up': {'kernel': np.concatenate([take(p + 'mlp.gate_proj.weight', (h, d)).T,
                                                      take(p + 'mlp.up_proj.weight', (h, d)).T], axis=1)},
                'down': {'kernel': take(p + 'mlp.down_proj.weight', (d, h)).T}}}
  if not fields['tie_embeddings']:
    params['head'] = {'kernel': take('lm_head.weight', (fields['vocab_size'], d)).T}
  return params


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp's Q/K row order back to HF's: per head, its rows interleave the two halves of the head."""
  return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {'token_embd.weight': 'model.embed_tokens.weight', 'output_norm.weight': 'model.norm.weight',
               'output.weight': 'lm_head.weight'}
_GGUF_BLOCK = {'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm', 'attn_q': 'self_attn.q_proj',
               'attn_k': 'self_attn.k_proj', 'attn_v': 'self_attn.v_proj', 'attn_output': 'self_attn.o_proj',
               'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj', 'ffn_down': 'mlp.down_proj'}


def gguf_metadata(reader: Any) -> dict[str, Any]:
  """Scalar and string metadata of a GGUF file (arrays left out), by key."""
  import gguf  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  out = {}
  for key, field in reader.fields.items():
    if not field.types or not field.data:
      continue
    kind = field.types[0]
    if kind == gguf.GGUFValueType.STRING:
      out[key] = bytes(field.parts[field.data[0]]).decode('utf-8')
    elif kind != gguf.GGUFValueType.ARRAY:
      out[key] = field.parts[field.data[0]].tolist()[0]
  return out


def _float32(value: float) -> float:
  """A float GGUF stores in 32 bits, as the shortest decimal that reads back to it (1e-05, not 9.99999975e-06)."""
  return float(str(np.float32(value)))


def load_gguf(path: str | pathlib.Path) -> Checkpoint:
  import gguf  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise PretrainedError(f'{path} is not a file')
  try:
    reader = gguf.GGUFReader(str(path))
  except (ValueError, OSError) as e:
    raise PretrainedError(f'{path} is not a GGUF file ({e})') from None
  meta = gguf_metadata(reader)
  arch = meta.get('general.architecture')
  if arch != 'llama':
    raise PretrainedError(f'{path} holds a {arch!r} model; only the llama architecture loads into our decoder')
  missing = [k for k in ('llama.attention.head_count', 'llama.embedding_length', 'llama.block_count',
                         'llama.feed_forward_length', 'llama.attention.layer_norm_rms_epsilon') if k not in meta]
  if missing:
    raise PretrainedError(f'{path}: no {", ".join(missing)} in its metadata (not a complete llama GGUF)')
  scaling = meta.get('llama.rope.scaling.type', 'none')
  if scaling not in ('none', None) or any(t.name == 'rope_freqs.weight' for t in reader.tensors):
    raise PretrainedError(f'{path}: RoPE scaling ({scaling}, or a rope_freqs tensor) is not supported (plain RoPE '
                          'only)')
  heads, kv_heads = int(meta['llama.attention.head_count']), int(meta.get('llama.attention.head_count_kv',
                                                                          meta['llama.attention.head_count']))
  width = int(meta['llama.embedding_length'])
  head_dim = int(meta.get('llama.attention.key_length') or width // heads)
  if int(meta.get('llama.rope.dimension_count') or head_dim) != head_dim:
    raise PretrainedError(f'{path}: RoPE on {meta["llama.rope.dimension_count"]} of {head_dim} head dimensions is '
                          'not supported (ours rotates the whole head)')
  tensors = {}
  for tensor in reader.tensors:
    try:
      value = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
      raise PretrainedError(f'{path}: tensor {tensor.name} is {tensor.tensor_type.name}, which the gguf package '
                            'cannot dequantise') from None
    value = np.asarray(value, np.float32).reshape([int(x) for x in reversed(tensor.shape)])
    name = tensor.name
    if name.startswith('blk.'):
      _, layer, kind, suffix = name.split('.', 3)
      if kind == 'attn_q':
        value = _unpermute(value, heads)
      elif kind == 'attn_k':
        value = _unpermute(value, kv_heads)
      if kind not in _GGUF_BLOCK:
        continue  # rope_freqs and other tensors our decoder has no use for.
      tensors[f'model.layers.{layer}.{_GGUF_BLOCK[kind]}.{suffix}'] = value
    elif name in _GGUF_NAMES:
      tensors[_GGUF_NAMES[name]] = value
  vocab = int(meta.get('llama.vocab_size') or tensors['model.embed_tokens.weight'].shape[0])
  fields = _decoder_fields(width=width, layers=int(meta['llama.block_count']), heads=heads, kv_heads=kv_heads,
                           head_dim=head_dim,
                           mlp=int(meta['llama.feed_forward_length']),
                           eps=_float32(meta['llama.attention.layer_norm_rms_epsilon']),
                           rope_base=_float32(meta.get('llama.rope.freq_base', 10000.0)),
                           tied='lm_head.weight' not in tensors)
  params = _params(tensors, dict(fields, vocab_size=vocab), str(path))
  return Checkpoint(fields, params, vocab, str(path), meta.get('llama.context_length'),
                    meta.get('tokenizer.chat_template'))


def load_hf(directory: str | pathlib.Path) -> Checkpoint:
  import ml_dtypes  # pylint: disable=g-import-not-at-top,import-outside-toplevel,unused-import  # NumPy's bfloat16
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  directory = pathlib.Path(directory).expanduser()
  config_path = directory / 'config.json'
  if not config_path.is_file():
    raise PretrainedError(f'{directory} has no config.json (an HF checkpoint directory has one)')
  try:
    config = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise PretrainedError(f'{config_path} is not JSON ({e})') from None
  missing = [k for k in ('num_attention_heads', 'hidden_size', 'num_hidden_layers', 'intermediate_size',
                         'vocab_size') if k not in config]
  if missing:
    raise PretrainedError(f'{config_path}: no {", ".join(missing)} (not a LlamaForCausalLM config)')
  if 'llama' not in str(config.get('model_type', '')).lower() and 'Llama' not in str(config.get('architectures')):
    raise PretrainedError(f'{config_path}: model_type {config.get("model_type")!r} is not a Llama model')
  rope = dict(config.get('rope_parameters') or {})  # transformers 5 writes rope_parameters; 4, rope_theta.
  scaling = config.get('rope_scaling') or ({} if rope.get('rope_type', 'default') == 'default' else rope)
  if scaling:
    raise PretrainedError(f'{config_path}: RoPE scaling {scaling} is not supported (plain RoPE only)')
  for key, plain in (('attention_bias', False), ('mlp_bias', False), ('hidden_act', 'silu')):
    if config.get(key, plain) != plain:
      raise PretrainedError(f'{config_path}: {key}={config[key]!r}; our decoder is Llama with {key}={plain!r}')
  index = directory / 'model.safetensors.index.json'
  files = (sorted(set(json.loads(index.read_text())['weight_map'].values())) if index.is_file()
           else ['model.safetensors'])
  tensors = {}
  for name in files:
    if not (directory / name).is_file():
      raise PretrainedError(f'{directory}: the shard {name} is missing')
    try:
      tensors.update(load_file(str(directory / name)))
    except Exception as e:  # pylint: disable=broad-except  # safetensors raises its own error types.
      raise PretrainedError(f'{directory / name} cannot be read as safetensors ({e})') from None
  heads = int(config['num_attention_heads'])
  width = int(config['hidden_size'])
  fields = _decoder_fields(width=width, layers=int(config['num_hidden_layers']), heads=heads,
                           kv_heads=int(config.get('num_key_value_heads') or heads),
                           head_dim=int(config.get('head_dim') or width // heads),
                           mlp=int(config['intermediate_size']), eps=float(config.get('rms_norm_eps', 1e-6)),
                           rope_base=float(rope.get('rope_theta') or config.get('rope_theta') or 10000.0),
                           tied=bool(config.get('tie_word_embeddings', False)))
  vocab = int(config['vocab_size'])
  params = _params(tensors, dict(fields, vocab_size=vocab), str(directory))
  return Checkpoint(fields, params, vocab, str(directory), config.get('max_position_embeddings'),
                    _hf_chat_template(directory))


def _hf_chat_template(directory: pathlib.Path) -> str | None:
  """The chat template of an HF directory: chat_template.jinja (transformers 5) or tokenizer_config.json's."""
  if (directory / 'chat_template.jinja').is_file():
    return (directory / 'chat_template.jinja').read_text(encoding='utf-8')
  config = directory / 'tokenizer_config.json'
  return json.loads(config.read_text()).get('chat_template') if config.is_file() else None


def load(path: str | pathlib.Path) -> Checkpoint:
  """A GGUF file or an HF directory (module docstring)."""
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    return load_hf(path)
  if path.suffix == '.gguf' or path.is_file():
    return load_gguf(path)
  raise PretrainedError(f'{path} is neither a GGUF file nor an HF checkpoint directory')


def check_model(checkpoint: Checkpoint, model_cfg: Any) -> None:
  """The config's model section must be the checkpoint's architecture (ModelConfigError naming the fields)."""
  differs = [f'model.{k}={model_cfg[k]!r} (the checkpoint: {v!r})' for k, v in checkpoint.model.items()
             if k in model_cfg and model_cfg[k] != v]
  if differs:
    raise ModelConfigError(f'{checkpoint.source} does not fit the config: {", ".join(differs)}')


def check_tokenizer(checkpoint: Checkpoint, tokenizer: Any, where: str) -> None:
  """A tokenizer whose ids the checkpoint's embeddings cannot hold is refused (it may have fewer: padded vocabularies)."""
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if size > checkpoint.vocab_size:
    raise PretrainedError(f'{where} has {size} tokens but the embeddings of {checkpoint.source} hold '
                          f'{checkpoint.vocab_size}: not the checkpoint\'s tokenizer')


def hf_tensors(params: dict[str, Any], fields: dict[str, Any]) -> dict[str, np.ndarray]:
  """Our decoder's parameter tree as HF Llama's tensors (the inverse of loading): weights [out, in], float32."""
  d, layers = int(fields['width']), int(fields['num_layers'])
  c = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # pylint: disable=unnecessary-lambda-assignment
  out = {'model.embed_tokens.weight': c(params['embed']['embedding']), 'model.norm.weight': c(params['final_norm']['scale'])}
  for i in range(layers):
    block, p = params[f'block_{i}'], f'model.layers.{i}.'
    attention, mlp = block['attention'], block['mlp']
    gate, up = np.split(np.asarray(mlp['gate_up']['kernel']), 2, axis=1)
    out.update({
        p + 'input_layernorm.weight': c(block['norm_attention']['scale']),
        p + 'post_attention_layernorm.weight': c(block['norm_mlp']['scale']),
        p + 'self_attn.q_proj.weight': c(np.asarray(attention['query']['kernel']).reshape(d, -1).T),
        p + 'self_attn.k_proj.weight': c(np.asarray(attention['key']['kernel']).reshape(d, -1).T),
        p + 'self_attn.v_proj.weight': c(np.asarray(attention['value']['kernel']).reshape(d, -1).T),
        p + 'self_attn.o_proj.weight': c(np.asarray(attention['out']['kernel']).reshape(-1, d).T),
        p + 'mlp.gate_proj.weight': c(gate.T), p + 'mlp.up_proj.weight': c(up.T),
        p + 'mlp.down_proj.weight': c(np.asarray(mlp['down']['kernel']).T)})
  if 'head' in params:
    out['lm_head.weight'] = c(np.asarray(params['head']['kernel']).T)
  return out


def save_hf(directory: str | pathlib.Path, params: dict[str, Any], model_cfg: Any, vocab_size: int, context: int,
            special_ids: dict[str, int] | None = None) -> pathlib.Path:
  """Writes config.json (LlamaForCausalLM) and model.safetensors of a stacked decoder: an HF directory that
  transformers (and load_hf) reads. The tokenizer files are the caller's (data/bpe.py)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  fields = {k: model_cfg[k] for k in ('name', 'width', 'num_layers', 'num_heads', 'num_kv_heads', 'head_dim',
                                      'mlp_hidden', 'norm_eps', 'rope_base', 'tie_embeddings', 'position')}
  if fields['name'] != 'llama' or fields['position'] != 'rope':
    raise ModelConfigError(f"an HF Llama directory holds a stacked decoder with RoPE (model.name='llama', "
                           f"model.position='rope'), not model.name={fields['name']!r}, position={fields['position']!r}")
  heads, width = int(fields['num_heads']), int(fields['width'])
  head_dim = int(fields['head_dim']) or width // heads
  mlp = int(np.asarray(params['block_0']['mlp']['down']['kernel']).shape[0])
  config = dict(architectures=['LlamaForCausalLM'], model_type='llama', hidden_size=width,
                num_hidden_layers=int(fields['num_layers']), num_attention_heads=heads,
                num_key_value_heads=int(fields['num_kv_heads']) or heads, head_dim=head_dim, intermediate_size=mlp,
                rms_norm_eps=float(fields['norm_eps']), rope_theta=float(fields['rope_base']), hidden_act='silu',
                tie_word_embeddings=bool(fields['tie_embeddings']), vocab_size=int(vocab_size),
                max_position_embeddings=int(context), attention_bias=False, mlp_bias=False, torch_dtype='float32',
                **(special_ids or {}))
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  fields['mlp_hidden'] = mlp
  save_file(hf_tensors(params, fields), str(directory / 'model.safetensors'), metadata={'format': 'pt'})
  (directory / 'config.json').write_text(json.dumps(config, indent=1))
  return directory
