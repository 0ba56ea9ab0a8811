"""AdamW whose first and second moments are both stored in a low-precision dtype (bfloat16), as an optax
GradientTransformation: optax.adamw's `mu_dtype` covers the first moment only.

Each step reads the stored moments, applies Adam's update in float32 and stores them again: the first moment
rounded to nearest (as optax's mu_dtype), the second *stochastically* rounded. Round-to-nearest would stall
the second moment: bfloat16 keeps 8 significant bits, so with 1 - b2 below about 2^-8 (b2 = 0.999) a step's
change b2 * nu + (1 - b2) * g^2 - nu is under half a unit in the last place unless g^2 is several times nu, and
nu would never decay. Rounding up with probability equal to the discarded fraction keeps it unbiased. The
random bits are a function of the step count and the parameter's place in the tree, so a resumed run repeats
the same steps.

State per parameter: 4 bytes (2 + 2) instead of 8 for float32 Adam.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax


def stochastic_round(x_f32: jax.Array, key: jax.Array, dtype: Any = jnp.bfloat16) -> jax.Array:
  """float32 `x_f32` in bfloat16, rounded away from zero with probability equal to the discarded fraction."""
  if jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
    return x_f32.astype(dtype)
  bits = jax.lax.bitcast_convert_type(x_f32.astype(jnp.float32), jnp.uint32)
  noise = jax.random.bits(key, x_f32.shape, jnp.uint32) & jnp.uint32(0xFFFF)  # The 16 bits bfloat16 drops.
  rounded = (bits + noise) & jnp.uint32(0xFFFF0000)
  return jax.lax.bitcast_convert_type(rounded, jnp.float32).astype(jnp.bfloat16)  # Exact: low bits are zero.


def scale_by_adam_lowp(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                       dtype: Any = jnp.bfloat16, seed: int = 0) -> optax.GradientTransformation:
  """optax.scale_by_adam with both moments stored in `dtype` (computed in float32); optax.ScaleByAdamState."""

  def init_fn(params):
    zeros = lambda p: jnp.zeros(p.shape, dtype)  # pylint: disable=unnecessary-lambda-assignment
    return optax.ScaleByAdamState(jnp.zeros((), jnp.int32), jax.tree.map(zeros, params),
                                  jax.tree.map(zeros, params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    step_key = jax.random.fold_in(jax.random.PRNGKey(seed), count)
    leaves, treedef = jax.tree.flatten(updates)
    mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
    correction1 = 1 - b1 ** count.astype(jnp.float32)
    correction2 = 1 - b2 ** count.astype(jnp.float32)
    out, new_mu, new_nu = [], [], []
    for i, (g, mu, nu) in enumerate(zip(leaves, mus, nus)):
      g = g.astype(jnp.float32)
      m = b1 * mu.astype(jnp.float32) + (1 - b1) * g
      v = b2 * nu.astype(jnp.float32) + (1 - b2) * g * g
      out.append((m / correction1) / (jnp.sqrt(v / correction2) + eps))
      new_mu.append(m.astype(dtype))
      new_nu.append(stochastic_round(v, jax.random.fold_in(step_key, i), dtype))
    return (jax.tree.unflatten(treedef, out),
            optax.ScaleByAdamState(count, jax.tree.unflatten(treedef, new_mu), jax.tree.unflatten(treedef, new_nu)))

  return optax.GradientTransformation(init_fn, update_fn)


def adamw_lowp(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 1e-4, mask: Any = None, dtype: Any = jnp.bfloat16
               ) -> optax.GradientTransformation:
  """optax.adamw with both moments stored in `dtype`: the same update up to the moments' rounding."""
  return optax.chain(scale_by_adam_lowp(b1, b2, eps, dtype),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))
