"""One run from start to finish, the same for every task: what a task leaves to the core.

  train_run      steps (train.steps, or flops_budget / the XLA-counted FLOPs of one train step), config.json,
                 the training loop with the evaluators of config.evals at their cadence, the best checkpoint,
                 the final evaluators on it, results.json, the task's tables and plots
  evaluate_run   --mode=eval: the evaluator config.eval.file_evaluator on the file the task names, with the
                 run's best checkpoint (config.eval.checkpoint); eval_<file>.json
  on_checkpoint  --mode=interactive and --mode=generate: the task's method of that name, on the run's checkpoint

A run with train.init_from starts from those pretrained weights (models/pretrained.py: a GGUF file or an HF
directory; or a run directory of this project, its best checkpoint) instead of the init; before it has a checkpoint, the eval modes use them as they are.

Warmup: train.warmup_steps, at most train.warmup_fraction of the steps. A run whose steps come from a
FLOP budget keeps the steps it started with (config.json) when it resumes.
"""
import copy
import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

import models
from models import pretrained as pretrained_lib
from train import checkpoint as ckpt_lib
from train import config_tree
from train import evaluators as evaluators_lib
from train import flops as flops_lib
from train import loop
from train import metrics as metrics_lib
from train import optim
from train import sharding
from train import validation
from train import workdir as workdir_lib
from data import paths
from data.errors import DataConfigError
from train.errors import ConfigError
from train.files import read_json, write_json
from train.state import eval_params
from train.task import Task

CONFIG_FILE = 'config.json'  # The run's config as trained: its steps and warmup resolved.
RESULTS_FILE = 'results.json'  # The run's record: the core's figures, the final evaluators' and the task's.
# Fields that do not change the compiled train step (its FLOPs): one count serves runs differing only in these.
_NOT_IN_PROGRAM = ('seed', 'flops_budget', 'sweep', 'eval', 'evals', 'distributed', 'train.steps',
                   'train.warmup_steps', 'train.warmup_fraction', 'train.lr', 'train.schedule',
                   'train.final_lr_fraction', 'train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints')


@dataclasses.dataclass
class RunResult:
  """What Task.record sees of a finished run."""
  config: ml_collections.ConfigDict  # The run's config, steps resolved.
  model: nn.Module
  objective: loop.Objective
  params: Any  # The scored params: the best checkpoint's, else the last step's.
  final_params: Any  # The last step's eval params.
  budget: 'Budget'  # Its steps, warmup and FLOPs per step.
  context: Any


@dataclasses.dataclass
class EvalResult:
  """One run's --mode=eval result."""
  run_dir: pathlib.Path
  config: ml_collections.ConfigDict
  figures: dict[str, Any]
  evaluator: evaluators_lib.Evaluator
  file: str | None


@dataclasses.dataclass
class Budget:
  """A run's training length: steps and warmup, and what the step costs."""
  steps: int
  warmup_steps: int
  flops_per_step: float | None  # XLA's count (None: not counted).
  params: int | None


def _program_key(config: ml_collections.ConfigDict, task: Task) -> str:
  fields = {k: v for k, v in config_tree.flatten(config).items()
            if not any(k == f or k.startswith(f + '.') for f in _NOT_IN_PROGRAM + tuple(task.free_fields))}
  return json.dumps(fields, sort_keys=True, default=str)


def saved_config(run_dir: pathlib.Path) -> dict[str, Any] | None:
  path = run_dir / CONFIG_FILE
  return read_json(path) if path.is_file() else None


def planned_steps(config: ml_collections.ConfigDict, run_dir: pathlib.Path) -> int | None:
  """The steps a run trains: train.steps, or with a FLOP budget those it started with (None before it has)."""
  if float(config.flops_budget) <= 0:
    return int(config.train.steps)
  saved = saved_config(run_dir)
  return None if saved is None else int(saved['train']['steps'])


