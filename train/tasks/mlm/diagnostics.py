"""What shows why a recursive model learns or stays at the no-context level, measured on one train batch.

  grad_norm[group]    norm of the loss's gradient in each top-level parameter group
                      (embed, block_0, ..., head): does the signal reach the embeddings and the first block?
  change[t][state]    per application of the network in supervision step t, how much it moves the state:
                      ||new - old|| / ||old|| (TRM: z after each latent update, y after each cycle, from the
                      model's sown 'intermediates'; other models: the whole carry after the step).
  loss_by_step        the loss of the batch read out after each supervision step.

`eval.diagnostics=True` records them at initialisation and after training in a run's result.json.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

Batch = dict[str, np.ndarray]


def _relative_change(old: jax.Array, new: jax.Array) -> jax.Array:
  old_norm = jnp.linalg.norm(old.astype(jnp.float32))
  delta = jnp.linalg.norm((new - old).astype(jnp.float32))
  return jnp.where(old_norm > 0, delta / jnp.maximum(old_norm, 1e-30), jnp.nan)


def _state_changes(model: nn.Module, params: Any, tokens_BxL: jax.Array, depth: int) -> list[dict[str, Any]]:
  """Per supervision step: the relative change made by each application, per state."""
  cls = type(model)
  variables = {'params': params}
  inputs = model.apply(variables, tokens_BxL, method=cls.encode)
  carry = model.apply(variables, inputs, method=cls.init_carry)
  steps = []
  for _ in range(depth):
    new_carry, state = model.apply(variables, carry, inputs, method=cls.step, mutable=['intermediates'])
    sown = state.get('intermediates', {})
    changes = {}
    if sown:  # The model sowed every application's output, in order, per state.
      for name, outputs in sown.items():
        previous = carry[name]
        changes[name] = []
        for output in outputs:
          changes[name].append(_relative_change(previous, output))
          previous = output
    else:
      changes = {name: [_relative_change(carry[name], new_carry[name])] for name in carry}
    steps.append(changes)
    carry = new_carry
  return steps


@functools.partial(jax.jit, static_argnames=('model', 'loss_fn', 'depth'))
def _measure(params: Any, batch: dict[str, jax.Array], *, model: nn.Module, loss_fn, depth: int):
  grads = jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0))[0])(params)
  grad_norm = {name: optax.tree.norm(g) for name, g in grads.items()}
  return grad_norm, _state_changes(model, params, batch['tokens'], depth)


def diagnose(model: nn.Module, params: Any, batch: Batch, loss_fn, depth: int,
             step_loss_fn=None) -> dict[str, Any]:
  """The measurements above as plain floats. `loss_fn(params, batch, rng) -> (loss, metrics)` is the training
  loss; `step_loss_fn(params, batch) -> f32[depth]` (optional) the loss after each supervision step."""
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  grad_norm, steps = jax.device_get(_measure(params, batch, model=model, loss_fn=loss_fn, depth=depth))
  result = dict(grad_norm={k: float(v) for k, v in grad_norm.items()},
                change=[{k: [float(x) for x in v] for k, v in s.items()} for s in steps])
  if step_loss_fn is not None:
    result['loss_by_step'] = [float(x) for x in jax.device_get(step_loss_fn(params, batch))]
  return result


def summary_line(diag: dict[str, Any]) -> str:
  """One line: gradient norms of the embeddings, first block and head; the mean change per state in the
  last supervision step."""
  g = diag['grad_norm']
  parts = [f'|g| {k} {g[k]:.3g}' for k in ('embed', 'block_0', 'head') if k in g]
  for name, values in diag['change'][-1].items():
    parts.append(f'd{name} {np.nanmean(values):.3g}')
  if 'loss_by_step' in diag:
    parts.append('loss by step ' + ' '.join(f'{x:.3f}' for x in diag['loss_by_step']))
  return ', '.join(parts)
