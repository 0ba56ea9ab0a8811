"""The MLM task: masked language modelling at matched training FLOPs (BERT, TRM, any recurrent model).

A run's steps come from its FLOP budget (the core, train/run.py); every run is scored on one fixed,
seeded set of masked eval positions (masked_lm.py). Over a sweep (`configs/mlm.py`: models x budgets
x seeds) the workdir gets results.json, results.md and accuracy_vs_compute.png (report.py):

  W/tokenizer.json, W/mlm_tokens/    shared by every run (prepared once)
  W/runs/<model>_<budget>_s<seed>/   one resumable run: checkpoints, metrics.jsonl, TensorBoard
                                     events, settings.json, config.json (its steps), result.json
"""
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

import models
from data import mlm_batches
from data import text as text_lib
from data import tokenizer as tokenizer_lib
from train import loop
from train import sharding
from train import tables
from train import task as task_lib
from train import workdir as workdir_lib
from train.errors import InputError
from train.files import read_json, write_json
from train.tables import format_value
from train.tasks.mlm import diagnostics as diagnostics_lib
from train.tasks.mlm import masked_lm
from train.tasks.mlm import report


def _key(*parts: Any) -> str:
  return json.dumps([p.to_dict() if isinstance(p, ml_collections.ConfigDict) else p for p in parts],
                    sort_keys=True, default=str)


@dataclasses.dataclass
class MLMContext:
  """What the runs of one workdir share, each built once: data, eval sets, scorers."""
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

  def scorer(self, cfg: ml_collections.ConfigDict, model, batches) -> masked_lm.MaskedLMScorer:
    """One per architecture and eval set (dropout, training-only, does not change the eval program)."""
    arch = {k: v for k, v in cfg.model.to_dict().items() if k != 'dropout'}
    return self._get(_key('scorer', arch, int(cfg.eval.depth_multiplier), id(batches)),
                     lambda: masked_lm.MaskedLMScorer(model, int(cfg.model.depth), batches, sharding.make_mesh(),
                                                      int(cfg.model.depth) * int(cfg.eval.depth_multiplier)))

  def eval_tokens_from_files(self, files: str, data_cfg: Any) -> np.ndarray:
    """Packs `files` with the study's tokenizer, as the study packed its own eval text."""
    tokenizer = tokenizer_lib.load_tokenizer(self.workdir)
    ids = tokenizer_lib.special_ids(tokenizer)
    lines = []
    for f in text_lib.split_files(files):
      lines.extend(text_lib.read_lines(f))
    stream_T = tokenizer_lib.encode_to_array(tokenizer, lines, ids.sep)
    return mlm_batches.pack_sequences(stream_T, int(data_cfg.seq_len), ids.cls if data_cfg.add_cls else None)


def _check_enough_text(config: ml_collections.ConfigDict, data: mlm_batches.MLMData) -> None:
  """Refuses a training text that does not fill one batch (it would repeat rows within every batch)."""
  rows, batch = data.train_tokens_NxL.shape[0], int(config.train.batch_size)
  if rows < batch:
    source = config.data.files or f'HF {config.data.hf_config}'
    raise InputError(f'{source}: the training text makes {rows} sequence(s) of data.seq_len={config.data.seq_len} '
                     f'tokens, fewer than one batch (train.batch_size={batch}); give more text or a smaller batch')


def _diagnostics(cfg: ml_collections.ConfigDict, run: Any) -> dict[str, Any]:
  """eval.diagnostics (diagnostics.py) on the run's first train batch, at initialisation and after training."""
  objective, model, depth = run.objective, run.model, int(cfg.model.depth)
  batch = objective.train_batch(0, int(cfg.train.batch_size), 0, 1)

  def step_losses(params, arrays):
    sums = masked_lm.eval_sums(params, arrays, model=model, depth=depth)
    return sums['ce'] / jnp.maximum(sums['count'], 1.0)

  def diagnose(params):
    return diagnostics_lib.diagnose(model, params, batch, objective.loss_fn, depth, step_losses)

  init = loop.init_state(model, objective, cfg, optax.sgd(0.0), sharding.make_mesh()).params
  out = {'init': diagnose(init), 'final': diagnose(run.final_params)}
  for when, diag in out.items():
    print(f'  diagnostics at {when}: {diagnostics_lib.summary_line(diag)}', flush=True)
  return out