def budget(task: Task, config: ml_collections.ConfigDict, run_dir: pathlib.Path, model: nn.Module, context: Any,
           flops_cache: dict[str, tuple[float, int]]) -> Budget:
  """Steps and warmup of a run (from train.steps or flops_budget; one rule for every task) and its FLOPs per step
  (XLA's count of the train step of `models.flops_proxy(model)`: a mixture of experts counts its active FLOPs)."""
  budget_flops = float(config.flops_budget)  # >= 0: validation.check_shared_fields.
  flops_per_step = n_params = None
  if budget_flops > 0 or task.count_flops:
    key = _program_key(config, task)
    if key not in flops_cache:
      counted = models.flops_proxy(model)  # A mixture of experts: a dense model doing its active work.
      flops_cache[key] = flops_lib.train_step_flops(config, counted, task.objective(config, counted, context,
                                                                                     scan_unroll=True))
      if counted is not model:  # The parameters are the model's own.
        flops_cache[key] = (flops_cache[key][0], flops_lib.param_count(config, model,
                                                                       task.objective(config, model, context)))
    flops_per_step, n_params = flops_cache[key]
  saved = saved_config(run_dir) if budget_flops > 0 else None
  if saved is not None:  # Resumed: the steps the run was started with.
    return Budget(int(saved['train']['steps']), int(saved['train']['warmup_steps']), flops_per_step, n_params)
  if budget_flops > 0:
    if not flops_per_step:
      raise ConfigError('XLA reports no FLOPs for the train step on this backend, so flops_budget cannot set the '
                        'steps; set flops_budget=0 and train.steps')
    steps = flops_lib.steps_for_budget(budget_flops, flops_per_step)
  else:
    steps = int(config.train.steps)
    if steps < 1:
      raise ConfigError(f'train.steps={steps} must be >= 1 (or set flops_budget > 0)')
  warmup = min(int(config.train.warmup_steps), int(float(config.train.warmup_fraction) * steps))
  return Budget(steps, warmup, flops_per_step, n_params)


def with_budget(config: ml_collections.ConfigDict, plan: Budget) -> ml_collections.ConfigDict:
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.train.steps, cfg.train.warmup_steps = plan.steps, plan.warmup_steps
  return cfg


_PRETRAINED: dict[str, Any] = {}  # Loaded checkpoints by path (a sweep's runs share one load).


def init_from(config: ml_collections.ConfigDict) -> str:
  """The pretrained checkpoint that train.init_from names, as a resolved path ('' = none)."""
  value = str(config.train.get('init_from', '') or '')
  return str(pathlib.Path(paths.expand(value)).expanduser().resolve()) if value else ''


def pretrained_checkpoint(config: ml_collections.ConfigDict) -> pretrained_lib.Checkpoint:
  """The checkpoint train.init_from names (a GGUF file or an HF directory, models/pretrained.py), loaded once."""
  path = init_from(config)
  if path not in _PRETRAINED:
    check_init_from(config)
    _PRETRAINED.clear()  # One checkpoint in memory at a time.
    _PRETRAINED[path] = _run_checkpoint(pathlib.Path(path)) if is_run_dir(path) else pretrained_lib.load(path)
  return _PRETRAINED[path]


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """train.init_from names something to start from (ConfigError, one line, before any work)."""
  path = init_from(config)
  if not path:
    return
  if not pathlib.Path(path).exists():
    raise ConfigError(f'train.init_from={config.train.init_from!r}: {path} does not exist (a GGUF file, an HF '
                      'directory or a run directory; python -m data.fetch '
                      + ('smollm2' if 'SmolLM2-135M' in path else 'ORG/REPO') + ' puts a checkpoint in the cache)')
  if _is_our_run(pathlib.Path(path)) and not ckpt_lib.has_checkpoint(pathlib.Path(path)):
    raise ConfigError(f'train.init_from={config.train.init_from!r}: the run {path} has no checkpoint yet; '
                      'train it first')


def _is_our_run(path: pathlib.Path) -> bool:
  """Whether `path` is a directory this project's runs write (its settings; an HF directory has none)."""
  return path.is_dir() and (path / workdir_lib.SETTINGS_FILE).is_file()


def is_run_dir(path: str | pathlib.Path) -> bool:
  """Whether `path` is a run directory of this project with a checkpoint to start from."""
  path = pathlib.Path(path)
  return _is_our_run(path) and (path / CONFIG_FILE).is_file() and ckpt_lib.has_checkpoint(path)


def _run_checkpoint(run_dir: pathlib.Path) -> pretrained_lib.Checkpoint:
  """A run of this project as a checkpoint to start from: its best checkpoint (else its latest), with the
  model section of its config.json (a later run continues it: a curriculum's next stage)."""
  run_config = ml_collections.ConfigDict(json.loads((run_dir / CONFIG_FILE).read_text()))
  params, step, which = ckpt_lib.restore_eval_params(run_dir, 'best', sharding.make_mesh())
  params = jax.tree.map(np.asarray, jax.device_get(optim.model_params(params, run_config.train)))
  embedding = params.get('embed', {}).get('embedding')
  print(f'train.init_from: {run_dir}, its {which} checkpoint (step {step})', flush=True)
  return pretrained_lib.Checkpoint(model=run_config.model.to_dict(), params=params,
                                   vocab_size=int(embedding.shape[0]) if embedding is not None else None,
                                   source=f'{run_dir} ({which} checkpoint, step {step})')


