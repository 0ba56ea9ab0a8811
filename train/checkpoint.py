"""Orbax checkpoints: the latest N in <workdir>/checkpoints, the best on validation in <workdir>/best."""
import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from train.state import TrainState


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored (corrupt, or from another model)."""


class Checkpoints:
  """Saves and restores TrainState (+ a JSON record) with orbax CheckpointManagers."""

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, read_only: bool = False):
    workdir = pathlib.Path(workdir).absolute()
    self.latest_dir = workdir / 'checkpoints'
    self.best_dir = workdir / 'best'
    common = dict(create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only)
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
    self._best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(dict(record, score=score))),
                    metrics={'score': score}, force=True)
    self.best_score = score
    return True

  def restore(self, abstract_state: TrainState, which: str = 'latest',
              step: int | None = None) -> tuple[TrainState, dict[str, Any]] | None:
    """Restores into the shapes/shardings of `abstract_state`; None when there is no checkpoint."""
    manager = self._manager(which)
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    where = manager.directory / str(step)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), record=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types: name the checkpoint and keep it on disk.
      raise CheckpointError(
          f'cannot restore checkpoint {where}: {type(e).__name__}: {e}. It was left untouched; '
          f'if it is corrupt, move it away to resume from an earlier step, or use another --workdir.') from e
    return restored['state'], dict(restored['record'] or {})

  def wait(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()


def write_json(path: pathlib.Path, obj: Any) -> None:
  """Writes JSON atomically (tmp file + rename) on process 0."""
  if jax.process_index() != 0:
    return
  path = pathlib.Path(path)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)
  logging.info('wrote %s', path)
