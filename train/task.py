"""What a task is: a small spec the core runs (train/run.py), registered by name.

`config.task` names a package `train/tasks/<name>/` whose `Task` subclass registers itself on import
(`@task.register('<name>')`). The core imports a task only by that name, so tasks import the core
and never the reverse. A task says what only it knows:

  build_model(config, context)            the model, usually models.build(config.model, vocab_size=...)
  objective(config, model, context, ...)  its loss and its batches (a pure function of seed and step)
  evaluators                              evaluator types by name, which config.evals.<name>.type picks
  report_run / report                     tables and plots of one run and of a sweep (optional)
  interactive, generate                   --mode=interactive, --mode=generate (optional methods:
                                          (config, model, params, checkpoint, context))
  export                                  --mode=export (optional: the same and run_dir, where it writes)

and the core does the rest: steps from train.steps or a FLOP budget, settings, checkpoints, the
training loop, evaluators at their cadence, the best checkpoint, final scores, results.json,
pretrained weights to start from (train.init_from) and LoRA adapters (train.lora_rank),
--mode=eval on a file, sweeps and their tables. docs/adding_a_task.md walks through a whole task.
"""
import importlib
import pathlib
from typing import Any, Callable, TypeVar

import flax.linen as nn
import ml_collections

from train.errors import ConfigError

Config = ml_collections.ConfigDict
T = TypeVar('T', bound=type)
_TASKS: dict[str, type['Task']] = {}


class Task:
  """A task's spec; subclasses override what they need (the two abstract methods at least)."""
  name: str = ''  # Set by @register.
  # Record keys that sweep tables average over seeds, each with which way is better ('min' | 'max');
  # the first ranks the settings of an ablation.
  summary_metrics: tuple[tuple[str, str], ...] = ()
  # Evaluator types by name (config.evals.<name>.type): classes of train/evaluators.Evaluator.
  evaluators: dict[str, type] = {}
  # The config field naming the file that --mode=eval scores (free to differ from training's).
  eval_file_field: str = 'data.eval_file'
  # Config fields (prefixes) that may differ between a run and the command that resumes it, beyond the
  # ones every task may change (train/workdir.py ALWAYS_FREE).
  free_fields: tuple[str, ...] = ()
  # Count the XLA FLOPs of a train step for every run (for the records); without, only for a FLOP budget.
  count_flops: bool = True

  def prepare(self, config: Config, workdir: pathlib.Path) -> Any:
    """What every run of a workdir shares (data, tokenizer, caches); built once per process."""
    del config, workdir

  def check(self, config: Config) -> None:
    """Raises ConfigError for a value that cannot work, before any work (one line naming the key)."""
    del config

  def build_model(self, config: Config, context: Any) -> nn.Module:
    raise NotImplementedError

  def objective(self, config: Config, model: nn.Module, context: Any, scan_unroll: int | bool = 1) -> Any:
    """A train.loop.Objective: the loss and the batch of each step (scan_unroll=True: for counting FLOPs)."""
    raise NotImplementedError

  def label(self, config: Config) -> str:
    """What a run is called in progress lines and tables."""
    return str(config.model.name)

  def record(self, config: Config, run: Any) -> dict[str, Any]:
    """Figures of a finished run besides the core's and the final evaluators' (train/run.py RunResult)."""
    del config, run
    return {}

  def report_run(self, config: Config, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    """Tables and plots of one finished run (process 0), and its summary line on stdout."""
    del config, run_dir, record

  def report(self, config: Config, workdir: pathlib.Path, records: list[dict[str, Any]], context: Any) -> None:
    """Tables and plots over the finished runs of a sweep (process 0)."""
    del config, workdir, records, context

  def report_evaluation(self, config: Config, workdir: pathlib.Path, results: dict[str, Any], context: Any) -> None:
    """What --mode=eval writes beyond each run's eval json and printed lines (results: run name -> EvalResult)."""
    del config, workdir, results, context

  def name_part(self, path: str, value: Any) -> str | None:
    """The run-directory name of one sweep-axis value; None for the default (train/sweep.py)."""
    del path, value

  def normalize_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
    """Flat settings as they are compared (a saved run's and today's): an earlier release's field names
    under today's, values that mean the same written the same way."""
    return settings


def register(name: str) -> Callable[[T], T]:
  """Class decorator: registers a Task subclass under `name` (the value of config.task)."""
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
    raise ConfigError(f'train/tasks/{name}/ registers no task (it needs @task.register({name!r}))')
  return _TASKS[name]()