@task_lib.register('mlm')
class MLMTask(task_lib.Task):
  """Registered as config.task='mlm'."""
  summary_metrics = (('mlm_loss', 'min'), ('masked_accuracy', 'max'), ('steps', 'max'), ('train_seconds', 'min'))
  evaluators = {'masked_lm': masked_lm.MaskedLMEval}
  eval_file_field = 'data.eval_files'

  def name_part(self, path: str, value: Any) -> str | None:
    return format_value(float(value)) if path == 'flops_budget' else None

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> MLMContext:
    del config
    return MLMContext(pathlib.Path(workdir))

  def build_model(self, config: ml_collections.ConfigDict, context: MLMContext):
    vocab_size = context.data(config.data).vocab_size
    return models.build(config.model, vocab_size=vocab_size, num_classes=vocab_size, seq_len=int(config.data.seq_len))

  def objective(self, config, model, context: MLMContext, scan_unroll: int | bool = 1) -> loop.Objective:
    data = context.data(config.data)
    _check_enough_text(config, data)
    return masked_lm.make_objective(config, model, data, scan_unroll)

  def record(self, config: ml_collections.ConfigDict, run: Any) -> dict[str, Any]:
    """The study's own figures: budget, tokens seen, the analytic FLOPs beside XLA's, diagnostics."""
    steps, xla = int(config.train.steps), float(run.budget.flops_per_step)
    analytic = masked_lm.analytic_train_flops(config, run.model.vocab_size)
    print(f'  FLOPs per train step (batch {config.train.batch_size}): {xla:.4g} XLA cost analysis, {analytic:.4g} '
          f'analytic (ratio {xla / max(analytic, 1):.3f})', flush=True)
    record = dict(flops=float(config.flops_budget) or steps * xla, flops_trained=steps * xla, steps=steps,
                  seq_len=int(config.data.seq_len), tokens_seen=steps * int(config.train.batch_size) * int(
                      config.data.seq_len), lr=float(config.train.lr), depth=int(config.model.depth),
                  flops_per_step_xla=xla, flops_per_step_analytic=float(analytic),
                  architecture=str(config.model.name))
    if bool(config.eval.diagnostics):
      record['diagnostics'] = _diagnostics(config, run)
    return record

  def report_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    print(f'  {report.overall_line(record)}', flush=True)

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: MLMContext) -> None:
    """results.json/.md and accuracy_vs_compute.png over the finished runs (an ablation: baseline points)."""
    data = context.data(config.data)
    baseline = masked_lm.unigram_baseline(context.eval_batches(config))
    report.write_outputs(workdir, records, report.describe(config, data), baseline)

  def report_evaluation(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, results: dict[str, Any],
                        context: MLMContext) -> None:
    """results{_files}.json/.md over the runs scored; on the fixed eval set, each run's record is updated."""
    records = []
    for res in results.values():
      path = res.run_dir / ('result.json' if (res.run_dir / 'result.json').is_file() else 'results.json')
      scores = {k: v for k, v in res.figures.items() if k not in ('checkpoint', 'checkpoint_step')}
      record = dict(read_json(path), **scores)
      if res.file is None:
        write_json(path, record)
      records.append(record)
      print(report.overall_line(record), flush=True)
    first = next(iter(results.values()))
    source = first.file or ''
    suffix = ('_' + '_'.join(pathlib.Path(f).stem for f in text_lib.split_files(source))) if source else ''
    data = context.data(first.config.data)  # The data the runs were trained on.
    scored = mlm_batches.MLMData(data.tokenizer, data.vocab_size, data.special_ids, data.train_tokens_NxL,
                                 np.zeros((first.evaluator.eval_sequences, 1), np.int32))
    trained = first.config
    report.write_outputs(workdir, records, report.describe(trained, scored, source),
                         masked_lm.unigram_baseline(first.evaluator.batches), suffix)
    print(tables.markdown_table(('model', 'FLOPs', 'masked acc', 'MLM loss'),
                                [[r['model'], f'{r["flops"]:.3g}', f'{r["masked_accuracy"]:.4f} ± '
                                  f'{r["masked_accuracy_std"]:.4f}', f'{r["mlm_loss"]:.4f} ± {r["mlm_loss_std"]:.4f}']
                                 for r in report.summarize(records)]), flush=True)

  def normalize_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
    """Earlier releases: `hidden`, the model section's lr (0 = train.lr), detach and deep_supervision. Text files
    as the paths they name (`{shared}/...` in the shared data folder; earlier releases wrote those out)."""
    settings = dict(settings)
    lr = settings.pop('model.lr', 0.0)
    if lr:
      settings['train.lr'] = lr
    for key in ('data.files', 'data.eval_files'):
      if isinstance(settings.get(key), str):
        settings[key] = ','.join(text_lib.split_files(settings[key]))
    return workdir_lib.rename_fields(settings, {'model.hidden': 'model.width', 'model.detach': 'train.detach',
                                                'model.deep_supervision': 'train.deep_supervision'})
