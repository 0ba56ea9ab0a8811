"""The task-agnostic training loop: pure jitted train_step, resume, progress, scheduled evaluations, checkpoints.

The core (train/run.py) hands the loop a task's `Objective` (loss, batches, example inputs) and the
evaluations to run during training (`Scheduled`, each with its own cadence); the loop prints and
logs whatever figures they return. It names no task metric and no model field.
"""
import dataclasses
import math
import pathlib
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

import models
from models import lora as lora_lib

from train import checkpoint as ckpt_lib
from train import metrics as metrics_lib
from train import optim
from train import progress as progress_lib
from train import sharding
from train.errors import ConfigError, Interrupted, NonFiniteLossError
from train.state import TrainState, create_train_state, eval_params

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass
class Objective:
  """What a task trains: a pure loss and a pure function of the step giving its batch.

  loss_fn(params, batch, rng) -> (loss, metrics); with `init_task_state` it is
  loss_fn(params, batch, rng, task_state) -> (loss, (metrics, task_state)), the task
  state living in TrainState (checkpointed, so a resumed run continues exactly).
  """
  loss_fn: Callable[..., Any]
  # train_batch(step, batch_size, process_index, process_count): this process's slice of batch `step`.
  train_batch: Callable[[int, int, int, int], dict[str, np.ndarray]]
  # A small batch of model inputs, for parameter init: an array, or a dict of keyword inputs.
  example_inputs: np.ndarray | dict[str, np.ndarray]
  init_task_state: Callable[[Any, int], Any] | None = None  # (params, global_batch) -> state before step 0.
  progress_metrics: tuple[str, ...] = ('loss',)  # Shown on the progress line (all are logged).
  # reset_optimizer_at(step): the optimizer's moments restart before this step (the lr schedule goes on), e.g.
  # at each stage of a curriculum (stepwise internalisation of a chain of thought). A pure function of the step.
  reset_optimizer_at: Callable[[int], bool] | None = None


@dataclasses.dataclass
class Scheduled:
  """Figures of the eval params, every `every` steps (0: at the end only) and after the last step.

  fn(params, step) -> {name: figure}; scalars are printed and logged. With `select`, the
  figure of that name (higher is better) keeps the best checkpoint in best/.
  """
  name: str
  fn: Callable[[Any, int], dict[str, Any]]
  every: int = 0
  select: str = ''

  def due(self, step: int, total: int) -> bool:
    return step == total or (self.every > 0 and step % self.every == 0)


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  checkpoints: ckpt_lib.Checkpoints
  mesh: jax.sharding.Mesh
  restored_step: int | None  # Step restored from the run directory, None for a fresh run.
  train_seconds: float
  evaluations: dict[str, tuple[int, dict[str, Any]]]  # Scheduled name -> (step, figures) of its last call.


def make_train_step(loss_fn, tx: optax.GradientTransformation, schedule: optax.Schedule, ema_decay: float,
                    stateful: bool = False) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Builds the pure `train_step(state, batch) -> (state, metrics)` (see Objective)."""

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


def jit_train_step(objective: Objective, tx: optax.GradientTransformation, schedule: optax.Schedule,
                   config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """The jitted train step: state replicated and donated, batch sharded on 'data'."""
  replicated = sharding.replicated(mesh)
  loss_fn = objective.loss_fn
  if optim.lora_of(config.train) is not None:  # The loss of the model with the adapters merged in.
    loss_fn = lambda params, *args: objective.loss_fn(optim.model_params(params, config.train), *args)  # pylint: disable=unnecessary-lambda-assignment
  step = make_train_step(loss_fn, tx, schedule, float(config.train.ema_decay),
                         objective.init_task_state is not None)
  return jax.jit(step, in_shardings=(replicated, sharding.batch_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def init_state(model: nn.Module, objective: Objective, config: ml_collections.ConfigDict,
               tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises params and optimizer state, replicated over the mesh."""
  examples = objective.example_inputs

  def init_fn(rng):
    if isinstance(examples, dict):  # Keyword inputs, e.g. tokens and their positions.
      params = model.init(rng, **{k: jnp.asarray(v) for k, v in examples.items()})['params']
    else:
      params = model.init(rng, jnp.asarray(examples))['params']
    task_state = (objective.init_task_state(params, int(config.train.batch_size))
                  if objective.init_task_state is not None else None)
    lora = optim.lora_of(config.train)
    if lora is not None:  # Adapters beside the model's own tree (models/lora.py).
      params = {'base': params, 'lora': lora_lib.init(params, lora, jax.random.fold_in(rng, 1))}
    return create_train_state(params, tx, config.seed, use_ema=float(config.train.ema_decay) > 0,
                              task_state=task_state)

  return jax.jit(init_fn, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))


