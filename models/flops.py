"""Analytic FLOP estimate of the models, per example (matmul of m x k by k x n = 2*m*n*k).

Counts every matrix product: attention projections, scores and values, token-
and channel-MLPs, the input projection of the MLP baseline and the output
heads. Elementwise work (norms, activations, softmax) and embedding lookups
are left out; they are a few percent at the sizes studied. Compare with XLA's
`jit(f).lower(...).compile().cost_analysis()['flops']` (which counts the body
of a while loop, i.e. a scan, once per call and not once per iteration).
"""
import dataclasses
from typing import Any

from models.layers import ArchConfig
from models.layers import mlp_hidden_dim


@dataclasses.dataclass(frozen=True)
class FlopEstimate:
  """Forward FLOPs per example, split by phase of the unroll."""
  encode: int  # Once per unroll.
  step: int  # One unit of depth (for TRM all T cycles, with or without gradient).
  step_grad: int  # The part of `step` that is differentiated (TRM: its last grad_cycles cycles).
  readout: int  # One readout (head + halting head).

  def forward(self, depth: int, readout_every_step: bool = True) -> int:
    """Forward FLOPs of `unroll(..., depth)`."""
    readouts = depth if readout_every_step else 1
    return self.encode + depth * self.step + readouts * self.readout

  def train(self, depth: int, readout_every_step: bool = True) -> int:
    """Forward + backward (~2x the forward FLOPs of the differentiated part)."""
    readouts = depth if readout_every_step else 1
    grad_part = self.encode + depth * self.step_grad + readouts * self.readout
    return self.forward(depth, readout_every_step) + 2 * grad_part


def _mlp(rows: int, width: int, hidden: int, act: str, out: int | None = None) -> int:
  """An MLP on `rows` vectors of `width` features."""
  out = width if out is None else out
  up = 2 * hidden if act == 'swiglu' else hidden
  return 2 * rows * width * up + 2 * rows * hidden * out


def block_flops(arch: ArchConfig, length: int) -> int:
  """One `layers.Block` on a sequence of `length` tokens."""
  dim = arch.hidden
  if arch.mixer == 'attention':
    mixer = 2 * length * dim * 3 * dim + 2 * 2 * length * length * dim + 2 * length * dim * dim
  else:
    hidden = mlp_hidden_dim(length, arch.mlp_ratio, arch.mlp_act, arch.mlp_multiple_of)
    mixer = _mlp(dim, length, hidden, arch.mlp_act)
  hidden = mlp_hidden_dim(dim, arch.mlp_ratio, arch.mlp_act, arch.mlp_multiple_of)
  return mixer + _mlp(length, dim, hidden, arch.mlp_act)


def estimate(cfg: Any, *, vocab_size: int, num_classes: int, seq_len: int,
             readout_positions: int | None = None, task_keys: tuple[str, ...] = ()) -> FlopEstimate:
  """FLOPs per example of the model `cfg` describes (a model ConfigDict or ArchConfig).

  `readout_positions` counts the head on that many positions (MLM reads out
  only the masked ones) instead of all `seq_len`. `task_keys` as in models.get_model.
  """
  arch = ArchConfig.from_config(cfg, allowed_extra=task_keys)
  out_len = seq_len if readout_positions is None else readout_positions
  if arch.name == 'mlp':
    width = arch.mlp_state_dim
    hidden = mlp_hidden_dim(width, arch.mlp_ratio, arch.mlp_act, arch.mlp_multiple_of)
    step = arch.num_layers * _mlp(1, width, hidden, arch.mlp_act)
    return FlopEstimate(encode=2 * seq_len * vocab_size * width, step=step, step_grad=step,
                        readout=2 * width * seq_len * num_classes + 2 * width)
  dim = arch.hidden
  head = 2 * out_len * dim * num_classes + 2 * dim
  if arch.name == 'bert':
    step = arch.num_layers * block_flops(arch, seq_len)
    if arch.tie_embeddings:
      head += 2 * out_len * dim * dim
    return FlopEstimate(encode=0, step=step, step_grad=step, readout=head)
  if arch.name == 'trm':
    net = arch.num_layers * block_flops(arch, seq_len + arch.prefix_len)
    cycle = (arch.inner_steps + 1) * net
    return FlopEstimate(encode=0, step=arch.cycles * cycle, step_grad=arch.grad_cycles * cycle, readout=head)
  raise ValueError(f'flops: unknown model.name={arch.name!r}')
