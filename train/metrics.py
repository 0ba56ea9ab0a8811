"""Scalars of a run: `metrics.jsonl` (one row per logged step) and TensorBoard event files (tensorboardX).

Both live in the run directory, so `tensorboard --logdir=W` shows every run of a sweep apart.
On resume the jsonl is rewound to the restored step, so each step appears once however often
a run was killed; a run started from scratch moves an older log aside and says so.
"""
import json
import pathlib
from typing import Any

import jax

LOG_FILE = 'metrics.jsonl'


class MetricsWriter:
  """Writes rows {'step', 'kind', ...scalars} to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, run_dir: str | pathlib.Path, start_step: int):
    self.path = pathlib.Path(run_dir) / LOG_FILE
    self._enabled = jax.process_index() == 0
    self._tb = None
    if not self._enabled:
      return
    self._rewind(start_step)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(logdir=str(self.path.parent), flush_secs=30)

  def _rewind(self, start_step: int) -> None:
    if not self.path.is_file():
      return
    if start_step == 0:
      old = self.path.with_name(LOG_FILE + '.old')
      self.path.replace(old)
      print(f'note: {self.path} of an earlier run (no checkpoint left) moved to {old}', flush=True)
      return
    kept = []
    for line in self.path.read_text().splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut by a kill.
      if int(row.get('step', 0)) <= start_step:
        kept.append(line)
    tmp = self.path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(f'{line}\n' for line in kept))
    tmp.replace(self.path)

  def write(self, step: int, kind: str, scalars: dict[str, Any]) -> None:
    if not self._enabled:
      return
    with self.path.open('a') as f:
      f.write(json.dumps(dict(scalars, step=step, kind=kind), sort_keys=True) + '\n')
    for key, value in scalars.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        self._tb.add_scalar(f'{kind}/{key}', float(value), step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def rows(run_dir: str | pathlib.Path, kind: str) -> list[dict[str, Any]]:
  """The rows of `kind` in a run's metrics.jsonl, each with its 'step' ([] without the file)."""
  path = pathlib.Path(run_dir) / LOG_FILE
  found = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut by a kill.
      if row.get('kind') == kind:
        found.append({k: v for k, v in row.items() if k != 'kind'})
  return found


def last_row(run_dir: str | pathlib.Path, kind: str) -> dict[str, Any]:
  """The scalars of the last row of `kind` in a run's metrics.jsonl ({} without one)."""
  found = rows(run_dir, kind)
  return {k: v for k, v in found[-1].items() if k != 'step'} if found else {}