class _StopSignals:
  """Turns SIGINT/SIGTERM into a request that the loop honours between steps (never mid-step,
  where the donated state would be half gone). A second signal interrupts at once."""

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self) -> '_StopSignals':
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    if self.received is not None:  # Second signal: stop now.
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name

  def restore(self) -> None:
    """Puts the previous handlers back (a further signal then acts as it would without the loop)."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def __exit__(self, *exc) -> None:
    self.restore()


def start_from(state: TrainState, params: Any, objective: Objective, config: ml_collections.ConfigDict,
               tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> TrainState:
  """A fresh state holding `params` (pretrained weights) instead of the random init; their tree must be the
  model's, shape for shape (ConfigError naming the first parameter that differs)."""
  lora = optim.lora_of(config.train)
  model_tree = state.params['base'] if lora is not None else state.params
  want = dict(jax.tree_util.tree_flatten_with_path(jax.tree.map(jnp.shape, model_tree))[0])
  have = dict(jax.tree_util.tree_flatten_with_path(jax.tree.map(np.shape, params))[0])
  name = lambda path: '/'.join(str(getattr(k, 'key', k)) for k in path)  # pylint: disable=unnecessary-lambda-assignment
  for path in sorted(set(want) | set(have), key=name):
    if want.get(path) != have.get(path):
      raise ConfigError(f'train.init_from: parameter {name(path)} is {have.get(path, "missing")} in the checkpoint, '
                        f'the model needs {want.get(path, "none")}')

  def build(params_):
    task_state = (objective.init_task_state(params_, int(config.train.batch_size))
                  if objective.init_task_state is not None else None)
    if lora is not None:
      params_ = {'base': params_, 'lora': state.params['lora']}
    return create_train_state(params_, tx, config.seed, use_ema=float(config.train.ema_decay) > 0,
                              task_state=task_state)

  return jax.jit(build, out_shardings=sharding.replicated(mesh))(jax.tree.map(jnp.asarray, params))


