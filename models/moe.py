"""Mixture-of-experts decoder (`model.name='moe'`): the stacked Llama decoder with every block's SwiGLU
replaced by `num_experts` routed SwiGLU experts (and optionally one always-on shared expert).

Routing (per token, on the block's normed input): float32 logits of a Dense(E) router, the top_k of them,
and a softmax over those k logits: the weights of the chosen experts (they sum to 1).

Dispatch (no token is dropped by default): tokens are flattened to T x D and each repeated k times; the
T*k assignments are sorted by expert (a stable argsort), gathered, and each expert's SwiGLU runs on its own
contiguous group: a grouped matmul of the sorted rows with the expert weights [E, D, 2H] and [E, H, D].
The results are un-sorted, weighted by the router weights and summed over the k choices. The grouped
matmul (`grouped_matmul`) is `jax.lax.ragged_dot` on GPU/TPU; on CPU, JAX 0.10 lowers ragged_dot to a
dense masked product (every expert on every assignment: E times the FLOPs and an [E, T*k, D] operand,
8x slower than the active work at E=8), so there the groups are padded to blocks of rows and each block is
multiplied by its expert's weights ('blocks': only the assigned rows plus at most E blocks of padding).
`model.grouped_matmul` picks one ('auto': by backend).

Capacity (capacity_factor > 0): an expert takes at most ceil(capacity_factor * T * k / E) assignments, in
the sorted order (by token position within the call); the rest get weight 0 and are counted as dropped
(they are still computed: the shapes are static). T is the tokens of one call (the global batch under
jit), so a capacity model's prefill and decode route as the full forward only without capacity.

Auxiliary terms (models/aux.py), sown by every block: losses 'load_balance' (Switch Transformer,
load_balance_weight * E * sum_e f_e P_e, with f_e the fraction of the T*k assignments routed to expert e
and P_e the router's mean softmax probability of e; 1 x weight at a uniform router) and 'router_z'
(ST-MoE, router_z_weight * mean_t logsumexp(logits_t)^2); statistics 'expert_load_min' and
'expert_load_max' (min and max over experts of f_e; 1/E when balanced) and 'dropped_fraction'.

FLOPs: a run's budget counts the active FLOPs of a token, what it actually computes: the router
(2 D E per token and block), its k experts' SwiGLU (k x 6 D H), the shared expert's (6 D H), attention
and the head, forward and backward. models/flops.py has the analytic count (`estimate`), and
`active_proxy` gives a dense decoder whose block MLP is one SwiGLU of width k H (+ H shared) behind the
same router, whose train step XLA counts as those active FLOPs (train/run.py counts the proxy; the
parameter count comes from the MoE model itself). XLA's count of the MoE step itself would misstate
them: ragged_dot's CPU lowering counts every expert on every assignment, and the sort and gathers add.

Sharding: the expert weights carry no Flax partitioning boxes (the training loop and the checkpoints hold
plain arrays); their logical axes are EXPERT_PARAM_AXES ('expert' first), and `expert_partition_specs`
gives the PartitionSpecs of a parameter tree for a mesh with an 'expert' axis.
"""
import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from models import aux as aux_lib
from models import layers
from models import registry
from models.decoder import Decoder, DecoderConfig
from models.errors import ModelConfigError

EXPERT_AXIS = 'expert'
# Logical axes of the expert weight tensors, by parameter name (the leaves of a MoeMlp).
EXPERT_PARAM_AXES = {'expert_gate_up': (EXPERT_AXIS, None, None), 'expert_down': (EXPERT_AXIS, None, None)}
GROUPED_MATMULS = ('auto', 'ragged', 'blocks')


