"""Rematerialisation (gradient checkpointing) of a model's blocks by a named `jax.checkpoint` policy.

A rematerialised block keeps only what its policy saves of the forward pass for the backward pass and
recomputes the rest there: less activation memory for more compute. The parameters (names, tree, values)
and the results are those of the plain block, so a checkpoint of one loads into the other.

  'none'           no rematerialisation (every intermediate the backward pass needs is kept)
  'full'           save nothing inside a block: only its inputs are kept, the whole block is recomputed
  'dots'           save the results of matrix multiplications (projections and attention products)
  'dots_no_batch'  save those without batch dimensions only (the projections, not the attention products)
"""
from typing import Any

import flax.linen as nn
import jax

POLICIES: dict[str, Any] = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def remat(module_cls: type[nn.Module], policy_name: str) -> type[nn.Module]:
  """`module_cls` rematerialised under the policy `policy_name` (unchanged for 'none').

  Every positional argument of the module's call is traced (arrays, or None); `prevent_cse` keeps its default.
  """
  if policy_name not in POLICIES:
    raise ValueError(f'remat policy {policy_name!r} is not one of {list(POLICIES)}')
  if policy_name == 'none':
    return module_cls
  return nn.remat(module_cls, policy=POLICIES[policy_name])
