"""Building blocks shared by every model: embeddings, attention, MLPs, norms, blocks.

Parameters are always float32; activations use the compute dtype of the
architecture (`ArchConfig.dtype`, 'float32' or 'bfloat16'). Norm statistics and
the attention softmax are computed in float32 whatever the compute dtype.
"""
import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import attention
from models import config_fields
from models.errors import ModelConfigError

Initializer = Callable[..., jax.Array]

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
MODEL_NAMES = ('mlp', 'bert', 'trm')
_CHOICES = {
    'name': MODEL_NAMES,
    'mlp_act': ('gelu', 'swiglu'),
    'mixer': ('attention', 'mlp'),
    'norm': ('layernorm', 'rmsnorm'),
    'dtype': tuple(DTYPES),
    'pos_emb': ('learned', 'none'),
    'attention_bias': ('none', 'grid', 'grid_heads'),
    'init_state': ('random', 'input'),
    'inject': ('z', 'zy'),
}

# Dense default: LeCun normal (truncated), as TRM's CastedLinear.
default_kernel_init = nn.initializers.lecun_normal()


@dataclasses.dataclass(frozen=True)
class ArchConfig:
  """Architecture of one model; hashable, so a module holding it can be static.

  The first block of fields is what configs/*.py write under `model`; the
  second block is optional (defaults reproduce the behaviour without them).
  """
  name: str
  hidden: int  # D: width of every token state (BERT/TRM).
  num_layers: int = 2  # Blocks per application of the network.
  num_heads: int = 4
  mlp_ratio: float = 4.0  # Channel-MLP expansion (SwiGLU uses 2/3 of it, as LLaMA/TRM).
  mlp_act: str = 'gelu'
  mixer: str = 'attention'  # Token mixing: self-attention or MLP over the sequence axis.
  norm: str = 'layernorm'
  post_norm: bool = False
  use_bias: bool = True
  inner_steps: int = 6  # TRM n: latent updates per cycle (0 with inject zy: f applied once per cycle, to y + z + x).
  cycles: int = 3  # TRM T: cycles per step; the first T-1 carry no gradient.
  dtype: str = 'float32'
  tie_embeddings: bool = False
  mlp_state_dim: int = 512  # MLP baseline: width H of its flat state.
  # Optional fields.
  prefix_len: int = 0  # TRM: learned prefix positions (TRM code's puzzle_emb_len, 16).
  pos_emb: str = 'learned'  # Learned absolute positions or none (TRM's Sudoku recipe: none).
  norm_scale: bool = True  # Learnable norm scale; TRM's code uses a parameter-free RMSNorm.
  norm_eps: float = 1e-5
  mlp_multiple_of: int = 1  # Round MLP hidden widths up to this (TRM code: 256).
  # 'grid': learned per-head attention bias for cells in the same row / column / box of an
  # N x N grid (Sudoku); the sequence must be a grid of N*N cells with N a square.
  attention_bias: str = 'none'
  # BERT's hidden and attention-probability dropout rate, active only when the caller passes a
  # 'dropout' rng (training); evaluation never does. 0 adds no op at all.
  dropout: float = 0.0
  # TRM's recursion scheme (defaults: the paper's). Cycles of a step that carry gradients (the last
  # ones; the others run under stop_gradient): 1 = TRM, `cycles` = full backprop through the step.
  grad_cycles: int = 1
  init_state: str = 'random'  # Initial (y, z): fixed random vectors (TRM), or y = input embedding, z = 0.
  inject: str = 'z'  # Where the input x enters: the latent z only (TRM), or z and the answer y.
  embed_scale: bool = True  # TRM: token embeddings (init std 1/sqrt(D)) scaled by sqrt(D); False: unscaled.
  # TRM with pre-norm blocks: normalise the output of every application of the network (one shared norm), so
  # that y and z stay bounded however many applications run (post-norm blocks already end with a norm).
  state_norm: bool = False

  def __post_init__(self):
    for key, choices in _CHOICES.items():
      if getattr(self, key) not in choices:
        raise ModelConfigError(
            f'model.{key}={getattr(self, key)!r} is not one of {list(choices)}')
    for key in ('hidden', 'num_layers', 'num_heads', 'cycles', 'mlp_state_dim', 'mlp_multiple_of'):
      if getattr(self, key) < 1:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be >= 1')
    if self.inner_steps < 0:
      raise ModelConfigError(f'model.inner_steps={self.inner_steps} must be >= 0')
    if self.name == 'trm' and self.inner_steps == 0 and self.inject == 'z':
      raise ModelConfigError("model.inner_steps=0 needs model.inject='zy': with no latent update the "
                             'input reaches the network only through the y update')
    if not 1 <= self.grad_cycles <= self.cycles:
      raise ModelConfigError(f'model.grad_cycles={self.grad_cycles} must be in [1, model.cycles={self.cycles}]')
    if self.prefix_len < 0:
      raise ModelConfigError(f'model.prefix_len={self.prefix_len} must be >= 0')
    if not 0.0 <= self.dropout < 1.0:
      raise ModelConfigError(f'model.dropout={self.dropout} must be in [0, 1)')
    if self.mlp_ratio <= 0:
      raise ModelConfigError(f'model.mlp_ratio={self.mlp_ratio} must be > 0')
    if self.mixer == 'attention' and self.hidden % self.num_heads:
      raise ModelConfigError(
          f'model.hidden={self.hidden} is not divisible by model.num_heads={self.num_heads}')

  @property
  def compute_dtype(self) -> Any:
    return DTYPES[self.dtype]

  @classmethod
  def from_config(cls, cfg: Any, allowed_extra: tuple[str, ...] = ()) -> 'ArchConfig':
    """From a ConfigDict/mapping/ArchConfig; a key that is neither a field nor in `allowed_extra`
    (fields read elsewhere, such as depth) raises, naming it."""
    return config_fields.from_config(cls, cfg, allowed_extra)