@dataclasses.dataclass(frozen=True)
class MoeConfig(DecoderConfig):
  """A stacked decoder whose every block's SwiGLU is `num_experts` routed experts (see the module docstring)."""
  names: ClassVar[tuple[str, ...]] = ('moe',)
  name: str = 'moe'
  num_experts: int = 8  # E: routed SwiGLU experts per block.
  top_k: int = 2  # k: experts each token is routed to (weights: softmax over the k chosen logits).
  shared_expert: bool = False  # One always-on SwiGLU expert (width expert_hidden) beside the routed ones.
  expert_hidden: int = 0  # H: hidden width of one expert; 0 = the dense model's SwiGLU width, mlp_width('swiglu').
  # 0.0: no dropping (every token reaches its k experts); > 0: an expert takes at most
  # ceil(capacity_factor * tokens * k / E) assignments, the rest are dropped (weight 0) and counted.
  capacity_factor: float = 0.0
  load_balance_weight: float = 0.01  # Switch Transformer's loss E * sum_e f_e * P_e, times this.
  router_z_weight: float = 1e-3  # ST-MoE's z-loss mean(logsumexp(router logits)^2), times this.
  # The grouped expert matmul: 'ragged' (jax.lax.ragged_dot), 'blocks' (rows padded to blocks per expert),
  # 'auto' (blocks on CPU, where ragged_dot computes every expert on every row; ragged elsewhere).
  grouped_matmul: str = 'auto'

  def __post_init__(self):
    super().__post_init__()
    for key in ('num_experts', 'top_k'):
      if getattr(self, key) < 1:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be an int >= 1')
    if self.top_k > self.num_experts:
      raise ModelConfigError(f'model.top_k={self.top_k} is larger than model.num_experts={self.num_experts}')
    for key in ('expert_hidden', 'capacity_factor', 'load_balance_weight', 'router_z_weight'):
      if getattr(self, key) < 0:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be >= 0')
    if self.grouped_matmul not in GROUPED_MATMULS:
      raise ModelConfigError(f'model.grouped_matmul={self.grouped_matmul!r} is not one of {list(GROUPED_MATMULS)}')

  @property
  def expert_width(self) -> int:
    """H: the hidden width of one expert."""
    return self.expert_hidden or self.mlp_width('swiglu')

  def channel_mlp(self, name: str) -> nn.Module:
    return MoeMlp(self, name=name)


@dataclasses.dataclass(frozen=True)
class ActiveProxyConfig(MoeConfig):
  """A MoE config whose blocks run the active work densely (`ActiveMlp`): for counting FLOPs only."""

  def channel_mlp(self, name: str) -> nn.Module:
    return ActiveMlp(self, name=name)


def _per_expert(init: layers.Initializer) -> layers.Initializer:
  """`init` of a [E, ...] tensor as E independent draws of one expert's matrix (its own fan-in)."""
  def expert_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.vmap(lambda k: init(k, shape[1:], dtype))(jax.random.split(key, shape[0]))
  return expert_init


def route(logits_TxE: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array]:
  """(weights float32[T, k] summing to 1 per token, experts int32[T, k]): the top-k logits, softmaxed."""
  top_TxK, expert_TxK = jax.lax.top_k(logits_TxE, top_k)
  return jax.nn.softmax(top_TxK, axis=-1), expert_TxK.astype(jnp.int32)