def train(config: ml_collections.ConfigDict, run_dir: str | pathlib.Path, model: nn.Module,
          objective: Objective, evaluations: list[Scheduled] = (), label: str = '',
          initial_params: Callable[[], Any] | None = None) -> TrainResult:
  """Trains (or resumes) `model` on `objective` for config.train.steps; checkpoints in run_dir. A run that
  starts (no checkpoint yet) from `initial_params()` where given (pretrained weights), else from the init."""
  run_dir = pathlib.Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  tcfg = config.train
  mesh = sharding.make_mesh()
  sharding.check_batch_size(int(tcfg.batch_size), mesh)
  tx, schedule = optim.make_optimizer(tcfg)
  state = init_state(model, objective, config, tx, mesh)
  logging.info('%s: %s parameters, mesh %s', label or 'model', f'{models.count_params(state.params):,}',
               dict(mesh.shape))

  checkpoints = ckpt_lib.Checkpoints(run_dir, keep=int(tcfg.keep_checkpoints))
  restored = checkpoints.restore(state)
  restored_step, train_seconds = None, 0.0
  if restored is not None:
    state, record = restored
    restored_step = int(jax.device_get(state.step))
    print(f'restored step {restored_step} from {checkpoints.latest_dir}; resuming', flush=True)
    train_seconds = float(record.get('train_seconds', 0.0))
  else:
    if checkpoints.latest_step('best') is not None:
      checkpoints.discard_best('no latest checkpoint is left, so the run starts from step 0')
    if initial_params is not None:
      state = start_from(state, initial_params(), objective, config, tx, mesh)

  total = int(tcfg.steps)
  if total < 1:
    raise ConfigError(f'train.steps={total} must be >= 1')
  start = int(jax.device_get(state.step))
  step_fn = jit_train_step(objective, tx, schedule, config, mesh)
  reset_fn = (jax.jit(lambda s: s.replace(opt_state=optim.fresh_moments(tx, s.opt_state, s.params)),
                      in_shardings=sharding.replicated(mesh), out_shardings=sharding.replicated(mesh),
                      donate_argnums=(0,)) if objective.reset_optimizer_at is not None else None)
  log = metrics_lib.MetricsWriter(run_dir, start)
  bar = progress_lib.Progress(total, start, prefix=f'{label} ' if label else '')
  ckpt_every, log_every = int(tcfg.checkpoint_every), max(int(tcfg.log_every), 1)
  last_figures: dict[str, tuple[int, dict[str, Any]]] = {}

  def record_of(step: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(step=step, train_seconds=train_seconds, **(extra or {}))

  def check_finite(step: int, metrics: dict[str, float]) -> None:
    if not math.isfinite(metrics['loss']):
      checkpoints.wait()  # Let the last good checkpoint finish writing.
      raise NonFiniteLossError(
          f'loss is {metrics["loss"]} at step {step}; stopped without saving. The last good '
          f'checkpoint (step {checkpoints.latest_step()}) is kept in {checkpoints.latest_dir}. Lower '
          'train.lr or raise train.warmup_steps, or set train.grad_clip.')

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
      bar.update(done_step, {k: mean[k] for k in objective.progress_metrics if k in mean})
      log.write(done_step, 'train', dict(mean, steps_per_sec=bar.rate))

  def run_evaluators(done: int) -> None:
    for evaluation in evaluations:
      if not evaluation.due(done, total):
        continue
      bar.newline()
      figures = evaluation.fn(optim.model_params(eval_params(state), config.train), done)
      last_figures[evaluation.name] = (done, figures)
      scalars = {k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
      print(f'  {evaluation.name} @ step {done}: ' + ', '.join(f'{k} {v:.4g}' for k, v in scalars.items()),
            flush=True)
      log.write(done, evaluation.name, scalars)
      if evaluation.select:
        if evaluation.select not in figures:
          raise ConfigError(f'evals.{evaluation.name}.select={evaluation.select!r} is not a figure it gives '
                            f'({", ".join(sorted(figures))})')
        score = float(figures[evaluation.select])
        if checkpoints.save_if_best(state, score, record_of(done, scalars)):
          logging.info('step %d: new best %s %s %.4f', done, evaluation.name, evaluation.select, score)

  t0 = time.perf_counter()
  with _StopSignals() as signals:
    try:
      for step in range(start, total):
        if signals.received:
          break
        local = objective.train_batch(step, int(tcfg.batch_size), jax.process_index(), jax.process_count())
        if reset_fn is not None and objective.reset_optimizer_at(step):
          drain()  # The last step's metrics are read before its state is donated.
          state = reset_fn(state)
        state, metrics = step_fn(state, sharding.put_batch(local, mesh))
        drain()  # Step t-1's metrics, fetched while step t runs.
        pending = (step + 1, metrics)
        done = step + 1
        due_ckpt = (ckpt_every and done % ckpt_every == 0) or done == total
        due_eval = any(e.due(done, total) for e in evaluations)
        if due_ckpt or due_eval:
          drain()
          train_seconds += time.perf_counter() - t0
          if due_ckpt:
            checkpoints.save(state, record_of(done))
          run_evaluators(done)
          t0 = time.perf_counter()
          bar.restart_clock(done)
      drain()
      if signals.received and int(jax.device_get(state.step)) < total:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
      signals.restore()
      bar.newline()
      train_seconds += time.perf_counter() - t0
      what = signals.received or 'SIGINT'
      if any(x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array)):  # Mid-step.
        checkpoints.wait()
        log.close()
        kept = checkpoints.latest_step()
        raise Interrupted(f'{what} (twice, mid-step): ' + (
            f'the checkpoint of step {kept} in {checkpoints.latest_dir} is kept' if kept is not None
            else 'no checkpoint was written yet') + '; rerun the same command to resume') from None
      drain()  # The last step's metrics (and its finiteness check) before its state is saved.
      saved = int(jax.device_get(state.step))
      if checkpoints.latest_step() != saved:
        checkpoints.save(state, record_of(saved))
      checkpoints.wait()
      log.close()
      raise Interrupted(f'{what}: saved step {saved} in {checkpoints.latest_dir}; '
                        'rerun the same command to resume') from None
  checkpoints.wait()
  log.close()
  return TrainResult(state, checkpoints, mesh, restored_step, train_seconds, last_figures)
