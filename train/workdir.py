"""What a run directory is: the settings that define it (checked before any work) and a lock.

`settings.json` holds every config field of the run except the free ones (cadences, eval
options, the sweep spec, what a task lists as free, such as steps to extend), with the task's
name. A rerun or an evaluation under other settings is refused, naming the fields, before
anything is touched. The lock file holds the pid and host of the process using the directory.
"""
import json
import os
import pathlib
import socket
from typing import Any, Callable

import jax
import ml_collections

from train.config_tree import flatten
from train.errors import WorkdirError
from train.files import write_json

SETTINGS_FILE = 'settings.json'
LOCK_FILE = '.lock'
# Fields every task may change between a run and its resume or evaluation: cadences, evaluation, the sweep
# spec, and train.steps (a longer run continues the same one; a FLOP budget's steps are fixed in config.json).
ALWAYS_FREE = ('sweep', 'eval', 'evals', 'distributed', 'train.steps', 'train.log_every', 'train.checkpoint_every',
               'train.keep_checkpoints')


def is_free(path: str, free: tuple[str, ...]) -> bool:
  return any(path == f or path.startswith(f + '.') for f in free)


def settings_of(config: ml_collections.ConfigDict, task_name: str, free: tuple[str, ...]) -> dict[str, Any]:
  """The fields that define a run: every config field but the free ones, JSON-normalised."""
  fields = {k: v for k, v in flatten(config).items() if not is_free(k, ALWAYS_FREE + tuple(free))}
  return json.loads(json.dumps(dict(fields, task=task_name), sort_keys=True, default=str))


def rename_fields(settings: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
  """Flat settings with each old path of `renamed` under its new one (Task.normalize_settings)."""
  return {renamed.get(k, k): v for k, v in settings.items()}


def check_run(run_dir: pathlib.Path, config: ml_collections.ConfigDict, task: Any, *, record: bool,
              evaluating: bool = False, untrained_ok: bool = False) -> None:
  """The settings check of one run directory in every mode: refuses other settings before any work.

  Training records the settings in a new directory (`record`); evaluation and interactive use may change
  the task's eval file field, and with `untrained_ok` (pretrained weights) use a directory no run has made.
  """
  ignore = (task.eval_file_field,) if evaluating else ()
  free = ALWAYS_FREE + tuple(task.free_fields) + ignore

  def normalize(flat: dict[str, Any]) -> dict[str, Any]:  # Today's names and values; free fields are not compared.
    return {k: v for k, v in task.normalize_settings(flat).items() if not is_free(k, free)}

  settings = settings_of(config, task.name, tuple(task.free_fields) + ignore)
  if untrained_ok and not (run_dir / SETTINGS_FILE).is_file():
    return
  check_settings(run_dir, dict(settings, layout='single'), record=record, ignore=ignore, normalize=normalize)


def check_settings(run_dir: pathlib.Path, settings: dict[str, Any], *, record: bool,
                   ignore: tuple[str, ...] = (),
                   normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
  """Refuses a run_dir made with other settings; records them in a new one when `record`.

  Fields under `ignore` are not compared (what --mode=eval may change). `normalize` puts both sides
  under today's field names and values before they are compared (the saved settings may be an
  earlier release's); what is recorded is `settings` as given.
  """
  path = run_dir / SETTINGS_FILE
  if path.is_file():
    try:
      saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise WorkdirError(f'{path} is unreadable ({e}); move the directory away or use a fresh --workdir') from e
    if normalize is not None:
      saved, settings = normalize(saved), normalize(settings)
    # A field that one side lacks was added to (or removed from) the project since the run was made:
    # said, not refused, so that an update of the code does not lock a user out of their runs.
    one_sided = sorted(k for k in set(saved) ^ set(settings) if not is_free(k, ignore) and k != 'layout')
    differs = sorted(k for k in set(saved) & set(settings)
                     if saved[k] != settings[k] and not is_free(k, ignore))
    if 'layout' in set(saved) ^ set(settings):
      differs.append('layout')
    if not differs:
      if one_sided:
        print(f'note: {path} predates the config fields {", ".join(one_sided)}; assuming they had the values '
              'they have now', flush=True)
      return
    if 'task' in differs:
      raise WorkdirError(f'{run_dir} belongs to task {saved.get("task")!r}, not {settings.get("task")!r}; '
                         'use another --workdir')
    if 'layout' in differs:
      raise WorkdirError(f'{run_dir} holds a {saved.get("layout")} run layout, and this config asks for a '
                         f'{settings.get("layout")} (sweep.grid / sweep.vary); use another --workdir')
    shown = '; '.join(f'{k}: {saved.get(k, "<absent>")!r} -> {settings.get(k, "<absent>")!r}' for k in differs[:8])
    more = f' and {len(differs) - 8} more' if len(differs) > 8 else ''
    raise WorkdirError(f'{run_dir} was made with other settings ({shown}{more}); rerun with the settings it was '
                       'made with, or use a fresh --workdir (or move this one away) to start over')
  if not record:
    raise WorkdirError(f'{path} not found: {run_dir} holds no run of this project (train it first)')
  if jax.process_index() == 0:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def check_writable(workdir: pathlib.Path) -> None:
  """The workdir can be made and written (before any work starts)."""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory')
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f'.write_probe.{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f'--workdir={workdir} is not writable: {e.strerror}') from e


class Lock:
  """An exclusive lock file in a directory: pid and host of the holder; a dead holder's lock is taken over."""

  def __init__(self, directory: pathlib.Path):
    self.path = pathlib.Path(directory) / LOCK_FILE
    self._held = False

  def __enter__(self) -> 'Lock':
    if jax.process_index() != 0:  # Process 0 holds it for a multi-host job.
      return self
    me = {'pid': os.getpid(), 'host': socket.gethostname()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        holder = self._holder()
        if holder and not self._alive(holder):
          self.path.unlink(missing_ok=True)  # Stale: its process is gone.
          continue
        raise WorkdirError(f'{self.path.parent} is in use by pid {holder.get("pid")} on {holder.get("host")} '
                           f'({self.path}); wait for it to finish, or delete the lock file if that process '
                           'is gone') from None
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._held = True
      return self
    raise WorkdirError(f'cannot take the lock {self.path}')

  def _holder(self) -> dict[str, Any]:
    try:
      return json.loads(self.path.read_text())
    except (OSError, json.JSONDecodeError):
      return {}

  @staticmethod
  def _alive(holder: dict[str, Any]) -> bool:
    if holder.get('host') != socket.gethostname():
      return True  # Another host's process: cannot tell, so assume it runs.
    try:
      os.kill(int(holder.get('pid', -1)), 0)
    except ProcessLookupError:
      return False
    except (PermissionError, ValueError):
      return True
    return True

  def __exit__(self, *exc) -> None:
    if self._held:
      self.path.unlink(missing_ok=True)
      self._held = False