def pretrained_params(config: ml_collections.ConfigDict, model: nn.Module) -> Any:
  """The weights of train.init_from, checked against config.model (the run's architecture must be the
  checkpoint's) and the model's vocabulary (its embeddings')."""
  checkpoint = pretrained_checkpoint(config)
  pretrained_lib.check_model(checkpoint, config.model)
  vocab = getattr(model, 'vocab_size', None)
  if vocab is not None and checkpoint.vocab_size is not None and vocab != checkpoint.vocab_size:
    raise pretrained_lib.PretrainedError(f'{checkpoint.source}: its embeddings hold {checkpoint.vocab_size} tokens, '
                                         f'the model {vocab}')
  return checkpoint.params


def scored_params(config: ml_collections.ConfigDict, run_dir: pathlib.Path, model: nn.Module
                  ) -> tuple[Any, int, str]:
  """(params, step, which) that --mode=eval/interactive/generate use: the run's checkpoint (eval.checkpoint);
  before the run has one, the pretrained weights of train.init_from where it names them."""
  if init_from(config) and not ckpt_lib.has_checkpoint(run_dir):
    print(f'{run_dir} has no checkpoint yet: using the pretrained weights of {init_from(config)}', flush=True)
    return jax.device_put(pretrained_params(config, model), sharding.replicated(sharding.make_mesh())), 0, 'pretrained'
  params, step, which = ckpt_lib.restore_eval_params(run_dir, str(config.eval.checkpoint), sharding.make_mesh())
  return optim.model_params(params, config.train), step, which


def check(task: Task, config: ml_collections.ConfigDict, where: str = '') -> None:
  """Every check of a run's config that needs no data, before any work: shared ranges, the model section, the
  evaluators, the task's own (one line naming the key; `where` names the sweep point)."""
  try:
    validation.check_shared_fields(config)
    if 'model' in config:
      models.config_of(config.model)
    evaluators_lib.specs(config, task)
    optim.make_optimizer(config.train)  # Optimizer, schedule and LoRA fields.
    task.check(config)
  except (ConfigError, models.ModelConfigError, DataConfigError) as e:
    if not where:
      raise
    raise type(e)(f'{e}{where}') from None


def train_run(task: Task, config: ml_collections.ConfigDict, run_dir: pathlib.Path, context: Any,
              flops_cache: dict[str, tuple[float, int]]) -> dict[str, Any]:
  """Trains (resuming) and scores one run; returns its record (also in run_dir/results.json)."""
  check(task, config)
  all_specs = evaluators_lib.specs(config, task)
  model = task.build_model(config, context)
  if init_from(config):  # The checkpoint fits the config, checked before any work (and kept for the start).
    pretrained_params(config, model)
  plan = budget(task, config, run_dir, model, context, flops_cache)
  cfg = with_budget(config, plan)
  label = task.label(cfg)
  cost = (f'{plan.params:,} params, {plan.flops_per_step:.4g} FLOPs per step (XLA), ' if plan.flops_per_step
          else '')
  print(f'{label}: {cost}{plan.steps} steps' + (f' (budget {float(cfg.flops_budget):.3g})'
                                                if float(cfg.flops_budget) > 0 else '')
        + f', warmup {plan.warmup_steps}, lr {float(cfg.train.lr):g}', flush=True)
  write_json(run_dir / CONFIG_FILE, cfg.to_dict())
  used = evaluators_lib.in_training(all_specs)
  built = {s.name: s.build(task, cfg, model, context, run_dir=run_dir) for s in all_specs if s.final or s in used}
  scheduled = [loop.Scheduled(s.name, (lambda params, step, e=built[s.name]: e(params)), s.every, s.select)
               for s in used]
  objective = task.objective(cfg, model, context)
  result = loop.train(cfg, run_dir, model, objective, scheduled, label=label,
                      initial_params=(lambda: pretrained_params(cfg, model)) if init_from(cfg) else None)
  result.checkpoints.close()
  final_params = optim.model_params(eval_params(result.state), cfg.train)
  if any(s.select for s in all_specs):  # Scored with the best checkpoint on the selecting evaluator.
    params, used_step, _ = ckpt_lib.restore_eval_params(run_dir, 'best', sharding.make_mesh())
    params = optim.model_params(params, cfg.train)
  else:
    params, used_step = final_params, plan.steps
  record = dict(model=label, params=plan.params or models.count_params(params), seed=int(cfg.seed),
                train_steps=plan.steps, warmup_steps=plan.warmup_steps, batch_size=int(cfg.train.batch_size),
                train_seconds=result.train_seconds, checkpoint_step=used_step)
  if optim.lora_of(cfg.train) is not None:
    record['trainable_params'] = models.count_params(eval_params(result.state)['lora'])
  if plan.flops_per_step:
    record.update(flops_per_step=plan.flops_per_step, train_flops=plan.steps * plan.flops_per_step)
  # The last logged window of training metrics (loss, gradient norm, a model's auxiliary losses and statistics).
  record['final_train_metrics'] = metrics_lib.last_row(run_dir, 'train')
  for spec in all_specs:
    if not spec.final:
      continue
    last = result.evaluations.get(spec.name)
    figures = last[1] if last is not None and last[0] == plan.steps and params is final_params else built[spec.name](
        params)
    clash = sorted(set(figures) & set(record))
    if clash:
      raise ConfigError(f'evals.{spec.name} gives figures the record already has: {", ".join(clash)}')
    record.update(figures)
  record.update(task.record(cfg, RunResult(cfg, model, objective, params, final_params, plan, context)))
  write_json(run_dir / RESULTS_FILE, record)
  if jax.process_index() == 0:
    task.report_run(cfg, run_dir, record)
  return record


