"""Recurrence over depth: a jax.lax.scan of a pure step function, outside linen.

Because the params do not depend on the depth, a model trained at depth D can
be evaluated at any other depth. `depth` is a Python int (static under jit):

  fn = jax.jit(models.unroll_fn(model, depth=16, detach=True))
  carry, out = fn(variables, tokens_BxL)
or
  jax.jit(models.unroll, static_argnums=(0, 3), static_argnames=('detach', ...))
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Pytree = Any


def unroll(model: nn.Module, variables: Pytree, tokens_BxL: jax.Array, depth: int, *,
           detach: bool = False, carry: Pytree | None = None,
           mask_BxL: jax.Array | None = None, positions_GxM: jax.Array | None = None,
           every_step: bool = True, remat: bool = False,
           scan_unroll: int | bool = 1,
           steps_B: jax.Array | None = None,
           dropout_rng: jax.Array | None = None) -> tuple[Pytree, dict[str, jax.Array]]:
  """Runs `depth` steps of `model` and reads out after each.

  Args:
    model: a models.recurrent model (encode / init_carry / step / readout).
    variables: its variables, as from `model.init(rng, tokens_BxL)`.
    tokens_BxL: int tokens.
    depth: number of steps (Python int >= 1).
    detach: stop gradients through the carry entering every step (TRM deep
      supervision: a loss on step t trains step t only). Also detaches `carry`.
    carry: continue from this carry instead of `init_carry` (TRM/ACT training,
      where samples persist across batches).
    mask_BxL: optional padding mask (1 = real token) for the attention models.
    positions_GxM: read out only these positions (logits f32[depth, G, M, C]); row g
      indexes group g of B/G consecutive sequences laid end to end (models/recurrent.py).
    every_step: False reads out only after the last step (outputs keep a
      leading axis of size 1); saves the head's compute and memory.
    remat: rematerialise each step in the backward pass (less memory).
    scan_unroll: passed to jax.lax.scan; True unrolls fully, which makes XLA's
      cost_analysis count every step (it counts a scan's body only once).
    steps_B: optional int[B]: sample b takes only its first steps_B[b] steps
      and keeps that carry afterwards (per-sample depth, e.g. warm starts).
    dropout_rng: turns on the model's dropout (model.dropout > 0) with this key, folded with
      the step; None (evaluation) runs without dropout.

  Returns:
    (final_carry, outputs) with outputs = dict(logits=f32[depth, B, L, C],
    halt_logit=f32[depth, B]).
  """
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
    raise ValueError(f'unroll: depth must be a Python int >= 1, got {depth!r}')
  cls = type(model)
  rngs = lambda t: {} if dropout_rng is None else {'rngs': {'dropout': jax.random.fold_in(dropout_rng, t)}}  # pylint: disable=unnecessary-lambda-assignment
  inputs = model.apply(variables, tokens_BxL, mask_BxL, method=cls.encode, **rngs(depth))
  if carry is None:
    carry = model.apply(variables, inputs, method=cls.init_carry)

  def readout(carry_now):
    return model.apply(variables, carry_now, positions_GxM, method=cls.readout)

  def body(carry_in, t):
    if detach:
      carry_in = jax.lax.stop_gradient(carry_in)
    carry_out = model.apply(variables, carry_in, inputs, method=cls.step, **rngs(t))
    if steps_B is not None:
      carry_out = reset_carry(carry_in, carry_out, t < steps_B)
    return carry_out, (readout(carry_out) if every_step else None)

  if remat:
    body = jax.checkpoint(body)
  final_carry, outputs = jax.lax.scan(body, carry, jnp.arange(depth), unroll=scan_unroll)
  if not every_step:
    outputs = jax.tree.map(lambda a: a[None], readout(final_carry))
  return final_carry, outputs


def unroll_fn(model: nn.Module, depth: int, **options: Any) -> Callable[..., Any]:
  """`unroll` with model, depth and options bound: fn(variables, tokens_BxL, **kw), jit-ready."""
  return functools.partial(unroll, model, depth=depth, **options)


def reset_carry(carry: Pytree, fresh_carry: Pytree, reset_B: jax.Array) -> Pytree:
  """Per sample, `fresh_carry` where reset_B is True, else `carry` (ACT: halted samples restart)."""
  def pick(old, new):
    where_B = reset_B.reshape(reset_B.shape + (1,) * (old.ndim - 1))
    return jnp.where(where_B, new, old)
  return jax.tree.map(pick, carry, fresh_carry)
