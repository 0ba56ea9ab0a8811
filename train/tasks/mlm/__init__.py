"""The MLM task: masked language modelling at matched training FLOPs (BERT, TRM, any model section).

A run's steps come from its FLOP budget (`flops_budget` / XLA-counted FLOPs of one train step,
measured with the depth scan unrolled, for the whole batch on one device); its warmup is at most
`train.warmup_fraction` of them. Every run is scored on one fixed, seeded set of masked eval
positions. Over a sweep (`configs/mlm.py`: models x budgets x seeds) the workdir gets
results.json, results.md and accuracy_vs_compute.png:

  W/tokenizer.json, W/mlm_tokens/    shared by every run (prepared once)
  W/runs/<model>_<budget>_s<seed>/   one resumable run: checkpoints, metrics.jsonl, TensorBoard
                                     events, settings.json, config.json (its steps), result.json
"""
import copy
import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

import models
from data import mlm_batches
from data import text as text_lib
from data import tokenizer as tokenizer_lib
from train import checkpoint as ckpt_lib
from train import flops as flops_lib
from train import loop
from train import registry
from train import sharding
from train import tables
from train.errors import ConfigError, InputError
from train.state import eval_params
from train.tables import format_value
from train.tasks.mlm import diagnostics as diagnostics_lib
from train.tasks.mlm import masked_lm
from train.tasks.mlm import report
from train.workdir import write_json

# Train fields that do not change the FLOPs of a step (only the schedule's constants).
_SCHEDULE_FIELDS = ('steps', 'warmup_steps', 'warmup_fraction', 'lr', 'schedule', 'final_lr_fraction')


def build_model(cfg: ml_collections.ConfigDict, vocab_size: int):
  if 'model' not in cfg:
    raise ConfigError("the MLM config has no `model` section: pick one of config.models with a sweep axis "
                      "(sweep.grid='model=bert') ")
  return models.get_model(cfg.model, vocab_size=vocab_size, num_classes=vocab_size,
                          seq_len=int(cfg.data.seq_len), task_keys=masked_lm.MODEL_TASK_KEYS)


def _key(*parts: Any) -> str:
  return json.dumps([p.to_dict() if isinstance(p, ml_collections.ConfigDict) else p for p in parts],
                    sort_keys=True, default=str)


def measure_flops(cfg: ml_collections.ConfigDict, model, data: mlm_batches.MLMData) -> dict[str, float]:
  """FLOPs of one train step: XLA's cost analysis of the compiled step, and the analytic estimate.

  Counted as train/flops.py says (depth scan unrolled, one device, the whole global batch); the
  readout slots are those of the real run (train.readout_group is resolved for all devices).
  """
  objective = masked_lm.make_objective(cfg, model, data, scan_unroll=True)
  start = time.perf_counter()
  xla, params = flops_lib.train_step_flops(cfg, model, objective)
  analytic = masked_lm.analytic_train_flops(cfg, data.vocab_size)
  logging.info('%s: FLOPs per train step %.4g (XLA, compiled in %.1fs), %.4g (analytic)', cfg.model.name, xla,
               time.perf_counter() - start, analytic)
  return dict(xla=xla, analytic=analytic, params=params)


def _check_enough_text(config: ml_collections.ConfigDict, data: mlm_batches.MLMData) -> None:
  """Refuses a training text that does not fill one batch (it would repeat rows within every batch)."""
  rows, batch = data.train_tokens_NxL.shape[0], int(config.train.batch_size)
  if rows < batch:
    source = config.data.files or f'HF {config.data.hf_config}'
    raise InputError(f'{source}: the training text makes {rows} sequence(s) of data.seq_len={config.data.seq_len} '
                     f'tokens, fewer than one batch (train.batch_size={batch}); give more text or a smaller batch')


