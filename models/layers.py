"""Blocks every model family uses: token and position embeddings, channel MLPs, bidirectional self-attention,
dropout.

Parameters are always float32; activations use the compute dtype a model passes in. Norm statistics
and the attention softmax are computed in float32 whatever the compute dtype.
"""
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import attention

Initializer = Callable[..., jax.Array]

# Dense default: LeCun normal (truncated), as TRM's CastedLinear.
default_kernel_init = nn.initializers.lecun_normal()


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x), in BERT's erf form.

  Agrees with nn.gelu(approximate=False) to float32 rounding, values and
  gradients; that one uses erfc for relative accuracy far into the negative
  tail, which on CPU costs branches (2% of the MLM bench's BERT train step).
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1.0 / math.sqrt(2.0), x.dtype)))


def dropout(x: jax.Array, rate: float, module: nn.Module) -> jax.Array:
  """Dropout inside `module` when rate > 0 and the caller gave a 'dropout' rng (training); else x as is."""
  if rate <= 0 or not module.has_rng('dropout'):
    return x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)



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


class SelfAttention(nn.Module):
  """Bidirectional multi-head self-attention (one fused q/k/v projection); optional key padding mask, logit bias,
  and dropout on the probabilities (only when a 'dropout' rng is given)."""
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
    mask_Bx1xL = None if mask_BxL is None else mask_BxL.astype(bool)[:, None, :]
    use_dropout = self.dropout > 0 and self.has_rng('dropout')
    out_BxLxNxK = attention.attention(q_BxLxNxK, k_BxLxNxK, v_BxLxNxK, mask_BxLxS=mask_Bx1xL, bias_NxLxS=bias_NxLxL,
                                      dropout_rate=self.dropout if use_dropout else 0.0,
                                      dropout_rng=self.make_rng('dropout') if use_dropout else None)
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
  out_init: Initializer | None = None  # The output projection's ('down'); None: kernel_init.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    dense = lambda n, name, init=self.kernel_init: nn.Dense(n, use_bias=self.use_bias, dtype=self.dtype,  # pylint: disable=unnecessary-lambda-assignment
                                                            kernel_init=init, name=name)
    if self.act == 'swiglu':
      gate, up = jnp.split(dense(2 * self.hidden_dim, 'gate_up')(x), 2, axis=-1)
      h = nn.silu(gate) * up
    elif self.act == 'gelu':
      h = gelu(dense(self.hidden_dim, 'up')(x))
    else:
      raise ValueError(f'unknown MLP activation {self.act!r}; use gelu or swiglu')
    return dense(out_dim, 'down', self.out_init or self.kernel_init)(h)
