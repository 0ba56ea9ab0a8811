"""The train state: a plain pytree of arrays (step, params, optimizer state, EMA, RNG)."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is the step)."""
  step: jax.Array  # int32 scalar: optimizer steps taken.
  params: Any  # Model parameters (float32 pytree).
  opt_state: optax.OptState  # Optimizer state.
  ema_params: Any  # EMA of params (same tree as params), or None when EMA is off.
  rng: jax.Array  # uint32[2] raw PRNG key; folded with the step for per-step randomness.
  task_state: Any = None  # State a task carries across steps (TRM/ACT: carries and puzzles in flight).


def create_train_state(params: Any, tx: optax.GradientTransformation, seed: int,
                       use_ema: bool, task_state: Any = None) -> TrainState:
  """Builds the initial state from freshly initialised params."""
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
      rng=jax.random.PRNGKey(seed + 1),
      task_state=task_state,
  )


def eval_params(state: TrainState) -> Any:
  """Params used for evaluation: the EMA when it is kept, else the raw params."""
  return state.ema_params if state.ema_params is not None else state.params
