"""Auxiliary losses and statistics a model reports beside its output.

A module sows a term that the objective adds to its loss, already weighted (a router's load-balancing
loss), with `self.sow(LOSSES, name, value)`, and a scalar the training loop only logs (the largest
fraction of tokens any expert received) with `self.sow(STATS, name, value)`, and a per-token read-out
the objective regresses on a target of its own (a linear probe of the hidden state, Bai et al. 2025's
running sum) with `self.sow(PROBES, name, value_BxLxP)`. `apply_with_aux` runs the model with the three
collections mutable and returns its output with the sown values by name: a loss sown by several layers
is summed, a statistic averaged, a probe kept as it is (the first sown under its name). A model that sows nothing gives empty dicts,
and the objective's loss is then exactly what it was without them.
"""
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

LOSSES = 'aux_losses'
STATS = 'aux_stats'
PROBES = 'aux_probes'


@flax.struct.dataclass
class Aux:
  losses: dict[str, jax.Array]  # name -> scalar to add to the loss (summed over the layers that sowed it).
  stats: dict[str, jax.Array]  # name -> scalar to log (averaged over the layers that sowed it).
  probes: dict[str, jax.Array]  # name -> per-token read-out [B, L, P] for the objective to regress.

  def add_to(self, loss: jax.Array) -> jax.Array:
    """`loss` plus every auxiliary loss (the same array when there is none)."""
    for value in self.losses.values():
      loss = loss + value
    return loss

  def metrics(self) -> dict[str, jax.Array]:
    """Both, for the training metrics (logged by the loop)."""
    return {**self.losses, **self.stats}


def _by_name(collection: Any, reduce) -> dict[str, jax.Array]:
  """{sown name: reduce(every value sown under it, in any module)}."""
  values: dict[str, list[jax.Array]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(collection)[0]:
    name = next(str(k.key) for k in reversed(path) if isinstance(k, jax.tree_util.DictKey))
    values.setdefault(name, []).append(jnp.asarray(leaf, jnp.float32))
  return {name: reduce(jnp.stack(vs)) for name, vs in values.items()}


def apply_with_aux(model: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> tuple[Any, Aux]:
  """model.apply(variables, *args, **kwargs) and the auxiliary losses and statistics it sowed."""
  out, state = model.apply(variables, *args, mutable=[LOSSES, STATS, PROBES], **kwargs)
  probes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.get(PROBES, {}))[0]:
    name = next(str(k.key) for k in reversed(path) if isinstance(k, jax.tree_util.DictKey))
    probes.setdefault(name, leaf)
  return out, Aux(_by_name(state.get(LOSSES, {}), jnp.sum), _by_name(state.get(STATS, {}), jnp.mean), probes)