def _block_rows(rows: int, experts: int) -> int:
  """Rows of one block of the 'blocks' grouped matmul: a power of two in [8, 256], about rows / (4 E), so
  that the padding (< E blocks) stays within about a quarter of the rows."""
  target = max(rows // (4 * experts), 1)
  return int(min(256, max(8, 2 ** (target.bit_length() - 1))))


def grouped_matmul(x_NxD: jax.Array, w_ExDxH: jax.Array, group_E: jax.Array, impl: str = 'auto') -> jax.Array:
  """Rows of x sorted by group (group_E[e] consecutive rows for group e) times their group's matrix: [N, H].

  'ragged': jax.lax.ragged_dot. 'blocks': each group padded to a multiple of B rows, each block of B rows
  times its group's matrix (a batched matmul of the gathered matrices): the assigned rows and at most E - 1
  blocks of padding are computed. 'auto': 'blocks' on CPU, 'ragged' elsewhere.
  """
  if impl == 'auto':
    impl = 'blocks' if jax.default_backend() == 'cpu' else 'ragged'
  if impl == 'ragged':
    return jax.lax.ragged_dot(x_NxD, w_ExDxH, group_E)
  rows, experts = x_NxD.shape[0], w_ExDxH.shape[0]
  block = _block_rows(rows, experts)
  num_blocks = -(-rows // block) + experts - 1  # Static bound on sum_e ceil(group_e / B).
  start_E = jnp.cumsum(group_E) - group_E
  padded_E = -(-group_E // block) * block
  padded_end_E = jnp.cumsum(padded_E)
  padded_start_E = padded_end_E - padded_E
  expert_N = jnp.searchsorted(jnp.cumsum(group_E), jnp.arange(rows), side='right')
  expert_N = jnp.minimum(expert_N, experts - 1)
  slot_N = padded_start_E[expert_N] + jnp.arange(rows) - start_E[expert_N]  # Row of each x row, padded.
  padded_PxD = jnp.zeros((num_blocks * block, x_NxD.shape[1]), x_NxD.dtype).at[slot_N].set(
      x_NxD, unique_indices=True)
  block_expert_M = jnp.searchsorted(padded_end_E, jnp.arange(num_blocks) * block, side='right')
  block_expert_M = jnp.minimum(block_expert_M, experts - 1)  # Blocks past the last group hold zeros.
  out_MxBxH = jnp.einsum('mbd,mdh->mbh', padded_PxD.reshape(num_blocks, block, -1),
                         jnp.take(w_ExDxH, block_expert_M, axis=0))
  return out_MxBxH.reshape(num_blocks * block, -1)[slot_N]


class MoeMlp(nn.Module):
  """Routed SwiGLU experts (and a shared one) on [B, L, D]; sows the router's losses and load statistics."""
  config: MoeConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    experts, top_k, hidden = cfg.num_experts, cfg.top_k, cfg.expert_width
    kernel_init, out_init = cfg.kernel_inits()
    batch, length, dim = x_BxLxD.shape
    tokens = batch * length
    x_TxD = x_BxLxD.reshape(tokens, dim)
    logits_TxE = nn.Dense(experts, use_bias=False, dtype=jnp.float32, kernel_init=kernel_init,
                          name='router')(x_TxD.astype(jnp.float32))
    weight_TxK, expert_TxK = route(logits_TxE, top_k)

    # Dispatch: the T*k assignments (token-major) sorted by expert, each expert's rows contiguous.
    expert_N = expert_TxK.reshape(-1)
    order_N = jnp.argsort(expert_N, stable=True)
    sorted_expert_N = expert_N[order_N]
    group_E = jnp.bincount(expert_N, length=experts).astype(jnp.int32)
    w_gate_up = self.param('expert_gate_up', _per_expert(kernel_init), (experts, dim, 2 * hidden), jnp.float32)
    w_down = self.param('expert_down', _per_expert(out_init), (experts, hidden, dim), jnp.float32)
    xs_NxD = x_TxD[order_N // top_k]
    gate_NxH, up_NxH = jnp.split(grouped_matmul(xs_NxD, w_gate_up.astype(dtype), group_E, cfg.grouped_matmul),
                                 2, axis=-1)
    ys_NxD = grouped_matmul(nn.silu(gate_NxH) * up_NxH, w_down.astype(dtype), group_E, cfg.grouped_matmul)
    inverse_N = jnp.zeros_like(order_N).at[order_N].set(jnp.arange(order_N.shape[0], dtype=order_N.dtype))
    y_TxKxD = ys_NxD[inverse_N].reshape(tokens, top_k, dim)

    if cfg.capacity_factor > 0:  # Assignments past an expert's capacity, in the sorted order, are dropped.
      capacity = math.ceil(cfg.capacity_factor * tokens * top_k / experts)
      rank_N = jnp.arange(order_N.shape[0]) - (jnp.cumsum(group_E) - group_E)[sorted_expert_N]
      kept_TxK = (rank_N < capacity)[inverse_N].reshape(tokens, top_k)
      weight_TxK = jnp.where(kept_TxK, weight_TxK, 0.0)
      dropped = 1.0 - jnp.mean(kept_TxK.astype(jnp.float32))
    else:
      dropped = jnp.zeros((), jnp.float32)
    y_TxD = jnp.einsum('tk,tkd->td', weight_TxK.astype(dtype), y_TxKxD)
    if cfg.shared_expert:
      y_TxD = y_TxD + layers.Mlp(hidden, 'swiglu', use_bias=False, dtype=dtype, kernel_init=kernel_init,
                                 out_init=out_init, name='shared')(x_TxD)

    load_E = group_E.astype(jnp.float32) / (tokens * top_k)  # f_e: fraction of the assignments.
    prob_E = jnp.mean(jax.nn.softmax(logits_TxE, axis=-1), axis=0)  # P_e: mean router probability.
    self.sow(aux_lib.LOSSES, 'load_balance',
             cfg.load_balance_weight * experts * jnp.sum(jax.lax.stop_gradient(load_E) * prob_E))
    self.sow(aux_lib.LOSSES, 'router_z',
             cfg.router_z_weight * jnp.mean(jax.nn.logsumexp(logits_TxE, axis=-1) ** 2))
    self.sow(aux_lib.STATS, 'expert_load_min', jnp.min(load_E))
    self.sow(aux_lib.STATS, 'expert_load_max', jnp.max(load_E))
    self.sow(aux_lib.STATS, 'dropped_fraction', dropped)
    return y_TxD.reshape(batch, length, dim).astype(dtype)


class ActiveMlp(nn.Module):
  """The active work of a MoeMlp as one dense block (FLOP counting): the router and its top-k softmax, one
  SwiGLU of width k H whose k slices are weighted by the router weights, and the shared expert."""
  config: MoeConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    top_k, hidden = cfg.top_k, cfg.expert_width
    kernel_init, out_init = cfg.kernel_inits()
    logits_BxLxE = nn.Dense(cfg.num_experts, use_bias=False, dtype=jnp.float32, kernel_init=kernel_init,
                            name='router')(x_BxLxD.astype(jnp.float32))
    weight_BxLxK, _ = route(logits_BxLxE.reshape(-1, cfg.num_experts), top_k)
    gate_up = nn.Dense(2 * top_k * hidden, use_bias=False, dtype=dtype, kernel_init=kernel_init, name='gate_up')
    gate, up = jnp.split(gate_up(x_BxLxD), 2, axis=-1)
    h_BxLxKxH = (nn.silu(gate) * up).reshape(x_BxLxD.shape[:2] + (top_k, hidden))
    h_BxLxKxH = h_BxLxKxH * weight_BxLxK.reshape(x_BxLxD.shape[:2] + (top_k, 1)).astype(dtype)
    down = nn.Dense(x_BxLxD.shape[-1], use_bias=False, dtype=dtype, kernel_init=out_init, name='down')
    y_BxLxD = down(h_BxLxKxH.reshape(x_BxLxD.shape[:2] + (-1,)))
    if cfg.shared_expert:
      y_BxLxD = y_BxLxD + layers.Mlp(hidden, 'swiglu', use_bias=False, dtype=dtype, kernel_init=kernel_init,
                                     out_init=out_init, name='shared')(x_BxLxD)
    return y_BxLxD


def active_proxy(model: Decoder) -> Decoder:
  """A dense decoder computing what each token of the MoE `model` computes (see the module docstring)."""
  fields = {f.name: getattr(model.config, f.name) for f in dataclasses.fields(MoeConfig)}
  return Decoder(ActiveProxyConfig(**fields), model.vocab_size)


def expert_partition_specs(params: Any) -> Any:
  """PartitionSpecs of a parameter tree: the expert weights split on 'expert' (EXPERT_PARAM_AXES), the rest
  replicated (PartitionSpec())."""
  def spec(path: tuple[Any, ...], leaf: Any) -> PartitionSpec:
    del leaf
    name = getattr(path[-1], 'key', None) if path else None
    return PartitionSpec(*EXPERT_PARAM_AXES[name]) if name in EXPERT_PARAM_AXES else PartitionSpec()
  return jax.tree_util.tree_map_with_path(spec, params)


registry.register('moe', MoeConfig, family='causal_lm')(lambda config, dims: Decoder(config, dims.vocab_size))