def _files(value: Any) -> list[pathlib.Path]:
  """The files a comma-separated field names, as resolved paths ('{shared}/...' expanded)."""
  return [pathlib.Path(paths.expand(f.strip())).expanduser().resolve() for f in str(value or '').split(',')
          if f.strip()]


def _eval_file(task: Task, config: ml_collections.ConfigDict, run_dir: pathlib.Path, needs_file: bool) -> str | None:
  """The file(s) to score: the task's eval file field, unless it names what the run was trained with and the
  evaluator scores that without a file (MLM's own eval text: its fixed masks)."""
  file = str(config_tree.get(config, task.eval_file_field, '') or '')
  saved = saved_config(run_dir)
  trained = config_tree.get(saved, task.eval_file_field, '') if saved else ''
  if not file or (not needs_file and _files(file) == _files(trained)):
    return None
  return file


def evaluate_run(task: Task, config: ml_collections.ConfigDict, run_dir: pathlib.Path, context: Any) -> EvalResult:
  """--mode=eval for one run: its file evaluator on the file (or what the evaluator scores without one)."""
  spec = evaluators_lib.file_spec(config, task)
  kind = task.evaluators[spec.type]
  file = _eval_file(task, config, run_dir, bool(kind.file_help))
  if file is None and kind.file_help:
    raise ConfigError(f'--mode=eval needs --config.{task.eval_file_field}=FILE ({kind.file_help})')
  saved = saved_config(run_dir)
  cfg = config
  if saved is not None:  # The steps it trained (settings are checked equal; the rest is free).
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
      cfg.train.steps, cfg.train.warmup_steps = int(saved['train']['steps']), int(saved['train']['warmup_steps'])
  model = task.build_model(cfg, context)
  evaluator = spec.build(task, cfg, model, context, file=file, run_dir=run_dir)  # Reads the file before the restore.
  params, step, which = scored_params(cfg, run_dir, model)
  if which != 'pretrained':
    print(f'restored {which} checkpoint (step {step}) from {run_dir}', flush=True)
  figures = evaluator(params)
  table = evaluator.table(figures)
  if table:
    print(table, flush=True)
  figures = dict(figures, checkpoint=which, checkpoint_step=step)
  if file is not None:  # eval_<file>.json (eval_<a>_<b>.json for several files).
    name = '_'.join(pathlib.Path(f.strip()).name for f in file.split(',') if f.strip())
    write_json(run_dir / f'eval_{name}.json', dict(figures, file=file, model=task.label(cfg)))
  return EvalResult(run_dir, cfg, figures, evaluator, file)


def print_final_lines(results: dict[str, EvalResult]) -> None:
  """Each run's final line (when there are several), then the best run's, last (scripts read it)."""
  if len(results) > 1:
    for name, res in results.items():
      print(f'{name}: {res.evaluator.final_line(res.figures)}', flush=True)
  sign = lambda res: -1.0 if res.evaluator.lower_is_better else 1.0  # pylint: disable=unnecessary-lambda-assignment
  best = max(results.values(), key=lambda res: sign(res) * res.figures.get(res.evaluator.headline, 0.0))
  line = best.evaluator.final_line(best.figures)
  if line:
    print(line, flush=True)


def on_checkpoint(task: Task, mode: str, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                  context: Any) -> None:
  """--mode=interactive or --mode=generate on one run: restores its checkpoint (eval.checkpoint) and hands the
  model and params to the task's method of that name."""
  hook = getattr(task, mode, None)
  if not callable(hook):
    raise ConfigError(f'task {task.name!r} has no --mode={mode}')
  model = task.build_model(config, context)
  params, step, which = scored_params(config, run_dir, model)
  where = {'run_dir': run_dir} if mode == 'export' else {}  # An export is written into the run's directory.
  hook(config, model, params, 'pretrained weights' if which == 'pretrained' else f'{which} checkpoint (step {step})',
       context, **where)