@dataclasses.dataclass
class MLMContext:
  """What the runs of one workdir share, each built once: data, eval sets, FLOP counts, evaluators."""
  workdir: pathlib.Path
  memo: dict[str, Any] = dataclasses.field(default_factory=dict)

  def _get(self, key: str, build):
    if key not in self.memo:
      self.memo[key] = build()
    return self.memo[key]

  def data(self, data_cfg: ml_collections.ConfigDict) -> mlm_batches.MLMData:
    def build():
      start = time.perf_counter()
      data = mlm_batches.prepare(data_cfg, self.workdir, process_index=jax.process_index())
      print(f'MLM data: vocab {data.vocab_size}, train {data.train_tokens_NxL.shape[0]:,} x '
            f'{data.train_tokens_NxL.shape[1]} tokens, eval {data.eval_tokens_NxL.shape[0]:,} sequences '
            f'({time.perf_counter() - start:.1f}s)', flush=True)
      return data
    return self._get(_key('data', data_cfg), build)

  def eval_batches(self, cfg: ml_collections.ConfigDict, eval_tokens_NxL: np.ndarray | None = None,
                   source: str = '') -> list[dict[str, np.ndarray]]:
    """The fixed, seeded eval batches (of the run's eval split, or of `eval_tokens_NxL` from `source`)."""
    data = self.data(cfg.data)
    eval_bs = int(cfg.eval.batch_size)
    group = masked_lm.readout_group(cfg, eval_bs, 'eval.batch_size')

    def build():
      sharding.check_batch_size(eval_bs, sharding.make_mesh(), 'eval.batch_size')
      tokens = data.eval_tokens_NxL if eval_tokens_NxL is None else eval_tokens_NxL
      return masked_lm.eval_set(tokens, cfg.data, eval_bs, data.vocab_size, data.special_ids, group)
    return self._get(_key('eval', cfg.data, eval_bs, group, source), build)

  def evaluator(self, cfg: ml_collections.ConfigDict, model, batches) -> masked_lm.Evaluator:
    """One per architecture and eval set (lr, dropout and the training-only detach/deep_supervision do not change
    the eval program)."""
    arch = {k: v for k, v in cfg.model.to_dict().items() if k not in ('lr', 'dropout', 'detach', 'deep_supervision')}
    return self._get(_key('evaluator', arch, int(cfg.eval.depth_multiplier), id(batches)),
                     lambda: masked_lm.Evaluator(model, int(cfg.model.depth), batches, sharding.make_mesh(),
                                                 int(cfg.model.depth) * int(cfg.eval.depth_multiplier)))

  def flops(self, cfg: ml_collections.ConfigDict, model) -> dict[str, float]:
    """Measured once per program: the lr and schedule are constants of the step, not FLOPs."""
    train_fields = {k: v for k, v in cfg.train.to_dict().items() if k not in _SCHEDULE_FIELDS}
    arch = {k: v for k, v in cfg.model.to_dict().items() if k != 'lr'}

    def build():
      flops = measure_flops(cfg, model, self.data(cfg.data))
      print(f'{cfg.model.name}: {flops["params"]:,} params; FLOPs per train step (batch {cfg.train.batch_size}): '
            f'{flops["xla"]:.4g} XLA cost analysis, {flops["analytic"]:.4g} analytic '
            f'(ratio {flops["xla"] / max(flops["analytic"], 1):.3f})', flush=True)
      if not flops['xla'] > 0:
        logging.warning('XLA reported no FLOPs on this backend; budgets use the analytic estimate')
      return flops
    return self._get(_key('flops', arch, train_fields, cfg.data), build)


def _diagnostics_fn(cfg: ml_collections.ConfigDict, model, objective: loop.Objective):
  """params -> diagnostics (train/tasks/mlm/diagnostics.py) on the run's first train batch."""
  batch = objective.train_batch(0, int(cfg.train.batch_size), 0, 1)
  depth = int(cfg.model.depth)

  def step_losses(params, arrays):
    sums = masked_lm.eval_sums(params, arrays, model=model, depth=depth)
    return sums['ce'] / jnp.maximum(sums['count'], 1.0)

  return lambda params: diagnostics_lib.diagnose(model, params, batch, objective.loss_fn, depth, step_losses)


