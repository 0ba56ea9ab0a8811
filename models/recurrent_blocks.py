"""The recurrent-depth family's config and blocks (MLP baseline, BERT-style encoder, TRM: models/recurrent.py)."""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import layers
from models.config import ModelConfig, check_choices, mlp_hidden_dim
from models.errors import ModelConfigError
from models.layers import Initializer, default_kernel_init

NAMES = ('mlp', 'bert', 'trm')
_CHOICES = {
    'name': NAMES,
    'mlp_act': ('gelu', 'swiglu'),
    'mixer': ('attention', 'mlp'),
    'norm': ('layernorm', 'rmsnorm'),
    'pos_emb': ('learned', 'none'),
    'attention_bias': ('none', 'grid', 'grid_heads'),
    'init_state': ('random', 'input'),
    'inject': ('z', 'zy'),
}


@dataclasses.dataclass(frozen=True)
class RecurrentConfig(ModelConfig):
  """A recurrent-depth model: one network applied `depth` times (models/unroll.py), with its readout.

  The shared fields (width, num_layers: blocks per application, ...) are ModelConfig's; the rest
  is this family's (defaults reproduce the models without them).
  """
  name: str = 'bert'
  mlp_act: str = 'gelu'  # Channel MLP: 'gelu' (exact, as BERT) or 'swiglu'.
  mixer: str = 'attention'  # Token mixing: self-attention or an MLP over the sequence axis.
  norm: str = 'layernorm'  # 'layernorm' or 'rmsnorm'.
  post_norm: bool = False  # Norm after each residual add (BERT, TRM) instead of before it.
  use_bias: bool = True  # Biases in dense layers and LayerNorms.
  depth: int = 1  # Applications of the network in training (TRM: supervision steps); any depth runs at eval.
  inner_steps: int = 6  # TRM n: latent updates per cycle (0 with inject zy: f applied once per cycle, to y + z + x).
  cycles: int = 3  # TRM T: cycles per step; the first T-1 carry no gradient.
  mlp_state_dim: int = 512  # MLP baseline: width H of its flat state.
  prefix_len: int = 0  # TRM: learned prefix positions (TRM code's puzzle_emb_len, 16).
  pos_emb: str = 'learned'  # Learned absolute positions or none (TRM's Sudoku recipe: none).
  norm_scale: bool = True  # Learnable norm scale; TRM's code uses a parameter-free RMSNorm.
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
    super().__post_init__()
    check_choices(self, _CHOICES)
    for key in ('depth', 'cycles', 'mlp_state_dim'):
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
    if self.mixer == 'attention' and self.width % self.num_heads:
      raise ModelConfigError(f'model.width={self.width} is not divisible by model.num_heads={self.num_heads}')


def make_norm(config: RecurrentConfig, name: str | None = None) -> nn.Module:
  """LayerNorm or RMSNorm as the config asks."""
  if config.norm == 'rmsnorm':
    return nn.RMSNorm(epsilon=config.norm_eps, use_scale=config.norm_scale, dtype=config.compute_dtype, name=name)
  return nn.LayerNorm(epsilon=config.norm_eps, use_scale=config.norm_scale, use_bias=config.use_bias,
                      dtype=config.compute_dtype, name=name)


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
    mixed_BxDxL = layers.Mlp(hidden, self.act, use_bias=self.use_bias, dtype=self.dtype,
                             kernel_init=self.kernel_init, name='mlp')(jnp.swapaxes(x_BxLxD, 1, 2))
    return jnp.swapaxes(mixed_BxDxL, 1, 2)


class Block(nn.Module):
  """Token mixer (attention | token MLP) then channel MLP, pre- or post-norm."""
  config: RecurrentConfig
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array | None = None,
               bias_NxLxL: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    if cfg.mixer == 'attention':
      attention = layers.SelfAttention(cfg.num_heads, cfg.use_bias, dtype, self.kernel_init, cfg.dropout,
                                       name='attention')
      mixer = lambda h, m: attention(h, m, bias_NxLxL)
    else:
      mixer = TokenMixingMlp(cfg.mlp_ratio, cfg.mlp_act, cfg.mlp_multiple_of,
                             cfg.use_bias, dtype, self.kernel_init, name='token_mlp')
    mlp = layers.Mlp(cfg.mlp_width(cfg.mlp_act), cfg.mlp_act, use_bias=cfg.use_bias, dtype=dtype,
                     kernel_init=self.kernel_init, name='mlp')
    norm_mix, norm_mlp = make_norm(cfg, 'norm_mix'), make_norm(cfg, 'norm_mlp')
    drop = lambda h: layers.dropout(h, cfg.dropout, self)  # pylint: disable=unnecessary-lambda-assignment
    if cfg.post_norm:
      x_BxLxD = norm_mix(x_BxLxD + drop(mixer(x_BxLxD, mask_BxL)))
      return norm_mlp(x_BxLxD + drop(mlp(x_BxLxD)))
    x_BxLxD = x_BxLxD + drop(mixer(norm_mix(x_BxLxD), mask_BxL))
    return x_BxLxD + drop(mlp(norm_mlp(x_BxLxD)))


class HaltHead(nn.Module):
  """Halting logit from a pooled state: zero kernel, bias -5 (TRM's q_head init)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled_BxD: jax.Array) -> jax.Array:
    logit_Bx1 = nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                         bias_init=nn.initializers.constant(-5.0), name='dense')(pooled_BxD)
    return logit_Bx1[:, 0].astype(jnp.float32)
