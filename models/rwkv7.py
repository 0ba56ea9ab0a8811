"""RWKV-7 "Goose" (Peng et al. 2025, arXiv 2503.14456): a causal language model in linear time with a constant-size
state per layer, no attention and no KV cache.

A block is x + TimeMix(LN(x)), then x + ChannelMix(LN(x)) (LayerNorms; the first block also normalises the
embeddings). The time mix, per head of N channels:

  token shift      x_*  = x + (x_{t-1} - x) * mu_*          (mu_* learned per channel; * in r, w, k, v, a, g)
  projections      r = W_r x_r, k = W_k x_k, v = W_v x_v
  decay            w = exp(-e^-0.5 * sigmoid(w_0 + tanh(x_w W_w1) W_w2))      in (e^-0.607, 1): see below
  in-context lr    a = sigmoid(a_0 + x_a W_a1 W_a2)
  value residual   v = v + (v_first - v) * sigmoid(v_0 + x_v W_v1 W_v2)       (v_first: layer 0's v; layer 0 keeps v)
  gate             g = sigmoid(x_g W_g1) W_g2
  removal key      kk = normalise(k * k_k) per head;  k = k * (1 + (a - 1) * k_a)
  state (N x N)    S_t = S_{t-1} (diag(w_t) - kk_t^T (a_t * kk_t)) + v_t^T k_t,   y_t = S_t r_t
  out              W_o (g * (GroupNorm_heads(y) + (sum_head(r * k * r_k)) v))

and the channel mix is W_v relu(W_k x_k)^2 with its own token shift. Initialisation follows the reference
(BlinkDL/RWKV-LM, RWKV-v7/train_temp, as `generate_init_weight` leaves it): the mu ramps, the decay / a / v_0
biases, zero LoRA down projections and output matrices, orthogonal LoRA up projections at 0.1, orthogonal r, v and
channel-mix key matrices (gain 1; the key's 0.1), the GroupNorm scale ((layer + 1) / layers)^0.7, embeddings
uniform in +-1e-4 and an orthogonal head at 0.5 sqrt(V / D).

Two forms of the same layer, written over the transposed state Sigma = S^T (keys x values):
  * training and prompts (`wkv_chunked`): within a chunk of C tokens everything is matrix products (the
    diagonal-plus-rank-one transitions resolved by the inverse of a unit lower-triangular matrix, by halves); across
    chunks a `lax.scan` over the affine map Sigma <- G_c Sigma + U_c, two N x N products per chunk. `wkv_scan` is
    the plain token-by-token recurrence.
  * generation (`Rwkv7.decode`): one step of the recurrence per token; the cache is the state (N x N per head)
    and the two token-shift vectors per layer, the same size at every length.

Numerical range: the per-token log decay is bounded to (-e^-0.5, 0) = (-0.607, 0) by construction, so within a
chunk the cumulative decay d_t lies in (e^-0.607C, 1] and its inverse below e^0.607C; the chunked form
multiplies keys by 1/d and queries by d, whose products are the true (bounded) decays. `chunk_len` <= 64 keeps
1/d below e^39, far from float32's e^88 overflow; the WKV runs in float32 whatever the compute dtype.

FLOPs are XLA's count of the compiled step (the chunk scan unrolled for counting); models/flops.py has the
analytic estimate.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import registry
from models import remat
from models.config import ModelConfig
from models.errors import ModelConfigError

Pytree = Any
Cache = dict[str, Any]

MAX_CHUNK = 64  # See the module docstring: keeps the inverse cumulative decay of a chunk below e^39.
_LOG_DECAY_SCALE = math.exp(-0.5)  # The largest per-token decay rate: w >= exp(-e^-0.5).
_GROUP_NORM_EPS = 64e-5  # The reference's GroupNorm epsilon (head size 64 x 1e-5).
WKV_FORMS = ('chunked', 'scan')


@dataclasses.dataclass(frozen=True)
class Rwkv7Config(ModelConfig):
  """An RWKV-7 language model; the shared fields are ModelConfig's (num_layers blocks of `width`, the channel mix
  `mlp_ratio` x width wide, relu^2; num_heads gives the head size when head_size is 0)."""
  name: str = 'rwkv7'
  width: int = 256
  num_layers: int = 4
  head_size: int = 0  # N: channels of a head (its state is N x N); 0 = width // num_heads. Must divide width.
  chunk_len: int = 16  # Tokens per chunk of the chunked WKV (1..64; sequences of any length are padded inside).
  wkv: str = 'chunked'  # Training form: 'chunked' (matrix products within chunks) or 'scan' (token by token).
  decay_lora: int = 0  # Rank of the decay's low-rank projection; 0 = the reference's max(32, ~2.5 sqrt(D)).
  iclr_lora: int = 0  # Rank of the in-context learning rate's (a) projection; 0 = as the decay's.
  value_lora: int = 0  # Rank of the value-residual gate's projection; 0 = max(32, ~1.7 sqrt(D)).
  gate_lora: int = 0  # Rank of the output gate's (g) projection; 0 = max(32, ~5 sqrt(D)).

  def __post_init__(self):
    super().__post_init__()
    if self.name != 'rwkv7':
      raise ModelConfigError(f"model.name={self.name!r} is not 'rwkv7'")
    if self.head_size < 0:
      raise ModelConfigError(f'model.head_size={self.head_size} must be >= 0 (0: width // num_heads)')
    if self.width % self.head:
      raise ModelConfigError(f'model.head_size={self.head} does not divide model.width={self.width}')
    if not 1 <= self.chunk_len <= MAX_CHUNK:
      raise ModelConfigError(f'model.chunk_len={self.chunk_len} must be in 1..{MAX_CHUNK} (the decays of a longer '
                             'chunk leave float32 range)')
    if self.wkv not in WKV_FORMS:
      raise ModelConfigError(f'model.wkv={self.wkv!r} is not one of {list(WKV_FORMS)}')
    for key in ('decay_lora', 'iclr_lora', 'value_lora', 'gate_lora'):
      if getattr(self, key) < 0:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be >= 0 (0: the reference size)')
    if self.tie_embeddings:
      raise ModelConfigError('model.tie_embeddings=True: RWKV-7 has its own output head (set it False)')

  @property
  def head(self) -> int:
    """N, channels per head."""
    if self.head_size:
      return self.head_size
    if self.width % self.num_heads:
      raise ModelConfigError(f'model.num_heads={self.num_heads} does not divide model.width={self.width}; '
                             'set model.head_size')
    return self.width // self.num_heads

  @property
  def heads(self) -> int:
    return self.width // self.head

  def lora(self, key: str) -> int:
    """Rank of a low-rank projection: the field, else the reference's suggestion for this width."""
    factor = {'decay_lora': 2.5, 'iclr_lora': 2.5, 'value_lora': 1.7, 'gate_lora': 5.0}[key]
    return getattr(self, key) or max(32, int(round(factor * math.sqrt(self.width) / 32)) * 32)


