"""Evaluators picked by name from the config, each with its own cadence (as big_vision's `config.evals`).

  config.evals.val = dict(type='teacher_forced', every=500, select='score')
  config.evals.test = dict(type='generation', final=True)

  type    an evaluator type of the task (Task.evaluators), built once per run
  every   steps between calls during training (0: none before the last step); each call is printed and
          logged (metrics.jsonl, TensorBoard) under the evaluator's name
  select  a figure, higher is better, that keeps the best checkpoint (best/); such an evaluator runs in
          training, after the last step at least
  final   its figures go into the run's record, scored after training with the best checkpoint (else
          with the last step's params, in the loop after the last step)
  ...     any other key is an option of the type (its `options`, with their defaults)

`--mode=eval` runs the evaluator named by `config.eval.file_evaluator` on the file the task's
`eval_file_field` names (train/run.py).
"""
import dataclasses
from typing import Any

import ml_collections

from train.errors import ConfigError

_SPEC_KEYS = ('type', 'every', 'select', 'final')


class Evaluator:
  """Scores params: `__call__(params) -> {figure: value}`; scalars are printed and logged.

  Built as Type(config, model, context, options, file): `options` holds the config entry's options
  (defaults filled in), `file` the file --mode=eval scores (None during training).
  """
  options: dict[str, Any] = {}  # Option name -> default.
  headline: str = ''  # The figure that ranks runs in --mode=eval (the best run's final line is printed last) ...
  lower_is_better: bool = False  # ... and which way.
  file_help: str = ''  # What a file for --mode=eval holds ('' : this type scores no file).
  run_dir: Any = None  # The run's directory (set by the core after building): where per-item files may go.

  def __init__(self, config: ml_collections.ConfigDict, model: Any, context: Any, options: dict[str, Any],
               file: str | None = None):
    self.config, self.model, self.context, self.options, self.file = config, model, context, options, file

  def __call__(self, params: Any) -> dict[str, Any]:
    raise NotImplementedError

  def table(self, figures: dict[str, Any]) -> str:
    """What --mode=eval prints for one run before its final line."""
    del figures
    return ''

  def final_line(self, figures: dict[str, Any]) -> str:
    """The last line --mode=eval prints (scripts read it)."""
    return f'{self.headline}={figures[self.headline]:.4f}' if self.headline else ''


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  name: str
  type: str
  every: int
  select: str
  final: bool
  options: dict[str, Any]

  def build(self, task: Any, config: ml_collections.ConfigDict, model: Any, context: Any,
            file: str | None = None, run_dir: Any = None) -> Evaluator:
    evaluator = task.evaluators[self.type](config, model, context, dict(self.options), file)
    evaluator.run_dir = run_dir
    return evaluator


def specs(config: ml_collections.ConfigDict, task: Any) -> list[EvalSpec]:
  """config.evals as checked specs, in config order (one line naming the key for anything wrong)."""
  out = []
  for name, entry in (config.get('evals') or {}).items():
    where = f'evals.{name}'
    if not isinstance(entry, (dict, ml_collections.ConfigDict)) or 'type' not in entry:
      raise ConfigError(f'{where} must be a section with a `type` (one of {sorted(task.evaluators)})')
    kind = entry['type']
    if kind not in task.evaluators:
      raise ConfigError(f'{where}.type={kind!r} is not an evaluator of task {task.name!r}; '
                        f'choose from {sorted(task.evaluators)}')
    allowed = task.evaluators[kind].options
    unknown = sorted(set(entry) - set(_SPEC_KEYS) - set(allowed))
    if unknown:
      raise ConfigError(f'{where}: unknown key {", ".join(unknown)}; {kind!r} takes '
                        f'{", ".join(_SPEC_KEYS + tuple(allowed))}')
    every = entry.get('every', 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
      raise ConfigError(f'{where}.every={every!r} must be an int >= 0 (0: no call before the last step)')
    select, final = entry.get('select', ''), entry.get('final', False)
    if not isinstance(select, str) or not isinstance(final, bool):
      raise ConfigError(f'{where}: select must be a figure name (or empty), final True or False')
    options = dict(allowed, **{k: entry[k] for k in entry if k not in _SPEC_KEYS})
    out.append(EvalSpec(name, kind, every, select, final, options))
  selecting = [s.name for s in out if s.select]
  if len(selecting) > 1:
    raise ConfigError(f'evals: only one evaluator may select the best checkpoint; {", ".join(selecting)} do')
  return out


def in_training(all_specs: list[EvalSpec]) -> list[EvalSpec]:
  """The evaluators the training loop calls: those with a cadence or a `select`; and, when none selects a
  checkpoint, the final ones (on the last step's params, after the last step)."""
  selecting = any(s.select for s in all_specs)
  return [s for s in all_specs if s.every > 0 or s.select or (s.final and not selecting)]


def file_spec(config: ml_collections.ConfigDict, task: Any) -> EvalSpec:
  """The evaluator --mode=eval runs on a file: config.eval.file_evaluator."""
  name = str(config.eval.get('file_evaluator', ''))
  by_name = {s.name: s for s in specs(config, task)}
  if name not in by_name:
    raise ConfigError(f'eval.file_evaluator={name!r} names no entry of config.evals (have {sorted(by_name)})')
  return by_name[name]
