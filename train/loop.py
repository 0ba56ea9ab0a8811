"""The task-agnostic training loop: pure jitted train_step, resume, progress, eval, checkpoints."""
import dataclasses
import math
import pathlib
import time
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from train import checkpoint as ckpt_lib
from train import optim
from train import progress as progress_lib
from train import sharding
from train.state import TrainState, create_train_state, eval_params

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, Metrics]]


class Task(Protocol):
  """What the loop needs from a task (Sudoku, MLM, ...)."""

  def example_inputs(self) -> np.ndarray:
    """A small batch of model inputs, for parameter init."""

  def loss_fn(self, params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics]:
    """Pure: scalar loss and metrics (scalars) of one batch."""

  def train_batch(self, step: int, batch_size: int, process_index: int,
                  process_count: int) -> dict[str, np.ndarray]:
    """This process's slice of batch `step`; a pure function of the step (exact resume)."""

  def validate(self, params: Any, step: int) -> tuple[float, dict[str, float]]:
    """Score (higher is better, picks the best checkpoint) and metrics on validation data."""


class StatefulTask(Task, Protocol):
  """A task that carries state across train steps (e.g. TRM's samples in flight).

  Its loss_fn is `loss_fn(params, batch, rng, task_state) -> (loss, (metrics, task_state))`;
  the task state lives in TrainState, so it is checkpointed and a resumed run continues exactly.
  """

  def init_task_state(self, params: Any, global_batch: int) -> Any:
    """The task state before step 0 (traced under jit)."""


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, ema_decay: float,
                    stateful: bool = False) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Builds the pure `train_step(state, batch) -> (state, metrics)` (see StatefulTask)."""

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(state.rng, state.step)
    task_state = state.task_state
    if stateful:
      (loss, (metrics, task_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, batch, rng, state.task_state)
    else:
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                              task_state=task_state)
    return new_state, metrics

  return train_step


def jit_train_step(task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule,
                   config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """The jitted train step: state replicated and donated, batch sharded on 'data'."""
  replicated = sharding.replicated(mesh)
  return jax.jit(
      make_train_step(task.loss_fn, tx, schedule, float(config.train.ema_decay), is_stateful(task)),
      in_shardings=(replicated, sharding.batch_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))


def is_stateful(task: Task) -> bool:
  return hasattr(task, 'init_task_state')


def compiled_flops(jitted_fn, *args) -> float:
  """FLOPs of one call of `jitted_fn(*args)` from XLA's cost analysis of the compiled program."""
  analysis = jitted_fn.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  checkpoints: ckpt_lib.Checkpoints
  mesh: jax.sharding.Mesh
  restored_step: int | None  # Step restored from the workdir, None for a fresh run.
  train_seconds: float


def init_state(model: nn.Module, task: Task, config: ml_collections.ConfigDict,
               tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises params and optimizer state, replicated over the mesh."""
  inputs = jnp.asarray(task.example_inputs())

  def init_fn(rng):
    params = model.init(rng, inputs)['params']
    task_state = task.init_task_state(params, int(config.train.batch_size)) if is_stateful(task) else None
    return create_train_state(params, tx, config.seed, use_ema=float(config.train.ema_decay) > 0,
                              task_state=task_state)

  return jax.jit(init_fn, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, model: nn.Module,
          task: Task) -> TrainResult:
  """Trains (or resumes) `model` on `task` for config.train.steps; saves checkpoints in workdir."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tcfg = config.train
  mesh = sharding.make_mesh()
  sharding.check_batch_size(int(tcfg.batch_size), mesh)
  tx, schedule = optim.make_optimizer(tcfg)
  state = init_state(model, task, config, tx, mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  logging.info('model %s: %s parameters, mesh %s', config.model.name, f'{n_params:,}', dict(mesh.shape))

  checkpoints = ckpt_lib.Checkpoints(workdir, keep=int(tcfg.keep_checkpoints))
  restored = checkpoints.restore(state)
  restored_step = None
  if restored is not None:
    state, record = restored
    restored_step = int(jax.device_get(state.step))
    msg = f'restored step {restored_step} from {checkpoints.latest_dir}; resuming'
    logging.info(msg)
    print(msg, flush=True)
    train_seconds = float(record.get('train_seconds', 0.0))
  else:
    train_seconds = 0.0

  total = int(tcfg.steps)
  start = int(jax.device_get(state.step))
  step_fn = jit_train_step(task, tx, schedule, config, mesh)
  log = progress_lib.MetricsLog(workdir / 'metrics.jsonl')
  bar = progress_lib.Progress(total, start, prefix=f'{config.model.name} ')
  eval_every, ckpt_every, log_every = int(tcfg.eval_every), int(tcfg.checkpoint_every), max(int(tcfg.log_every), 1)

  def record_of(step: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(step=step, train_seconds=train_seconds, model=config.model.name, **(extra or {}))

  def check_finite(step: int, metrics: dict[str, float]) -> None:
    if not math.isfinite(metrics['loss']):
      checkpoints.wait()  # Let the last good checkpoint finish writing.
      last = checkpoints.latest_step()
      raise NonFiniteLossError(
          f'loss is {metrics["loss"]} at step {step}; stopped without saving. The last good '
          f'checkpoint (step {last}) is kept in {checkpoints.latest_dir}. Lower train.lr or raise '
          f'train.warmup_steps, or set train.grad_clip.')

  pending: tuple[int, Metrics] | None = None  # Metrics of the step before the one in flight.
  window: list[dict[str, float]] = []

  def drain() -> None:
    """Fetches the pending metrics (one step behind the device), logs them."""
    nonlocal pending
    if pending is None:
      return
    done_step, device_metrics = pending
    pending = None
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    check_finite(done_step, metrics)
    window.append(metrics)
    if done_step % log_every == 0 or done_step == total:
      mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
      window.clear()
      shown = {k: mean[k] for k in ('loss', 'acc', 'exact') if k in mean}
      bar.update(done_step, shown)
      log.write(dict(step=done_step, kind='train', steps_per_sec=bar.rate, **mean))

  t0 = time.perf_counter()
  step = start
  try:
    for step in range(start, total):
      local = task.train_batch(step, int(tcfg.batch_size), jax.process_index(), jax.process_count())
      state, metrics = step_fn(state, sharding.put_batch(local, mesh))
      drain()  # Step t-1's metrics, fetched while step t runs.
      pending = (step + 1, metrics)
      done = step + 1
      is_last = done == total
      if (eval_every and done % eval_every == 0) or (ckpt_every and done % ckpt_every == 0) or is_last:
        drain()
        train_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        if (ckpt_every and done % ckpt_every == 0) or is_last:
          checkpoints.save(state, record_of(done))
        if (eval_every and done % eval_every == 0) or is_last:
          bar.newline()
          score, val = task.validate(eval_params(state), done)
          log.write(dict(step=done, kind='val', score=score, **val))
          if checkpoints.save_if_best(state, score, record_of(done, dict(val))):
            logging.info('step %d: new best validation score %.4f', done, score)
        t0 = time.perf_counter()
        bar.restart_clock(done)
  except KeyboardInterrupt:
    drain()
    bar.newline()
    train_seconds += time.perf_counter() - t0
    checkpoints.save(state, record_of(int(jax.device_get(state.step))))
    checkpoints.wait()
    print(f'interrupted: saved step {int(jax.device_get(state.step))}; rerun the same command to resume',
          flush=True)
    raise
  drain()
  checkpoints.wait()
  return TrainResult(state, checkpoints, mesh, restored_step, train_seconds)
