"""Parameter counts and analytic FLOPs of every model, from its config (a matmul of m x k by k x n = 2*m*n*k).

Counts every matrix product: projections, attention scores and values (over the whole sequence, as
the models compute them: a causal model masks half of its scores but computes them all), token-
and channel-MLPs, the input projection of the MLP baseline and the output heads. Elementwise work
(norms, activations, softmax) and embedding lookups are left out; they are a few percent at the
sizes studied. Training runs count FLOPs with XLA instead (train/flops.py); this is the estimate
to compare with, and the fallback where a backend reports none. XLA counts the body of a scan once,
not once per iteration, so compare with a program whose scans are unrolled.

A mixture-of-experts decoder (models/moe.py) is counted by its active FLOPs: the router, the k experts
each token is routed to and the shared expert, not all E experts; `flops_proxy` gives the dense model
whose XLA count is those FLOPs.
"""
import dataclasses
from typing import Any

import jax
import numpy as np

from models import registry
from models.decoder import DecoderConfig
from models.moe import MoeConfig, active_proxy
from models.recurrent_blocks import RecurrentConfig
from models.rwkv7 import Rwkv7Config


def count_params(params: Any) -> int:
  """Parameters in a pytree of arrays (or of ShapeDtypeStructs, e.g. from jax.eval_shape)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class FlopEstimate:
  """Forward FLOPs of one sequence, split by phase of an application over depth."""
  encode: int  # Once per forward pass.
  step: int  # One unit of depth (TRM: all T cycles, with or without gradient; a decoder: the whole stack).
  step_grad: int  # The part of `step` that is differentiated (TRM: its last grad_cycles cycles).
  readout: int  # One readout (output head, and the halting head of the recurrent family).

  def forward(self, depth: int = 1, readout_every_step: bool = True) -> int:
    """Forward FLOPs of `depth` steps, read out after each (or only after the last)."""
    readouts = depth if readout_every_step else 1
    return self.encode + depth * self.step + readouts * self.readout

  def train(self, depth: int = 1, readout_every_step: bool = True) -> int:
    """Forward + backward (~2x the forward FLOPs of the differentiated part)."""
    readouts = depth if readout_every_step else 1
    grad_part = self.encode + depth * self.step_grad + readouts * self.readout
    return self.forward(depth, readout_every_step) + 2 * grad_part


def _mlp(rows: int, width: int, hidden: int, act: str, out: int | None = None) -> int:
  """An MLP on `rows` vectors of `width` features."""
  out = width if out is None else out
  up = 2 * hidden if act == 'swiglu' else hidden
  return 2 * rows * width * up + 2 * rows * hidden * out


def _attention(rows: int, width: int, heads: int, kv_heads: int, head_dim: int, keys: int) -> int:
  """Projections, scores and values of `rows` queries over `keys` keys."""
  projections = 2 * rows * width * (heads + 2 * kv_heads) * head_dim + 2 * rows * heads * head_dim * width
  return projections + 2 * 2 * rows * keys * heads * head_dim


def recurrent_block_flops(config: RecurrentConfig, length: int) -> int:
  """One block of the recurrent family on a sequence of `length` tokens."""
  dim = config.width
  if config.mixer == 'attention':
    mixer = _attention(length, dim, config.num_heads, config.num_heads, dim // config.num_heads, length)
  else:
    mixer = _mlp(dim, length, config.mlp_width(config.mlp_act, width=length), config.mlp_act)
  return mixer + _mlp(length, dim, config.mlp_width(config.mlp_act), config.mlp_act)


def _recurrent(config: RecurrentConfig, dims: registry.Dims, out_len: int) -> FlopEstimate:
  seq_len, classes = dims.seq_len, dims.classes
  if config.name == 'mlp':
    width = config.mlp_state_dim
    step = config.num_layers * _mlp(1, width, config.mlp_width(config.mlp_act, width=width), config.mlp_act)
    return FlopEstimate(encode=2 * seq_len * dims.vocab_size * width, step=step, step_grad=step,
                        readout=2 * width * seq_len * classes + 2 * width)
  dim = config.width
  head = 2 * out_len * dim * classes + 2 * dim
  if config.name == 'bert':
    step = config.num_layers * recurrent_block_flops(config, seq_len)
    if config.tie_embeddings:
      head += 2 * out_len * dim * dim
    return FlopEstimate(encode=0, step=step, step_grad=step, readout=head)
  net = config.num_layers * recurrent_block_flops(config, seq_len + config.prefix_len)
  cycle = (config.inner_steps + 1) * net
  return FlopEstimate(encode=0, step=config.cycles * cycle, step_grad=config.grad_cycles * cycle, readout=head)


def _decoder(config: DecoderConfig, dims: registry.Dims, out_len: int) -> FlopEstimate:
  length, dim = dims.seq_len, config.width
  if isinstance(config, MoeConfig):  # Active: the router, k routed experts and the shared one per token.
    hidden = config.expert_width
    mlp = (2 * length * dim * config.num_experts + config.top_k * _mlp(length, dim, hidden, 'swiglu')
           + (_mlp(length, dim, hidden, 'swiglu') if config.shared_expert else 0))
  else:
    mlp = _mlp(length, dim, config.mlp_width('swiglu'), 'swiglu')
  block = _attention(length, dim, config.num_heads, config.kv_heads, config.head_width, length) + mlp
  if config.looped:
    application = config.recurrent_layers * block + (2 * length * dim * dim if config.injection == 'concat' else 0)
    stack = ((config.prelude_layers + config.coda_layers) * block + 2 * length * dim * dim
             + config.loops * application)
  else:
    stack = config.num_layers * block
  return FlopEstimate(encode=0, step=stack, step_grad=stack, readout=2 * out_len * dim * dims.classes)


def _rwkv7(config: Rwkv7Config, dims: registry.Dims, out_len: int) -> FlopEstimate:
  """The projections, low-rank projections and channel mix per token, and the chunked WKV's matrix products
  (models/rwkv7.py wkv_chunked) per chunk and head."""
  length, dim, size = dims.seq_len, config.width, config.head
  chunk = min(config.chunk_len, length)
  chunks = -(-length // chunk)
  loras = sum(config.lora(k) for k in ('decay_lora', 'iclr_lora', 'gate_lora'))
  per_token = 2 * 4 * dim * dim + 2 * 2 * dim * loras + 2 * dim * config.mlp_width('relu2') * 2
  value_gate = 2 * 2 * dim * config.lora('value_lora')  # Every layer but the first.
  if config.wkv == 'scan':  # Token by token: the removal read-out and the output, N x N each.
    wkv = length * config.heads * 4 * size * size
  else:  # Products within a chunk, the inverse by halves (~2/3 C^3), its end state, the scan.
    wkv = chunks * config.heads * (20 * chunk * chunk * size + 2 * chunk ** 3 // 3
                                   + 6 * chunk * size * size + 2 * size ** 3 + 2 * chunk * size * size)
  stack = config.num_layers * (length * per_token + wkv) + (config.num_layers - 1) * length * value_gate
  return FlopEstimate(encode=0, step=stack, step_grad=stack, readout=2 * out_len * dim * dims.classes)


def estimate(cfg: Any, *, vocab_size: int, seq_len: int, num_classes: int | None = None,
             readout_positions: int | None = None) -> FlopEstimate:
  """FLOPs of one sequence of `seq_len` tokens through the model `cfg` describes (a model section or config).

  `readout_positions` counts the output head on that many positions (MLM reads out only the masked
  ones) instead of all `seq_len`.
  """
  config = registry.config_of(cfg)
  dims = registry.Dims(vocab_size, num_classes, seq_len)
  out_len = seq_len if readout_positions is None else readout_positions
  if isinstance(config, RecurrentConfig):
    return _recurrent(config, dims, out_len)
  if isinstance(config, DecoderConfig):
    return _decoder(config, dims, out_len)
  if isinstance(config, Rwkv7Config):
    return _rwkv7(config, dims, out_len)
  raise ValueError(f'models.flops: no FLOP count for {type(config).__name__}')


def flops_proxy(model: Any) -> Any:
  """The model whose XLA-counted train step is `model`'s FLOP budget: without rematerialisation (the recomputed
  forward is not counted, so a budget buys the same steps with or without it), and for a mixture of experts a
  dense decoder doing its active work (models/moe.py `active_proxy`); else `model` itself."""
  config = getattr(model, 'config', None)
  if getattr(config, 'remat', 'none') != 'none':
    model = model.clone(config=dataclasses.replace(config, remat='none'))
  if isinstance(getattr(model, 'config', None), MoeConfig):
    return active_proxy(model)
  return model


def forward_flops_per_token(cfg: Any, *, vocab_size: int, seq_len: int, num_classes: int | None = None) -> float:
  """Forward FLOPs per token at sequence length `seq_len`: every model applied at its trained depth."""
  config = registry.config_of(cfg)
  depth = config.depth if isinstance(config, RecurrentConfig) else 1
  flops = estimate(config, vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes).forward(depth)
  return flops / seq_len