@registry.register('mlm')
class MLMTask:
  """Registered as config.task='mlm'."""
  free_fields = ()
  eval_free_fields = ('data.eval_files',)
  summary_metrics = (('mlm_loss', 'min'), ('masked_accuracy', 'max'), ('steps', 'max'), ('train_seconds', 'min'))

  def name_part(self, path: str, value: Any) -> str | None:
    return format_value(float(value)) if path == 'flops_budget' else None

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> MLMContext:
    del config
    return MLMContext(pathlib.Path(workdir))

  def _run_config(self, cfg: ml_collections.ConfigDict, run_dir: pathlib.Path,
                  flops_per_step: float) -> ml_collections.ConfigDict:
    """The run's config: lr of its model section, steps/warmup from its budget (or its saved config)."""
    cfg = copy.deepcopy(cfg)
    saved_path = run_dir / 'config.json'
    with cfg.unlocked():
      if float(cfg.model.lr) > 0:
        cfg.train.lr = float(cfg.model.lr)
      if saved_path.is_file():  # Resume: the steps the run was started with.
        saved = json.loads(saved_path.read_text())
        cfg.train.steps = int(saved['train']['steps'])
        cfg.train.warmup_steps = int(saved['train']['warmup_steps'])
      else:
        if float(cfg.flops_budget) > 0:
          cfg.train.steps = flops_lib.steps_for_budget(float(cfg.flops_budget), flops_per_step)
        elif int(cfg.train.steps) < 1:
          raise ConfigError('flops_budget=0 trains train.steps steps, which must be >= 1')
        cfg.train.warmup_steps = min(int(cfg.train.warmup_steps),
                                     int(float(cfg.train.warmup_fraction) * int(cfg.train.steps)))
    return cfg

  def train_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                context: MLMContext) -> dict[str, Any]:
    data = context.data(config.data)
    _check_enough_text(config, data)
    model = build_model(config, data.vocab_size)
    flops = context.flops(config, model)
    flops_per_step = flops['xla'] or flops['analytic']
    cfg = self._run_config(config, run_dir, flops_per_step)
    print(f'  {cfg.train.steps} steps x {flops["xla"]:.4g} FLOPs (budget {float(cfg.flops_budget):.3g}), '
          f'warmup {cfg.train.warmup_steps}, lr {cfg.train.lr:g}', flush=True)
    write_json(run_dir / 'config.json', cfg.to_dict())
    evaluator = context.evaluator(cfg, model, context.eval_batches(cfg))
    objective = masked_lm.make_objective(cfg, model, data)
    diagnose = _diagnostics_fn(cfg, model, objective) if bool(cfg.eval.diagnostics) else None
    diagnostics = {}
    if diagnose is not None:
      diagnostics['init'] = diagnose(loop.init_state(model, objective, cfg, optax.sgd(0.0),
                                                     sharding.make_mesh()).params)
    result = loop.train(cfg, run_dir, model, objective,
                        [loop.Evaluator('eval', lambda params, step: evaluator(params), int(cfg.train.eval_every))],
                        label=cfg.model.name)
    steps = int(cfg.train.steps)
    last = result.evaluations.get('eval')
    # Resumed after the last step, the loop did not evaluate: score the restored state.
    scores = last[1] if last is not None and last[0] == steps else evaluator(eval_params(result.state))
    result.checkpoints.close()
    if diagnose is not None:
      diagnostics['final'] = diagnose(eval_params(result.state))
      for when, diag in diagnostics.items():
        print(f'  diagnostics at {when}: {diagnostics_lib.summary_line(diag)}', flush=True)
    record = dict(
        model=str(cfg.model.name), flops=float(cfg.flops_budget) or steps * flops_per_step,
        flops_trained=steps * flops_per_step, seed=int(cfg.seed), steps=steps,
        warmup_steps=int(cfg.train.warmup_steps), batch_size=int(cfg.train.batch_size),
        seq_len=int(cfg.data.seq_len), tokens_seen=steps * int(cfg.train.batch_size) * int(cfg.data.seq_len),
        lr=float(cfg.train.lr), depth=int(cfg.model.depth), params=int(flops['params']),
        flops_per_step_xla=float(flops['xla']), flops_per_step_analytic=float(flops['analytic']),
        train_seconds=float(result.train_seconds), architecture=str(cfg.model.name), **scores)
    if diagnostics:
      record['diagnostics'] = diagnostics
    print(f'  {report.overall_line(record)}', flush=True)
    return record

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: MLMContext) -> None:
    """results.json/.md and accuracy_vs_compute.png over the finished runs (an ablation: baseline points)."""
    data = context.data(config.data)
    baseline = masked_lm.unigram_baseline(context.eval_batches(config))
    report.write_outputs(workdir, records, report.describe(config, data), baseline)

  def evaluate_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                   context: MLMContext) -> dict[str, Any]:
    """Re-scores a finished run on the fixed eval masks, or on config.data.eval_files when they differ."""
    trained = ml_collections.ConfigDict(json.loads((run_dir / 'config.json').read_text()))
    with trained.unlocked():
      trained.eval = copy.deepcopy(config.eval)
    data = context.data(trained.data)
    files = str(config.data.eval_files or '')
    source = files if files != str(trained.data.eval_files or '') else ''
    tokens = _eval_tokens_from_files(files, trained.data, context.workdir) if source else None
    batches = context.eval_batches(trained, tokens, source)
    model = build_model(trained, data.vocab_size)
    mesh = sharding.make_mesh()
    params, _, _ = ckpt_lib.restore_eval_params(run_dir, 'latest', mesh)
    scores = context.evaluator(trained, model, batches)(params)
    record = dict(json.loads((run_dir / 'result.json').read_text()), **scores)
    if not source:
      write_json(run_dir / 'result.json', record)
    print(report.overall_line(record), flush=True)
    return dict(record=record, source=source, baseline=masked_lm.unigram_baseline(batches), trained=trained,
                eval_sequences=len(tokens) if tokens is not None else len(data.eval_tokens_NxL))

  def report_evaluation(self, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                        results: dict[str, dict[str, Any]], context: MLMContext) -> None:
    first = next(iter(results.values()))
    records = [r['record'] for r in results.values()]
    source = first['source']
    suffix = ('_' + '_'.join(pathlib.Path(f).stem for f in text_lib.split_files(source))) if source else ''
    trained = first['trained']  # The data the runs were trained on (not --config.data.eval_files).
    data = context.data(trained.data)
    scored = mlm_batches.MLMData(data.tokenizer, data.vocab_size, data.special_ids, data.train_tokens_NxL,
                                 np.zeros((first['eval_sequences'], 1), np.int32))
    report.write_outputs(workdir, records, report.describe(trained, scored, source), first['baseline'], suffix)
    print(tables.markdown_table(('model', 'FLOPs', 'masked acc', 'MLM loss'),
                                [[r['model'], f'{r["flops"]:.3g}', f'{r["masked_accuracy"]:.4f} ± '
                                  f'{r["masked_accuracy_std"]:.4f}', f'{r["mlm_loss"]:.4f} ± {r["mlm_loss_std"]:.4f}']
                                 for r in report.summarize(records)]), flush=True)


def _eval_tokens_from_files(files: str, data_cfg: Any, workdir: pathlib.Path) -> np.ndarray:
  """Packs `files` with the study's tokenizer, as the study packed its own eval text."""
  tokenizer = tokenizer_lib.load_tokenizer(workdir)
  ids = tokenizer_lib.special_ids(tokenizer)
  lines = []
  for f in text_lib.split_files(files):
    lines.extend(text_lib.read_lines(f))
  stream_T = tokenizer_lib.encode_to_array(tokenizer, lines, ids.sep)
  return mlm_batches.pack_sequences(stream_T, int(data_cfg.seq_len), ids.cls if data_cfg.add_cls else None)