# ----------------------------------------------------------------------------------------------- the WKV-7 kernel
def wkv_step(sigma_BxHxNxN: jax.Array, r: jax.Array, log_w: jax.Array, k: jax.Array, v: jax.Array,
             alpha: jax.Array, beta: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One token: Sigma <- diag(w) Sigma + beta (alpha^T Sigma) + k v^T, y = r^T Sigma. Inputs [B, H, N]."""
  removal_BxHxN = jnp.einsum('bhk,bhkv->bhv', alpha, sigma_BxHxNxN)
  sigma_BxHxNxN = (jnp.exp(log_w)[..., None] * sigma_BxHxNxN + beta[..., None] * removal_BxHxN[..., None, :]
                   + k[..., None] * v[..., None, :])
  return sigma_BxHxNxN, jnp.einsum('bhk,bhkv->bhv', r, sigma_BxHxNxN)


def wkv_scan(r: jax.Array, log_w: jax.Array, k: jax.Array, v: jax.Array, alpha: jax.Array, beta: jax.Array,
             sigma_BxHxNxN: jax.Array, unroll: int | bool = 1) -> tuple[jax.Array, jax.Array]:
  """The recurrence token by token (a `lax.scan`); inputs [B, L, H, N]; returns (y [B, L, H, N], final state)."""
  def step(sigma, inputs):
    return wkv_step(sigma, *inputs)
  inputs = tuple(jnp.moveaxis(x, 1, 0) for x in (r, log_w, k, v, alpha, beta))
  sigma_BxHxNxN, y_LxBxHxN = jax.lax.scan(step, sigma_BxHxNxN, inputs, unroll=unroll)
  return jnp.moveaxis(y_LxBxHxN, 0, 1), sigma_BxHxNxN


def _unit_lower_inverse(m_XxCxC: jax.Array) -> jax.Array:
  """The inverse of a unit lower-triangular M by halves: [[A, 0], [C, B]]^-1 = [[A^-1, 0], [-B^-1 C A^-1, B^-1]].

  Every block inverse is that of the transitions over a sub-range of the chunk, as bounded as the whole (a series
  (I + L)(I + L^2)... for it reaches 1e9 in float32 when successive removal keys align, as in a run of one token,
  though the inverse is small; XLA:CPU's batched triangular solve deadlocked in a jitted train step). Matrix
  products only: fast on accelerators and counted by XLA's cost analysis.
  """
  size = m_XxCxC.shape[-1]
  if size == 1:
    return jnp.ones_like(m_XxCxC)
  half = size // 2
  a_inv = _unit_lower_inverse(m_XxCxC[..., :half, :half])
  b_inv = _unit_lower_inverse(m_XxCxC[..., half:, half:])
  lower = -(b_inv @ m_XxCxC[..., half:, :half] @ a_inv)
  top = jnp.concatenate([a_inv, jnp.zeros(a_inv.shape[:-1] + (size - half,), a_inv.dtype)], axis=-1)
  return jnp.concatenate([top, jnp.concatenate([lower, b_inv], axis=-1)], axis=-2)


def wkv_chunked(r: jax.Array, log_w: jax.Array, k: jax.Array, v: jax.Array, alpha: jax.Array, beta: jax.Array,
                sigma_BxHxNxN: jax.Array, chunk_len: int, unroll: int | bool = 1) -> tuple[jax.Array, jax.Array]:
  """The same map as `wkv_scan`, in chunks of `chunk_len` tokens (any length: padded with tokens that leave the
  state unchanged). Within a chunk, with d_t the cumulative decay from its start (inclusive) and Sigma_0 its
  initial state, the removal read-outs h_i = alpha_i^T Sigma_{i-1} solve H = (I - L)^-1 (A~ Sigma_0 + L_k V)
  with A~ = alpha * d_{i-1}, L = tril_<(A~ (beta/d)^T), L_k = tril_<(A~ (k/d)^T); then
  Y = (r*d) Sigma_0 + tril_<=((r*d)(beta/d)^T) H + tril_<=((r*d)(k/d)^T) V and the chunk's end state is an
  affine map of Sigma_0, everything but the two N x N products of that map computed for all chunks at once."""
  batch, length, heads, size = r.shape
  chunk = min(chunk_len, length)
  pad = -length % chunk
  if pad:
    r, log_w, k, v, alpha, beta = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
                                   for x in (r, log_w, k, v, alpha, beta))
  count = (length + pad) // chunk

  def chunks(x):  # [B, L, H, N] -> [B, H, n, C, N]
    return x.reshape(batch, count, chunk, heads, size).transpose(0, 3, 1, 2, 4)

  r, log_w, k, v, alpha, beta = (chunks(x) for x in (r, log_w, k, v, alpha, beta))
  cum = jnp.cumsum(log_w, axis=-2)  # log d_t, inclusive.
  total = cum[..., -1:, :]  # log d_C.
  inv = jnp.exp(-cum)
  alpha_d = alpha * jnp.exp(cum - log_w)  # alpha_i * d_{i-1}
  r_d = r * jnp.exp(cum)
  beta_i, k_i = beta * inv, k * inv
  strict = jnp.tril(jnp.ones((chunk, chunk), bool), -1)
  inclusive = jnp.tril(jnp.ones((chunk, chunk), bool))
  mm = lambda a, b: jnp.einsum('...ik,...jk->...ij', a, b)  # pylint: disable=unnecessary-lambda-assignment
  l_ab = jnp.where(strict, mm(alpha_d, beta_i), 0.0)
  l_ak = jnp.where(strict, mm(alpha_d, k_i), 0.0)
  m_rb = jnp.where(inclusive, mm(r_d, beta_i), 0.0)
  m_rk = jnp.where(inclusive, mm(r_d, k_i), 0.0)
  t_inv = _unit_lower_inverse(jnp.eye(chunk, dtype=l_ab.dtype) - l_ab)
  p_CxN = t_inv @ alpha_d  # H = P Sigma_0 + Q
  q_CxN = t_inv @ (l_ak @ v)
  ry_CxN = r_d + m_rb @ p_CxN  # Y = Ry Sigma_0 + Y0
  y0_CxN = m_rb @ q_CxN + m_rk @ v
  to_end = jnp.exp(total - cum)  # d_C / d_i <= 1
  beta_end, k_end = beta * to_end, k * to_end
  g_NxN = jnp.exp(total)[..., 0, :, None] * jnp.eye(size, dtype=r.dtype) + jnp.einsum('...ck,...cn->...kn',
                                                                                      beta_end, p_CxN)
  u_NxN = jnp.einsum('...ck,...cn->...kn', beta_end, q_CxN) + jnp.einsum('...ck,...cn->...kn', k_end, v)

  def step(sigma, per_chunk):
    ry, y0, g, u = per_chunk
    return g @ sigma + u, ry @ sigma + y0

  per_chunk = tuple(jnp.moveaxis(x, 2, 0) for x in (ry_CxN, y0_CxN, g_NxN, u_NxN))
  sigma_BxHxNxN, y_nxBxHxCxN = jax.lax.scan(step, sigma_BxHxNxN, per_chunk, unroll=unroll)
  y_BxLxHxN = y_nxBxHxCxN.transpose(1, 0, 3, 2, 4).reshape(batch, count * chunk, heads, size)
  return y_BxLxHxN[:, :length], sigma_BxHxNxN


# ------------------------------------------------------------------------------------------------------ the layers
def _ramp(width: int, power: float) -> np.ndarray:
  """1 - (i / D)^power over the channels: the reference's token-shift mix initialisation."""
  return (1.0 - (np.arange(width) / width) ** power).astype(np.float32)


def _const(value: np.ndarray):
  return lambda key, shape, dtype=jnp.float32: jnp.asarray(value, dtype).reshape(shape)


def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _orthogonal(scale: float):
  """Orthogonal rows or columns, the reference's gain sqrt(rows / cols) when rows > cols, times `scale`."""
  def init(key, shape, dtype=jnp.float32):
    gain = math.sqrt(shape[0] / shape[1]) if shape[0] > shape[1] else 1.0
    return nn.initializers.orthogonal(gain * scale)(key, shape, dtype)
  return init


def _shift(x_BxLxD: jax.Array, prev_BxD: jax.Array) -> jax.Array:
  """x_{t-1} at every position: `prev` (the last token before this segment) first."""
  return jnp.concatenate([prev_BxD[:, None].astype(x_BxLxD.dtype), x_BxLxD[:, :-1]], axis=1)


class TimeMix(nn.Module):
  """The RWKV-7 time mix of layer `layer` (see the module docstring)."""
  config: Rwkv7Config
  layer: int

  def _lora(self, x: jax.Array, key: str, name: str, act=None) -> jax.Array:
    cfg, width = self.config, self.config.width
    rank = cfg.lora(key)
    down = self.param(f'{name}1', nn.initializers.zeros, (width, rank), jnp.float32)
    up = self.param(f'{name}2', _orthogonal(0.1), (rank, width), jnp.float32)
    h = x @ down.astype(x.dtype)
    if act is not None:
      h = act(h)
    return h @ up.astype(x.dtype)

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, prev_BxD: jax.Array, sigma_BxHxNxN: jax.Array,
               v_first_BxLxD: jax.Array | None, mask_BxL: jax.Array | None, unroll: int | bool
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Returns (output, v_first, the last input token (next token shift), the state after the segment)."""
    cfg = self.config
    dtype, width, heads, size = cfg.compute_dtype, cfg.width, cfg.heads, cfg.head
    batch, length = x_BxLxD.shape[:2]
    layers = max(cfg.num_layers, 2)
    ratio_0_to_1 = self.layer / (layers - 1)
    ratio_1_to_0 = 1.0 - self.layer / layers
    n = np.arange(width)
    linear = n / (width - 1) - 0.5 if width > 1 else np.zeros(width)
    zigzag = ((n % size) - (size - 1) / 2) / max((size - 1) / 2, 1e-9)
    zigzag = zigzag * np.abs(zigzag)
    decay_bias = -6 + 6 * (n / max(width - 1, 1)) ** (1 + ratio_0_to_1 ** 0.3) + 0.5 + 2.5 * zigzag

    if mask_BxL is not None:
      x_BxLxD = jnp.where(mask_BxL[..., None], x_BxLxD, 0)
    xx_BxLxD = _shift(x_BxLxD, prev_BxD) - x_BxLxD
    mixed = {}
    for name, power in (('r', 0.2), ('w', 0.9), ('k', 0.7), ('v', 0.7), ('a', 0.9), ('g', 0.2)):
      mu_D = self.param(f'x_{name}', _const(_ramp(width, power * ratio_1_to_0)), (width,), jnp.float32)
      mixed[name] = x_BxLxD + xx_BxLxD * mu_D.astype(dtype)

    def dense(name: str, gain: float) -> nn.Dense:  # The reference's init: orthogonal at `gain`, 0 = zeros.
      init = nn.initializers.orthogonal(gain) if gain else nn.initializers.zeros
      return nn.Dense(width, use_bias=False, dtype=dtype, kernel_init=init, name=name)

    r = dense('receptance', 1.0)(mixed['r'])
    k = dense('key', 0.1)(mixed['k'])
    v = dense('value', 1.0)(mixed['v'])
    w0 = self.param('w0', _const(decay_bias), (width,), jnp.float32)
    log_w = -_LOG_DECAY_SCALE * jax.nn.sigmoid(w0 + self._lora(mixed['w'], 'decay_lora', 'w', jnp.tanh)
                                               .astype(jnp.float32))
    if self.layer == 0:
      v_first_BxLxD = v
    else:
      v0 = self.param('v0', _const(0.73 - 0.4 * linear), (width,), jnp.float32)
      gate = jax.nn.sigmoid(v0 + self._lora(mixed['v'], 'value_lora', 'v').astype(jnp.float32)).astype(dtype)
      v = v + (v_first_BxLxD.astype(dtype) - v) * gate
    a0 = self.param('a0', _const(-0.19 + 0.3 * zigzag + 0.4 * linear), (width,), jnp.float32)
    a = jax.nn.sigmoid(a0 + self._lora(mixed['a'], 'iclr_lora', 'a').astype(jnp.float32))
    g = self._lora(mixed['g'], 'gate_lora', 'g', jax.nn.sigmoid)
    k_k = self.param('k_k', _const(0.71 - 0.1 * linear), (width,), jnp.float32)
    k_a = self.param('k_a', _const(np.full(width, 1.02)), (width,), jnp.float32)
    r_k = self.param('r_k', _const(np.full((heads, size), -0.04)), (heads, size), jnp.float32)

    heads_of = lambda x: x.astype(jnp.float32).reshape(batch, length, heads, size)  # pylint: disable=unnecessary-lambda-assignment
    kk = heads_of(k * k_k)  # Normalised per head (a zero vector, a masked token's, stays zero with a finite gradient).
    kk = kk * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(kk), axis=-1, keepdims=True), 1e-24))
    k = k.astype(jnp.float32) * (1 + (a - 1) * k_a)
    r_h, k_h, v_h, a_h, w_h = heads_of(r), heads_of(k), heads_of(v), heads_of(a), heads_of(log_w)
    alpha, beta = -kk, kk * a_h
    if mask_BxL is not None:  # A masked token (a prompt pad) leaves the state as it is: w = 1, nothing added.
      keep = mask_BxL[:, :, None, None]
      w_h, k_h, beta = jnp.where(keep, w_h, 0.0), jnp.where(keep, k_h, 0.0), jnp.where(keep, beta, 0.0)
    if length == 1:
      sigma_BxHxNxN, y = wkv_step(sigma_BxHxNxN, *(x[:, 0] for x in (r_h, w_h, k_h, v_h, alpha, beta)))
      y_BxLxHxN = y[:, None]
    elif cfg.wkv == 'scan':
      y_BxLxHxN, sigma_BxHxNxN = wkv_scan(r_h, w_h, k_h, v_h, alpha, beta, sigma_BxHxNxN, unroll)
    else:
      y_BxLxHxN, sigma_BxHxNxN = wkv_chunked(r_h, w_h, k_h, v_h, alpha, beta, sigma_BxHxNxN, cfg.chunk_len, unroll)

    mean = jnp.mean(y_BxLxHxN, axis=-1, keepdims=True)
    var = jnp.var(y_BxLxHxN, axis=-1, keepdims=True)
    y_BxLxHxN = (y_BxLxHxN - mean) * jax.lax.rsqrt(var + _GROUP_NORM_EPS)
    ln_scale = self.param('ln_x_scale', _const(np.full(width, ((self.layer + 1) / cfg.num_layers) ** 0.7)), (width,),
                          jnp.float32)
    ln_bias = self.param('ln_x_bias', nn.initializers.zeros, (width,), jnp.float32)
    y_BxLxD = y_BxLxHxN.reshape(batch, length, width) * ln_scale + ln_bias
    bonus_BxLxHx1 = jnp.sum(r_h * k_h * r_k, axis=-1, keepdims=True)
    y_BxLxD = y_BxLxD + (bonus_BxLxHx1 * v_h).reshape(batch, length, width)
    out_BxLxD = dense('output', 0.0)((y_BxLxD.astype(dtype) * g))
    return out_BxLxD, v_first_BxLxD, x_BxLxD[:, -1], sigma_BxHxNxN


class ChannelMix(nn.Module):
  """W_v relu(W_k x_k)^2 with a token shift (x_k = x + (x_{t-1} - x) * mu_k)."""
  config: Rwkv7Config
  layer: int

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, prev_BxD: jax.Array, mask_BxL: jax.Array | None
               ) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    dtype, width = cfg.compute_dtype, cfg.width
    if mask_BxL is not None:
      x_BxLxD = jnp.where(mask_BxL[..., None], x_BxLxD, 0)
    mu_D = self.param('x_k', _const(_ramp(width, (1.0 - self.layer / cfg.num_layers) ** 4)), (width,), jnp.float32)
    x_k = x_BxLxD + (_shift(x_BxLxD, prev_BxD) - x_BxLxD) * mu_D.astype(dtype)
    hidden = cfg.mlp_width('relu2')
    h = nn.Dense(hidden, use_bias=False, dtype=dtype, kernel_init=nn.initializers.orthogonal(1.0), name='key')(x_k)
    h = jnp.square(jax.nn.relu(h))
    out = nn.Dense(width, use_bias=False, dtype=dtype, kernel_init=nn.initializers.zeros, name='value')(h)
    return out, x_BxLxD[:, -1]


class Block(nn.Module):
  """x + TimeMix(LN(x)), then x + ChannelMix(LN(x)); block 0 also normalises the embeddings. `unroll`: of the chunk
  scan (an attribute, so static under rematerialisation)."""
  config: Rwkv7Config
  layer: int
  unroll: int | bool = 1

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, state: Pytree, v_first_BxLxD: jax.Array | None,
               mask_BxL: jax.Array | None) -> tuple[jax.Array, jax.Array, Pytree]:
    cfg = self.config
    norm = lambda name: nn.LayerNorm(epsilon=cfg.norm_eps, dtype=cfg.compute_dtype, name=name)  # pylint: disable=unnecessary-lambda-assignment
    if self.layer == 0:
      x_BxLxD = norm('ln0')(x_BxLxD)
    h, v_first_BxLxD, att_prev, sigma = TimeMix(cfg, self.layer, name='att')(
        norm('ln1')(x_BxLxD), state['att'], state['wkv'], v_first_BxLxD, mask_BxL, self.unroll)
    x_BxLxD = x_BxLxD + h
    h, ffn_prev = ChannelMix(cfg, self.layer, name='ffn')(norm('ln2')(x_BxLxD), state['ffn'], mask_BxL)
    return (x_BxLxD + h).astype(cfg.compute_dtype), v_first_BxLxD, dict(att=att_prev, ffn=ffn_prev, wkv=sigma)


def init_state(config: Rwkv7Config, batch: int) -> Cache:
  """The state before any token: per block, the two token-shift vectors [B, D] and the WKV state [B, H, N, N]."""
  zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
  return {f'block_{i}': dict(att=zeros(batch, config.width), ffn=zeros(batch, config.width),
                             wkv=zeros(batch, config.heads, config.head, config.head))
          for i in range(config.num_layers)}


class Rwkv7(nn.Module):
  """RWKV-7 causal LM over `vocab_size` tokens. `__call__` is the training forward (chunked WKV); `prefill` and
  `decode` run it with the recurrent state as the cache (models/generate.py): the cache is
  {'state': init_state(...)-shaped}, O(1) in the length."""
  config: Rwkv7Config
  vocab_size: int

  def __call__(self, tokens_BxL: jax.Array, *, mask_BxL: jax.Array | None = None, scan_unroll: int | bool = 1,
               state: Cache | None = None, return_state: bool = False) -> jax.Array | tuple[jax.Array, Cache]:
    """float32[B, L, V] next-token logits (and the state after the segment with `return_state`). `mask_BxL`
    False: a token that changes nothing (a left pad); `scan_unroll` unrolls the chunk scan (True: fully, so XLA's
    cost analysis counts every chunk)."""
    state = init_state(self.config, tokens_BxL.shape[0]) if state is None else state
    logits, state = self._run(tokens_BxL, mask_BxL, state, scan_unroll, False)
    return (logits, state) if return_state else logits

  def prefill(self, tokens_BxP: jax.Array, mask_BxP: jax.Array, *, max_len: int) -> tuple[jax.Array, Cache]:
    """Runs a LEFT-padded prompt; returns (float32[B, V] logits after its last token, cache). `max_len` is the
    generation's length, which the state does not depend on."""
    del max_len
    logits, state = self._run(tokens_BxP, mask_BxP.astype(bool), init_state(self.config, tokens_BxP.shape[0]), 1,
                              True)
    return logits[:, 0], {'state': state}

  def decode(self, tokens_B: jax.Array, cache: Cache, index: jax.Array) -> tuple[jax.Array, Cache]:
    """One token per example through one step of the recurrence; `index` (the cache slot of a KV cache) is not
    needed."""
    del index
    logits, state = self._run(tokens_B[:, None], None, cache['state'], 1, True)
    return logits[:, 0], {'state': state}

  @nn.compact
  def _run(self, tokens_BxL: jax.Array, mask_BxL: jax.Array | None, state: Cache, unroll: int | bool,
           last_only: bool) -> tuple[jax.Array, Cache]:
    cfg = self.config
    embed = self.param('embed', _uniform(1e-4), (self.vocab_size, cfg.width), jnp.float32)
    x_BxLxD = jnp.take(embed, tokens_BxL, axis=0).astype(cfg.compute_dtype)
    v_first_BxLxD, new_state = None, {}
    block_cls = remat.remat(Block, cfg.remat)
    for i in range(cfg.num_layers):
      name = f'block_{i}'
      x_BxLxD, v_first_BxLxD, new_state[name] = block_cls(cfg, i, unroll, name=name)(
          x_BxLxD, state[name], v_first_BxLxD, mask_BxL)
    if last_only:
      x_BxLxD = x_BxLxD[:, -1:]
    x_BxLxD = nn.LayerNorm(epsilon=cfg.norm_eps, dtype=cfg.compute_dtype, name='ln_out')(x_BxLxD)
    head_scale = 0.5 * math.sqrt(self.vocab_size / cfg.width) if self.vocab_size > cfg.width else 0.5
    logits = nn.Dense(self.vocab_size, use_bias=False, dtype=cfg.compute_dtype,
                      kernel_init=nn.initializers.orthogonal(head_scale), name='head')(x_BxLxD)
    return logits.astype(jnp.float32), new_state


registry.register('rwkv7', Rwkv7Config, family='causal_lm')(lambda config, dims: Rwkv7(config, dims.vocab_size))
