"""Orbax checkpoints: the latest N in <run>/checkpoints, the best on validation in <run>/best.

`restore_eval_params` is the one way every task restores a trained run for evaluation: the
best-on-validation checkpoint (else the latest), read as saved, with no model or data needed.
"""
import pathlib
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from train.errors import CheckpointError
from train.state import TrainState


class Checkpoints:
  """Saves and restores TrainState (+ a JSON record) with orbax CheckpointManagers."""

  def __init__(self, run_dir: str | pathlib.Path, *, keep: int = 3, read_only: bool = False):
    run_dir = pathlib.Path(run_dir).absolute()
    self.read_only = read_only
    self.unreadable: list[tuple[pathlib.Path, str]] = []  # (step dir, why) of the last failed restore.
    self.latest_dir = run_dir / 'checkpoints'
    self.best_dir = run_dir / 'best'
    # Read-only use (evaluation) neither creates nor cleans; orbax's own read_only mode only adds warnings.
    common = dict(create=not read_only, cleanup_tmp_directories=not read_only)
    self._latest = ocp.CheckpointManager(
        self.latest_dir, options=ocp.CheckpointManagerOptions(max_to_keep=max(keep, 1), **common))
    self._best = ocp.CheckpointManager(
        self.best_dir, options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m['score'], best_mode='max', **common))
    self.best_score = self._read_best_score()

  def _read_best_score(self) -> float:
    step = self._best.latest_step()
    if step is None:
      return float('-inf')
    try:
      meta = self._best.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
      return float(meta['record'].get('score', float('-inf')))
    except Exception:  # pylint: disable=broad-except
      return float('-inf')

  def latest_step(self, which: str = 'latest') -> int | None:
    return self._manager(which).latest_step()

  def _manager(self, which: str) -> ocp.CheckpointManager:
    if which not in ('latest', 'best'):
      raise ValueError(f"checkpoint must be 'latest' or 'best', got {which!r}")
    return self._latest if which == 'latest' else self._best

  def save(self, state: TrainState, record: dict[str, Any]) -> None:
    """Saves `state` under its step (async; `wait` or `close` finishes it)."""
    step = int(jax.device_get(state.step))
    self._latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True)

  def save_if_best(self, state: TrainState, score: float, record: dict[str, Any]) -> bool:
    """Keeps `state` in best/ when `score` beats every earlier one."""
    if not score > self.best_score:
      return False
    step = int(jax.device_get(state.step))
    self._best.wait_until_finished()
    if step in self._best.all_steps():  # Saved before a kill, now scored again after the resume.
      self._best.delete(step)
    self._best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(dict(record, score=score))),
                    metrics={'score': score}, force=True)
    self.best_score = score
    return True

  def discard_best(self, why: str) -> None:
    """Moves best/ aside (a restart from scratch must not keep an older run's best)."""
    self._best.wait_until_finished()
    self._best.close()
    old = self.best_dir.with_name('best.old')
    shutil.rmtree(old, ignore_errors=True)
    self.best_dir.replace(old)
    print(f'note: {why}; {self.best_dir} of the earlier run moved to {old}', flush=True)
    self._best = ocp.CheckpointManager(self.best_dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, best_fn=lambda m: m['score'], best_mode='max', create=True))
    self.best_score = float('-inf')

  def restore(self, abstract_state: Any | None, which: str = 'latest', step: int | None = None,
              fallback_sharding: Any = None) -> tuple[Any, dict[str, Any]] | None:
    """Restores into the shapes/shardings of `abstract_state` (None: as saved, a tree of arrays, placed
    with `fallback_sharding` where the saved devices are not there); None when there is no checkpoint.

    Without `step`, the newest readable step is used: an unreadable one (cut by a crash, or edited)
    is named in a warning and, unless read-only, moved to <run>/unreadable_checkpoints/ (nothing is
    deleted); CheckpointError when no step can be read.
    """
    manager = self._manager(which)
    steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
    if not steps:
      return None
    target = None if abstract_state is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    failures = []
    for candidate in steps:
      where = manager.directory / str(candidate)
      problem = _missing_files(where)
      if problem is None:
        try:
          restored = manager.restore(candidate, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target, fallback_sharding=fallback_sharding),
              record=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types: name the checkpoint, keep it on disk.
          _drop_aborted_read_noise()
          problem = _first_line(e)
        else:
          if failures:
            aside = self._set_aside(which, [path for path, _ in failures])
            print(f'warning: checkpoint {"; ".join(f"{path} cannot be read ({why})" for path, why in failures)}'
                  f'{aside}; restored the older step {candidate} instead', flush=True)
          return restored['state'], dict(restored['record'] or {})
      failures.append((where, problem))
    self.unreadable = failures
    raise CheckpointError(
        f'no step of {manager.directory} can be read: '
        + '; '.join(f'{path.name} ({why})' for path, why in failures)
        + f'. Nothing was changed; move {manager.directory} away to start from step 0, or use another --workdir.')

  def _set_aside(self, which: str, unreadable: list[pathlib.Path]) -> str:
    """Moves unreadable steps out of the manager's directory (not when read-only); says where."""
    if self.read_only:
      return ' (left in place)'
    aside_dir = unreadable[0].parent.parent / 'unreadable_checkpoints'
    aside_dir.mkdir(exist_ok=True)
    for where in unreadable:
      aside = aside_dir / f'{where.parent.name}_{where.name}'
      shutil.rmtree(aside, ignore_errors=True)
      where.replace(aside)
    manager = self._manager(which)
    manager.close()
    reopened = ocp.CheckpointManager(manager.directory, options=manager._options)  # pylint: disable=protected-access
    if which == 'latest':
      self._latest = reopened
    else:
      self._best = reopened
    return f' (moved to {aside_dir})'

  def wait(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()


def has_checkpoint(run_dir: pathlib.Path) -> bool:
  """Whether the run has saved a step (latest or best)."""
  if not any((pathlib.Path(run_dir) / d).is_dir() for d in ('checkpoints', 'best')):
    return False
  checkpoints = Checkpoints(run_dir, read_only=True)
  try:
    return checkpoints.latest_step('latest') is not None or checkpoints.latest_step('best') is not None
  finally:
    checkpoints.close()


def restore_eval_params(run_dir: pathlib.Path, which: str, mesh: jax.sharding.Mesh) -> tuple[Any, int, str]:
  """(eval params replicated over `mesh`, step, which checkpoint) of a trained run.

  `which` is 'best' (on validation; falls back to the latest when the run kept none) or
  'latest'. The EMA params are used when the run kept them.
  """
  from train import sharding  # pylint: disable=g-import-not-at-top
  checkpoints = Checkpoints(run_dir, read_only=True)
  try:
    if which == 'best' and checkpoints.latest_step('best') is None:
      logging.info('no best-on-validation checkpoint in %s; using the latest', run_dir)
      which = 'latest'
    # As saved, on this process's mesh: a run trained on other devices (8 GPUs) evaluates here (1 CPU).
    try:
      restored = checkpoints.restore(None, which=which, fallback_sharding=sharding.replicated(mesh))
    except CheckpointError:
      if which != 'best' or checkpoints.latest_step('latest') is None:
        raise
      unreadable = '; '.join(f'{path} cannot be read ({why})' for path, why in checkpoints.unreadable)
      print(f'warning: {unreadable}; evaluating the latest checkpoint instead', flush=True)
      which = 'latest'
      restored = checkpoints.restore(None, which=which, fallback_sharding=sharding.replicated(mesh))
  finally:
    checkpoints.close()
  if restored is None:
    raise CheckpointError(f'no checkpoint in {run_dir / "checkpoints"}: train first with --mode=train')
  state, _ = restored
  params = state['ema_params'] if state.get('ema_params') is not None else state['params']
  params = jax.device_put(params, sharding.replicated(mesh))
  return params, int(state['step']), which


# Files every saved step has (orbax's OCDBT layout); a crash or an edit can leave one missing, which
# orbax reports as a pytree-structure or NOT_FOUND error that does not say what is wrong.
_STEP_FILES = ('_CHECKPOINT_METADATA', 'state/_METADATA', 'record/metadata')


def _missing_files(step_dir: pathlib.Path) -> str | None:
  """What makes `step_dir` unreadable before orbax tries it (a missing file), else None."""
  missing = [name for name in _STEP_FILES if not (step_dir / name).is_file()]
  if (step_dir / 'state' / 'ocdbt.process_0').is_dir() and not (step_dir / 'state' / 'manifest.ocdbt').is_file():
    missing.append('state/manifest.ocdbt')
  return f'{", ".join(missing)} missing' if missing else None


def _first_line(error: Exception) -> str:
  """An orbax/TensorStore error in one short line (they append a many-line spec dump)."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ''
  for cut in (' See full TensorStore details', ' [tensorstore_spec', ' [source locations'):
    text = text.split(cut)[0]
  return f'{type(error).__name__}: {text[:200]}'


def _drop_aborted_read_noise() -> None:
  """After a failed restore, TensorStore's pending reads call back into orbax's closed event loop;
  Python prints each as an 'Event loop is closed' traceback. Drops those, and nothing else."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_aborted_reads', False):
    return

  def hook(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == 'Event loop is closed':
      return
    previous(unraisable)

  hook.drops_aborted_reads = True
  sys.unraisablehook = hook
