"""Training and inference FLOPs as XLA counts them (cost analysis of the compiled program).

XLA counts the body of a loop once, so callers compile the program they count with every scan
over depth unrolled; the runs themselves keep the loop. A train step is compiled for one device
and the whole global batch: the cost analysis of a program partitioned over N devices counts one
device's share, which would make a run on N devices train N times its FLOP budget.
"""
import copy
from typing import Any

import jax
import ml_collections
import numpy as np

import models
from train import loop
from train import optim
from train import sharding


def train_step_flops(config: ml_collections.ConfigDict, model: Any, objective: loop.Objective) -> tuple[float, int]:
  """(FLOPs of one optimizer step of `objective`, built with its depth scans unrolled; parameter count)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.train.steps = max(int(config.train.steps), 1000)  # Any value: FLOPs do not depend on the schedule.
  one_device = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
  tx, schedule = optim.make_optimizer(config.train)
  abstract_state = _abstract_state(config, model, objective, tx, one_device)
  global_batch = objective.train_batch(0, int(config.train.batch_size), 0, 1)
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in global_batch.items()}
  step_fn = loop.jit_train_step(objective, tx, schedule, config, one_device)
  return compiled_flops(step_fn, abstract_state, abstract_batch), models.count_params(abstract_state.params)


def param_count(config: ml_collections.ConfigDict, model: Any, objective: loop.Objective) -> int:
  """Parameters of a run's state (shapes only, nothing computed)."""
  one_device = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
  tx, _ = optim.make_optimizer(config.train)
  return models.count_params(_abstract_state(config, model, objective, tx, one_device).params)


def _abstract_state(config: ml_collections.ConfigDict, model: Any, objective: loop.Objective, tx: Any,
                    mesh: jax.sharding.Mesh) -> Any:
  return jax.eval_shape(lambda: loop.init_state(model, objective, config, tx, mesh))


def compiled_flops(jitted_fn: Any, *args: Any) -> float:
  """FLOPs of one call of `jitted_fn(*args)` from XLA's cost analysis of the compiled program."""
  analysis = jitted_fn.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


def function_flops(fn: Any, *args: Any, **static: Any) -> float:
  """FLOPs of one call fn(*args, **static) (args may be ShapeDtypeStructs; `static` are compile-time)."""
  return compiled_flops(jax.jit(lambda *a: fn(*a, **static)), *args)


def steps_for_budget(budget: float, flops_per_step: float) -> int:
  """Optimizer steps that spend `budget` FLOPs (at least one)."""
  return max(1, int(round(budget / flops_per_step)))
