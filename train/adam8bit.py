"""8-bit Adam (Dettmers et al. 2022, arXiv 2110.02861): AdamW whose moments are kept block-wise quantised to one
byte each, as an optax GradientTransformation (optax has none).

Each moment tensor is cut into blocks of `block_size` values; a block keeps its largest magnitude (float32) and
every value as the index of the nearest of 256 codes of a *dynamic* map: codes spread over seven decades
(10^-6 .. 1) with more codes per decade at larger magnitudes, so small and large values of a block both keep
about two significant digits. The first moment uses a signed map, the second (never negative) an unsigned one
with twice the resolution. Each step dequantises, applies Adam's update in float32 and quantises again. Tensors
smaller than `min_size` values (norm scales, biases) keep float32 moments, as in the paper.

State per parameter: 2 bytes (+ 8 bytes per block) instead of 8 for float32 Adam.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging


def dynamic_map(signed: bool) -> np.ndarray:
  """The 256 sorted codes in [-1, 1] (signed) or [0, 1]: 0, 1, and per decade 10^-(6-i) the midpoints of a linear
  grid over (0.1, 1] whose size doubles from one decade to the next (signed: negated too)."""
  codes = [0.0, 1.0]
  budget = 254 if not signed else 127  # Codes beside 0 and 1 (signed: each also negated; -1 is -0.993).
  decades = 7
  sizes = [2 ** i for i in range(decades)]  # 1, 2, ..., 64: 127 fractions in all.
  if not signed:
    sizes = [2 * s for s in sizes]  # 254.
  assert sum(sizes) == budget
  for i, n in enumerate(sizes):
    edges = np.linspace(0.1, 1.0, n + 1)
    fractions = (edges[:-1] + edges[1:]) / 2
    magnitudes = 10.0 ** (i - (decades - 1)) * fractions
    codes += magnitudes.tolist()
    if signed:
      codes += (-magnitudes).tolist()
  out = np.array(sorted(codes), np.float32)
  assert out.size == 256, out.size
  return out


_SIGNED, _UNSIGNED = dynamic_map(True), dynamic_map(False)


class Quantized(NamedTuple):
  codes: jax.Array  # uint8[blocks, block_size]: indices into the map.
  absmax: jax.Array  # float32[blocks]: each block's largest magnitude.


def quantize(x: jax.Array, block_size: int, signed: bool) -> Quantized:
  """x (any shape) as blocks of codes of the dynamic map, scaled by each block's absmax."""
  table = jnp.asarray(_SIGNED if signed else _UNSIGNED)
  flat = x.reshape(-1).astype(jnp.float32)
  pad = (-flat.size) % block_size
  blocks = jnp.pad(flat, (0, pad)).reshape(-1, block_size)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  scaled = blocks / jnp.where(absmax > 0, absmax, 1.0)[:, None]
  midpoints = (table[1:] + table[:-1]) / 2
  codes = jnp.searchsorted(midpoints, scaled).astype(jnp.uint8)  # The nearest code.
  return Quantized(codes, absmax)


def dequantize(q: Quantized, shape: tuple[int, ...], signed: bool) -> jax.Array:
  table = jnp.asarray(_SIGNED if signed else _UNSIGNED)
  values = table[q.codes.astype(jnp.int32)] * q.absmax[:, None]
  return values.reshape(-1)[:int(np.prod(shape))].reshape(shape)


class Adam8bitState(NamedTuple):
  count: jax.Array
  mu: Any  # Per parameter: Quantized, or a float32 array for small tensors.
  nu: Any


def scale_by_adam_8bit(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, block_size: int = 2048,
                       min_size: int = 4096) -> optax.GradientTransformation:
  """Adam's scaling (optax.scale_by_adam) with block-wise 8-bit moments."""
  small = lambda p: p.size < min_size  # pylint: disable=unnecessary-lambda-assignment
  noted = []  # The float32 fallback is logged at the first init of this optimizer only.

  def init_fn(params):
    fallback = [p.size for p in jax.tree.leaves(params) if small(p)]
    if fallback and not noted:
      noted.append(True)
      logging.info('adamw_8bit: %d of %d parameter tensors (%s values) have fewer than min_size=%d values and '
                   'keep float32 moments', len(fallback), len(jax.tree.leaves(params)), f'{sum(fallback):,}',
                   min_size)

    def zeros(p, signed):
      return jnp.zeros(p.shape, jnp.float32) if small(p) else quantize(jnp.zeros(p.shape), block_size, signed)
    return Adam8bitState(jnp.zeros((), jnp.int32), jax.tree.map(lambda p: zeros(p, True), params),
                         jax.tree.map(lambda p: zeros(p, False), params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    leaves, treedef = jax.tree.flatten(updates)
    mus = treedef.flatten_up_to(state.mu)
    nus = treedef.flatten_up_to(state.nu)
    out, new_mu, new_nu = [], [], []
    for g, mu, nu in zip(leaves, mus, nus):
      g = g.astype(jnp.float32)
      m_prev = mu if small(g) else dequantize(mu, g.shape, True)
      v_prev = nu if small(g) else dequantize(nu, g.shape, False)
      m = b1 * m_prev + (1 - b1) * g
      v = b2 * v_prev + (1 - b2) * g * g
      m_hat = m / (1 - b1 ** count.astype(jnp.float32))
      v_hat = v / (1 - b2 ** count.astype(jnp.float32))
      out.append(m_hat / (jnp.sqrt(v_hat) + eps))
      new_mu.append(m if small(g) else quantize(m, block_size, True))
      new_nu.append(v if small(g) else quantize(v, block_size, False))
    return (jax.tree.unflatten(treedef, out),
            Adam8bitState(count, jax.tree.unflatten(treedef, new_mu), jax.tree.unflatten(treedef, new_nu)))

  return optax.GradientTransformation(init_fn, update_fn)


def adamw_8bit(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 1e-4, mask: Any = None, block_size: int = 2048,
               min_size: int = 4096) -> optax.GradientTransformation:
  """optax.adamw with 8-bit moments: the same update up to the moments' quantisation."""
  return optax.chain(scale_by_adam_8bit(b1, b2, eps, block_size, min_size),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))