def mlp_hidden_dim(width: int, ratio: float, act: str, multiple_of: int = 1) -> int:
  """Hidden width of an MLP on `width` features (SwiGLU keeps the params of ratio x GELU)."""
  hidden = ratio * width * (2 / 3 if act == 'swiglu' else 1)
  hidden = max(1, round(hidden))
  return -(-hidden // multiple_of) * multiple_of


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x), in BERT's erf form.

  Agrees with nn.gelu(approximate=False) to float32 rounding, values and
  gradients; that one uses erfc for relative accuracy far into the negative
  tail, which on CPU costs branches (2% of the MLM bench's BERT train step).
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1.0 / math.sqrt(2.0), x.dtype)))


def make_norm(arch: ArchConfig, name: str | None = None) -> nn.Module:
  """LayerNorm or RMSNorm as the architecture asks."""
  if arch.norm == 'rmsnorm':
    return nn.RMSNorm(epsilon=arch.norm_eps, use_scale=arch.norm_scale,
                      dtype=arch.compute_dtype, name=name)
  return nn.LayerNorm(epsilon=arch.norm_eps, use_scale=arch.norm_scale,
                      use_bias=arch.use_bias, dtype=arch.compute_dtype, name=name)


class TokenEmbed(nn.Module):
  """Token embedding table; `attend` gives tied output logits x @ E^T."""
  vocab_size: int
  dim: int
  init_std: float = 0.02
  scale: float = 1.0  # Multiplies the looked-up vectors (TRM: sqrt(D) with std 1/sqrt(D)).
  dtype: Any = jnp.float32

  def setup(self):
    self.embedding = self.param('embedding', nn.initializers.normal(self.init_std),
                                (self.vocab_size, self.dim), jnp.float32)

  def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
    x_BxLxD = jnp.take(self.embedding, tokens_BxL, axis=0).astype(self.dtype)
    return x_BxLxD * self.scale if self.scale != 1.0 else x_BxLxD

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    return jnp.einsum('...d,vd->...v', x_BxLxD, self.embedding.astype(self.dtype))


