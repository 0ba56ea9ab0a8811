"""Tasks by name. `config.task` names a package `train/tasks/<name>/`, which registers its Task on import.

The core never imports a task module by name: it imports `train.tasks.<config.task>` when asked for it.
"""
import importlib
import pathlib
from typing import Any, Callable, Protocol, TypeVar

import ml_collections

from train.errors import ConfigError

_TASKS: dict[str, type] = {}
T = TypeVar('T', bound=type)


class Task(Protocol):
  """What the core (train/sweep.py) needs from a task.

  A run is one point of a sweep (or the whole workdir when the sweep has no axes).
  """
  name: str
  # Config paths (prefixes) that may differ between a run and the command that resumes or
  # evaluates it: the core checks every other field of the saved settings.
  free_fields: tuple[str, ...]
  # Fields --mode=eval may set to other values than training had (e.g. the file to score).
  eval_free_fields: tuple[str, ...]
  # Record keys that the sweep tables average over seeds; the first ranks ablations.
  # Each is (key, 'min' | 'max'): which way is better.
  summary_metrics: tuple[tuple[str, str], ...]

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> Any:
    """What every run of the workdir shares (data, tokenizer, eval sets); built once per process."""

  def train_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, context: Any) -> dict[str, Any]:
    """Trains (resuming) and scores one run; returns its record (JSON-able figures)."""

  def evaluate_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                   context: Any) -> dict[str, Any]:
    """--mode=eval for one trained run: scores what config.data asks for; returns the figures."""

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: Any) -> None:
    """Task tables and plots over the finished runs of a sweep (process 0)."""

  def report_evaluation(self, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                        results: dict[str, dict[str, Any]], context: Any) -> None:
    """Prints (and writes) what --mode=eval found, over every run it scored."""

  def name_part(self, path: str, value: Any) -> str | None:
    """The run-directory name of one axis value; None for the default (train/sweep.py)."""


def register(name: str) -> Callable[[T], T]:
  """Class decorator: registers a Task class under `name` (the value of config.task)."""
  def wrap(cls: T) -> T:
    _TASKS[name] = cls
    cls.name = name
    return cls
  return wrap


def available() -> list[str]:
  """Names of the task packages under train/tasks/."""
  root = pathlib.Path(__file__).resolve().parent / 'tasks'
  return sorted(p.name for p in root.iterdir() if (p / '__init__.py').is_file())


def get_task(name: str) -> Task:
  """An instance of the task `name`, importing its package on first use."""
  if name not in _TASKS:
    if name not in available():
      raise ConfigError(f'config.task={name!r} is not a task; choose from {available()}')
    importlib.import_module(f'train.tasks.{name}')
  if name not in _TASKS:
    raise ConfigError(f'train/tasks/{name}/ registers no task (it needs @registry.register({name!r}))')
  return _TASKS[name]()