class PosEmbed(nn.Module):
  """Learned absolute positional embedding, returned as [L, D] (broadcast by the caller)."""
  length: int
  dim: int
  init_std: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    table_LxD = self.param('embedding', nn.initializers.normal(self.init_std),
                           (self.length, self.dim), jnp.float32)
    return table_LxD.astype(self.dtype)


def grid_relations(length: int, prefix_len: int = 0) -> np.ndarray:
  """float32[3, P+L, P+L]: same row, same column, same box of an N x N grid (prefix: none)."""
  side = math.isqrt(length)
  box = math.isqrt(side)
  if side * side != length or box * box != side:
    raise ModelConfigError(f"model.attention_bias='grid' needs N*N cells with N a square (4, 9, 16...); "
                     f'got a sequence of {length}')
  idx = np.arange(length)
  row, col = idx // side, idx % side
  boxes = (row // box) * box + col // box
  rel = np.stack([a[:, None] == a[None, :] for a in (row, col, boxes)]).astype(np.float32)
  return np.pad(rel, ((0, 0), (prefix_len, 0), (prefix_len, 0)))


class GridRelationBias(nn.Module):
  """Learned per-head attention bias w[relation, head] for same row / column / box: [N, T, T].

  per_head=False starts every head with the same mild prior towards a cell's
  Sudoku peers. per_head=True starts head k on one relation (k mod 4: row,
  column, box, all three) with a strong bias, so that from the first step the
  heads read a cell's row, column and box apart; both are learned from there.
  """
  num_heads: int
  length: int
  prefix_len: int = 0
  per_head: bool = False
  init_value: float = 1.0  # per_head=False: bias of every relation and head at init.
  head_init_value: float = 5.0  # per_head=True: bias of a head's own relation at init (others 0).

  def _init(self, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    del key
    if not self.per_head:
      return jnp.full(shape, self.init_value, dtype)
    relation_R, head_N = np.arange(shape[0])[:, None], np.arange(shape[1])[None] % 4
    return jnp.asarray(np.where((head_N == relation_R) | (head_N == 3), self.head_init_value, 0.0), dtype)

  @nn.compact
  def __call__(self) -> jax.Array:
    rel_RxTxT = jnp.asarray(grid_relations(self.length, self.prefix_len))
    weight_RxN = self.param('weight', self._init, (3, self.num_heads), jnp.float32)
    return jnp.einsum('rn,rst->nst', weight_RxN, rel_RxTxT)


class SelfAttention(nn.Module):
  """Bidirectional multi-head self-attention; optional key padding mask, logit bias, and dropout on
  the probabilities (only when a 'dropout' rng is given)."""
  num_heads: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array | None = None,
               bias_NxLxL: jax.Array | None = None) -> jax.Array:
    dim = x_BxLxD.shape[-1]
    head_dim = dim // self.num_heads
    qkv_BxLx3xNxK = nn.DenseGeneral(
        (3, self.num_heads, head_dim), use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=self.kernel_init, name='qkv')(x_BxLxD)
    q_BxLxNxK, k_BxLxNxK, v_BxLxNxK = (qkv_BxLx3xNxK[:, :, i] for i in range(3))
    mask_BxL = None if mask_BxL is None else mask_BxL.astype(bool)
    if self.dropout > 0 and self.has_rng('dropout'):
      out_BxLxNxK = attention.attention_with_dropout(q_BxLxNxK, k_BxLxNxK, v_BxLxNxK, bias_NxLxL, mask_BxL,
                                                     rate=self.dropout, rng=self.make_rng('dropout'))
    else:
      out_BxLxNxK = attention.attention(q_BxLxNxK, k_BxLxNxK, v_BxLxNxK, bias_NxLxL, mask_BxL)
    return nn.DenseGeneral(dim, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                           kernel_init=self.kernel_init, name='out')(out_BxLxNxK)


class Mlp(nn.Module):
  """Two-layer MLP over the last axis: GELU (exact, as BERT) or SwiGLU."""
  hidden_dim: int
  act: str = 'gelu'
  out_dim: int | None = None
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    dense = lambda n, name: nn.Dense(n, use_bias=self.use_bias, dtype=self.dtype,
                                     kernel_init=self.kernel_init, name=name)
    if self.act == 'swiglu':
      gate, up = jnp.split(dense(2 * self.hidden_dim, 'gate_up')(x), 2, axis=-1)
      h = nn.silu(gate) * up
    elif self.act == 'gelu':
      h = gelu(dense(self.hidden_dim, 'up')(x))
    else:
      raise ValueError(f'unknown MLP activation {self.act!r}; use gelu or swiglu')
    return dense(out_dim, 'down')(h)


class TokenMixingMlp(nn.Module):
  """MLP over the sequence axis (MLP-Mixer's token mixing, TRM's mlp_t).

  The sequence length is read from the input, so the params fix it.
  """
  ratio: float
  act: str = 'gelu'
  multiple_of: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array | None = None) -> jax.Array:
    if mask_BxL is not None:  # Padding positions contribute nothing to the mix.
      x_BxLxD = x_BxLxD * mask_BxL[..., None].astype(x_BxLxD.dtype)
    length = x_BxLxD.shape[1]
    hidden = mlp_hidden_dim(length, self.ratio, self.act, self.multiple_of)
    mixed_BxDxL = Mlp(hidden, self.act, use_bias=self.use_bias, dtype=self.dtype,
                      kernel_init=self.kernel_init, name='mlp')(jnp.swapaxes(x_BxLxD, 1, 2))
    return jnp.swapaxes(mixed_BxDxL, 1, 2)


class Block(nn.Module):
  """Token mixer (attention | token MLP) then channel MLP, pre- or post-norm."""
  arch: ArchConfig
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array | None = None,
               bias_NxLxL: jax.Array | None = None) -> jax.Array:
    arch = self.arch
    dtype = arch.compute_dtype
    if arch.mixer == 'attention':
      attention = SelfAttention(arch.num_heads, arch.use_bias, dtype, self.kernel_init, arch.dropout,
                                name='attention')
      mixer = lambda h, m: attention(h, m, bias_NxLxL)
    else:
      mixer = TokenMixingMlp(arch.mlp_ratio, arch.mlp_act, arch.mlp_multiple_of,
                             arch.use_bias, dtype, self.kernel_init, name='token_mlp')
    hidden = mlp_hidden_dim(arch.hidden, arch.mlp_ratio, arch.mlp_act, arch.mlp_multiple_of)
    mlp = Mlp(hidden, arch.mlp_act, use_bias=arch.use_bias, dtype=dtype,
              kernel_init=self.kernel_init, name='mlp')
    norm_mix, norm_mlp = make_norm(arch, 'norm_mix'), make_norm(arch, 'norm_mlp')
    drop = lambda h: dropout(h, arch.dropout, self)  # pylint: disable=unnecessary-lambda-assignment
    if arch.post_norm:
      x_BxLxD = norm_mix(x_BxLxD + drop(mixer(x_BxLxD, mask_BxL)))
      return norm_mlp(x_BxLxD + drop(mlp(x_BxLxD)))
    x_BxLxD = x_BxLxD + drop(mixer(norm_mix(x_BxLxD), mask_BxL))
    return x_BxLxD + drop(mlp(norm_mlp(x_BxLxD)))


def dropout(x: jax.Array, rate: float, module: nn.Module) -> jax.Array:
  """Dropout inside `module` when rate > 0 and the caller gave a 'dropout' rng (training); else x as is."""
  if rate <= 0 or not module.has_rng('dropout'):
    return x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class HaltHead(nn.Module):
  """Halting logit from a pooled state: zero kernel, bias -5 (TRM's q_head init)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled_BxD: jax.Array) -> jax.Array:
    logit_Bx1 = nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                         bias_init=nn.initializers.constant(-5.0), name='dense')(pooled_BxD)
    return logit_Bx1[:, 0].astype(jnp.float32)
