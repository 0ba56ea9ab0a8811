"""The MLM study: every model x FLOP budget x seed, trained, scored on fixed masks, tabulated, plotted.

Layout of the workdir W:
  tokenizer.json, mlm_tokens/          shared by every run (prepared once)
  study_config.json                    the config of the first study run in W
  runs/<model>_<budget>_s<seed>/       one resumable run: checkpoints, metrics.jsonl,
                                       config.json (its steps), result.json (when finished)
  results.json, results.md, accuracy_vs_compute.png   over every finished run in W
"""
import copy
import json
import math
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

import models
from data import mlm as mlm_data
from data import text as text_lib
from data import tokenizer as tokenizer_lib
from train import checkpoint as ckpt_lib
from train import loop
from train import mlm as mlm_lib
from train import optim
from train import plots
from train import sharding
from train.state import eval_params

RUNS_DIR = 'runs'
RESULT_FILE = 'result.json'
PLOT_FILE = 'accuracy_vs_compute.png'
# Train fields that, with the model section and the data below, define what a run computes.
_KEY_TRAIN_FIELDS = ('batch_size', 'lr', 'schedule', 'final_lr_fraction', 'weight_decay', 'b1', 'b2',
                     'grad_clip', 'ema_decay', 'deep_supervision', 'detach', 'max_predictions', 'readout_group')
_KEY_DATA_FIELDS = ('vocab_size', 'lowercase', 'seq_len', 'add_cls', 'mask_prob', 'seed')


# --- study grid -------------------------------------------------------------------------------------


def study_grid(config: ml_collections.ConfigDict) -> tuple[list[str], list[float], list[int]]:
  """(models, budgets, seeds) from config.study, checked."""
  names = [n.strip() for n in str(config.study.models).split(',') if n.strip()]
  if not names:
    raise ValueError('study.models is empty; name at least one section of config.models (e.g. bert,trm)')
  for name in names:
    if name not in config.models:
      raise ValueError(f'study.models names {name!r}, which has no section config.models.{name} '
                       f'(have {sorted(config.models.keys())})')
  try:
    budgets = [float(b) for b in str(config.study.flops_budgets).split(',') if b.strip()]
    seeds = [int(s) for s in str(config.study.seeds).split(',') if s.strip()]
  except ValueError as e:
    raise ValueError(f'study.flops_budgets / study.seeds must be comma-separated numbers: {e}') from e
  if not budgets or any(not b > 0 or not math.isfinite(b) for b in budgets):
    raise ValueError(f'study.flops_budgets={config.study.flops_budgets!r} must list positive FLOP counts')
  if not seeds:
    raise ValueError('study.seeds is empty')
  return names, budgets, seeds


def budget_label(budget: float) -> str:
  """1e12 -> '1e12', 3.5e11 -> '3.5e11' (run directory names)."""
  mantissa, exponent = f'{budget:.3e}'.split('e')
  return f'{mantissa.rstrip("0").rstrip(".")}e{int(exponent)}'


def run_name(model: str, budget: float, seed: int) -> str:
  return f'{model}_{budget_label(budget)}_s{seed}'


def config_for_model(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The config with config.models[name] as config.model (and its lr, when set, as train.lr)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.model = copy.deepcopy(config.models[name])
    if float(cfg.model.get('lr', 0.0)) > 0:
      cfg.train.lr = float(cfg.model.lr)
  return cfg


def run_key(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """What must match for a run directory to be reused: model section, optimizer, data settings."""
  return dict(model=cfg.model.to_dict(),
              train={k: cfg.train[k] for k in _KEY_TRAIN_FIELDS},
              data={k: cfg.data.get(k) for k in _KEY_DATA_FIELDS},
              warmup_fraction=float(cfg.study.warmup_fraction), base_warmup_steps=int(cfg.train.warmup_steps))


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def _check_key(path: pathlib.Path, saved_key: dict[str, Any] | None, key: dict[str, Any]) -> None:
  """Raises when a run directory was made with other settings than `key` (the current config)."""
  if saved_key is None:
    return
  saved, current = _flatten(json.loads(json.dumps(saved_key))), _flatten(json.loads(json.dumps(key)))
  differs = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
  if differs:
    raise ValueError(f'{path} was made with other settings than the current config (differs: '
                     f'{", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differs)}); '
                     'use a fresh --workdir for a study with other settings')


# --- FLOPs per step ---------------------------------------------------------------------------------


def measure_flops(cfg: ml_collections.ConfigDict, model, data: mlm_data.MLMData) -> dict[str, float]:
  """FLOPs of one train step: XLA's cost analysis of the compiled step, and the analytic estimate.

  The step is compiled with the depth scan fully unrolled, because XLA counts
  the body of a loop only once; the runs themselves train with the loop. It is
  compiled for one device and the whole global batch: the cost analysis of a
  program partitioned over N devices counts one device's share, which would
  make a run on N devices train N times its FLOP budget. The readout slots are
  those of the real run (train.readout_group is resolved for all devices).
  """
  cfg = copy.deepcopy(cfg)
  with cfg.unlocked():
    cfg.train.steps = max(int(cfg.train.steps), 1000)  # Any value: FLOPs do not depend on the schedule.
  one_device = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
  task = mlm_lib.MLMTask(cfg, model, data, scan_unroll=True)
  tx, schedule = optim.make_optimizer(cfg.train)
  abstract_state = jax.eval_shape(lambda: loop.init_state(model, task, cfg, tx, one_device))
  global_batch = task.train_batch(0, int(cfg.train.batch_size), 0, 1)
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in global_batch.items()}
  step_fn = loop.jit_train_step(task, tx, schedule, cfg, one_device)
  start = time.perf_counter()
  xla = loop.compiled_flops(step_fn, abstract_state, abstract_batch)
  analytic = mlm_lib.analytic_train_flops(cfg, data.vocab_size)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state.params))
  logging.info('%s: FLOPs per train step %.4g (XLA, compiled in %.1fs), %.4g (analytic)', cfg.model.name, xla,
               time.perf_counter() - start, analytic)
  return dict(xla=xla, analytic=analytic, params=n_params)


def steps_for_budget(budget: float, flops_per_step: float) -> int:
  return max(1, int(round(budget / flops_per_step)))


# --- one run ----------------------------------------------------------------------------------------


def _run_config(base: ml_collections.ConfigDict, run_dir: pathlib.Path, budget: float, seed: int,
                flops_per_step: float) -> ml_collections.ConfigDict:
  """The run's config: its seed, and steps/warmup from its budget (or from its saved config on resume)."""
  cfg = copy.deepcopy(base)
  key = run_key(base)
  saved_path = run_dir / 'config.json'
  with cfg.unlocked():
    cfg.seed = int(seed)
    if saved_path.is_file():
      saved = json.loads(saved_path.read_text())
      _check_key(saved_path, saved.get('run_key'), key)
      cfg.train.steps = int(saved['train']['steps'])
      cfg.train.warmup_steps = int(saved['train']['warmup_steps'])
    else:
      steps = steps_for_budget(budget, flops_per_step)
      cfg.train.steps = steps
      cfg.train.warmup_steps = min(int(base.train.warmup_steps), int(float(base.study.warmup_fraction) * steps))
  return cfg


def _train_run(cfg: ml_collections.ConfigDict, run_dir: pathlib.Path, model, data: mlm_data.MLMData,
               evaluator: mlm_lib.Evaluator, flops: dict[str, float], budget: float,
               key: dict[str, Any]) -> dict[str, Any]:
  """Trains (or resumes) one run, scores it, writes run_dir/result.json; returns the record.

  `key` is the study-level run_key (before the run's steps and warmup were set).
  """
  run_dir.mkdir(parents=True, exist_ok=True)
  saved = json.loads(cfg.to_json())
  saved['run_key'] = key
  ckpt_lib.write_json(run_dir / 'config.json', saved)
  task = mlm_lib.MLMTask(cfg, model, data, evaluator)
  result = loop.train(cfg, run_dir, model, task)
  steps = int(cfg.train.steps)
  if task.last_eval is not None and task.last_eval[0] == steps:
    scores = task.last_eval[1]
  else:  # Resumed after the last step: the loop did not evaluate.
    scores = evaluator(eval_params(result.state))
  result.checkpoints.close()
  flops_per_step = flops['xla'] or flops['analytic']
  record = dict(
      model=str(cfg.model.name), run=run_dir.name, flops=float(budget), flops_trained=steps * flops_per_step,
      seed=int(cfg.seed), steps=steps, warmup_steps=int(cfg.train.warmup_steps),
      batch_size=int(cfg.train.batch_size), seq_len=int(cfg.data.seq_len),
      tokens_seen=steps * int(cfg.train.batch_size) * int(cfg.data.seq_len), lr=float(cfg.train.lr),
      depth=int(cfg.model.depth), params=int(flops['params']), flops_per_step_xla=float(flops['xla']),
      flops_per_step_analytic=float(flops['analytic']), train_seconds=float(result.train_seconds),
      **scores, run_key=key)
  ckpt_lib.write_json(run_dir / RESULT_FILE, record)
  return record


def overall_line(record: dict[str, Any]) -> str:
  """The per-run summary line scripts grep for."""
  return (f'{record["model"]} flops={record["flops"]:.3g} seed={record["seed"]} steps={record["steps"]}: '
          f'masked_accuracy={record["masked_accuracy"]:.4f} mlm_loss={record["mlm_loss"]:.4f} '
          f'perplexity={record["perplexity"]:.2f} ({record["train_seconds"]:.1f}s)')


def build_model(cfg: ml_collections.ConfigDict, vocab_size: int):
  return models.get_model(cfg.model, vocab_size=vocab_size, num_classes=vocab_size, seq_len=int(cfg.data.seq_len))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Runs the whole study in `workdir` (resuming; finished runs are skipped), writes tables and plot."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  names, budgets, seeds = study_grid(config)
  if bool(config.study.get('compilation_cache', False)) and not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str((workdir / 'xla_cache').absolute()))
  start = time.perf_counter()
  data = mlm_data.prepare(config.data, workdir, process_index=jax.process_index())
  print(f'MLM data: vocab {data.vocab_size}, train {data.train_tokens_NxL.shape[0]:,} x '
        f'{data.train_tokens_NxL.shape[1]} tokens, eval {data.eval_tokens_NxL.shape[0]:,} sequences '
        f'({time.perf_counter() - start:.1f}s)', flush=True)
  if not (workdir / 'study_config.json').is_file():
    ckpt_lib.write_json(workdir / 'study_config.json', json.loads(config.to_json()))
  mesh = sharding.make_mesh()
  eval_bs = int(config.eval.batch_size)
  sharding.check_batch_size(eval_bs, mesh, 'eval.batch_size')
  batches = mlm_lib.eval_set(data.eval_tokens_NxL, config.data, eval_bs, data.vocab_size, data.special_ids,
                             mlm_lib.readout_group(config, eval_bs, 'eval.batch_size'))
  baseline = mlm_lib.unigram_baseline(batches)
  total_runs = len(names) * len(budgets) * len(seeds)
  done = 0
  records = []
  for name in names:
    base = config_for_model(config, name)
    model = build_model(base, data.vocab_size)
    evaluator = mlm_lib.Evaluator(model, int(base.model.depth), batches, mesh)
    flops = None
    for budget in budgets:
      for seed in seeds:
        done += 1
        run_dir = workdir / RUNS_DIR / run_name(name, budget, seed)
        finished = run_dir / RESULT_FILE
        if finished.is_file():
          record = json.loads(finished.read_text())
          _check_key(finished, record.get('run_key'), run_key(base))
          print(f'[run {done}/{total_runs}] {run_dir.name}: finished earlier, skipped. {overall_line(record)}',
                flush=True)
          records.append(record)
          continue
        if flops is None:
          flops = measure_flops(base, model, data)
          print(f'{name}: {flops["params"]:,} params; FLOPs per train step (batch {base.train.batch_size}): '
                f'{flops["xla"]:.4g} XLA cost analysis, {flops["analytic"]:.4g} analytic '
                f'(ratio {flops["xla"] / max(flops["analytic"], 1):.3f})', flush=True)
          if not flops['xla'] > 0:
            logging.warning('XLA reported no FLOPs on this backend; budgets use the analytic estimate')
        cfg = _run_config(base, run_dir, budget, seed, flops['xla'] or flops['analytic'])
        print(f'[run {done}/{total_runs}] {run_dir.name}: {cfg.train.steps} steps x {flops["xla"]:.4g} FLOPs '
              f'(budget {budget:.3g}), warmup {cfg.train.warmup_steps}, lr {cfg.train.lr:g}', flush=True)
        record = _train_run(cfg, run_dir, model, data, evaluator, flops, budget, run_key(base))
        print(f'[run {done}/{total_runs}] {overall_line(record)}', flush=True)
        records.append(record)
        write_outputs(workdir, collect_records(workdir), describe(config, data), baseline)
  write_outputs(workdir, collect_records(workdir), describe(config, data), baseline)
  print(f'study done in {time.perf_counter() - start:.0f}s: {workdir / "results.md"}, {workdir / PLOT_FILE}',
        flush=True)
  return records


# --- tables and plot --------------------------------------------------------------------------------


def collect_records(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """Every finished run in workdir/runs, sorted by model, budget and seed."""
  records = [json.loads(p.read_text()) for p in sorted((workdir / RUNS_DIR).glob(f'*/{RESULT_FILE}'))]
  return sorted(records, key=lambda r: (r['model'], r['flops'], r['seed']))


def describe(config: ml_collections.ConfigDict, data: mlm_data.MLMData, eval_source: str = '') -> str:
  """One line on the data behind the numbers."""
  source = config.data.files or f'HF {config.data.hf_name}/{config.data.hf_config}'
  evaluated = eval_source or (config.data.eval_files or
                              (f'last {config.data.eval_fraction:g} of the lines' if config.data.files
                               else 'its validation split'))
  return (f'Trained on {source}; evaluated on {evaluated} ({data.eval_tokens_NxL.shape[0]:,} sequences, '
          f'{config.data.num_eval_sequences} scored with fixed masks, seed {config.data.eval_seed}). '
          f'WordPiece vocab {data.vocab_size}, sequences of {config.data.seq_len} tokens, '
          f'{config.data.mask_prob:.0%} masked (80/10/10).')


def _mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one value)."""
  arr = np.asarray(values, np.float64)
  return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean and std over seeds per (model, budget)."""
  groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
  for r in records:
    groups.setdefault((r['model'], r['flops']), []).append(r)
  rows = []
  for (model, budget), runs in sorted(groups.items()):
    row = dict(model=model, flops=budget, seeds=len(runs), steps=int(np.mean([r['steps'] for r in runs])),
               params=runs[0]['params'], flops_trained=float(np.mean([r['flops_trained'] for r in runs])),
               flops_per_step_xla=runs[0]['flops_per_step_xla'],
               flops_per_step_analytic=runs[0]['flops_per_step_analytic'],
               train_seconds=float(np.mean([r['train_seconds'] for r in runs])))
    for key in ('masked_accuracy', 'mlm_loss', 'perplexity'):
      row[key], row[f'{key}_std'] = _mean_std([r[key] for r in runs])
    rows.append(row)
  return rows


def results_markdown(records: list[dict[str, Any]], description: str, baseline: dict[str, float],
                     title: str = '') -> str:
  """results.md: mean ± std over seeds per model and budget, then every run."""
  summary = summarize(records)
  pm = lambda row, k, f: f'{row[k]:{f}} ± {row[k + "_std"]:{f}}'  # pylint: disable=unnecessary-lambda-assignment
  header = ('model', 'FLOPs budget', 'steps', 'seeds', 'params', 'masked accuracy', 'MLM loss', 'perplexity',
            'FLOPs/step (XLA)', 'FLOPs/step (analytic)', 'train s')
  rows = [[r['model'], f'{r["flops"]:.3g}', r['steps'], r['seeds'], f'{r["params"]:,}',
           pm(r, 'masked_accuracy', '.4f'), pm(r, 'mlm_loss', '.4f'), pm(r, 'perplexity', '.2f'),
           f'{r["flops_per_step_xla"]:.4g}', f'{r["flops_per_step_analytic"]:.4g}', f'{r["train_seconds"]:.1f}']
          for r in summary]
  per_run = [[r['run'], r['steps'], f'{r["flops_trained"]:.4g}', f'{r["masked_accuracy"]:.4f}',
              f'{r["mlm_loss"]:.4f}', f'{r["perplexity"]:.2f}', f'{r["train_seconds"]:.1f}'] for r in records]
  return (f'# {title or "MLM study: masked accuracy and loss at matched training FLOPs"}\n\n{description}\n'
          'Mean ± sample std over seeds; FLOPs per step from XLA\'s cost analysis of the compiled train step '
          '(steps = budget / that). Without context (unigram of the eval targets): masked accuracy '
          f'{baseline["accuracy"]:.4f} (always the most frequent target), MLM loss {baseline["mlm_loss"]:.4f}.\n\n'
          + plots.markdown_table(header, rows)
          + '\n## Runs\n\n'
          + plots.markdown_table(('run', 'steps', 'FLOPs trained', 'masked accuracy', 'MLM loss', 'perplexity',
                                  'train s'), per_run))


def plot_accuracy_vs_compute(records: list[dict[str, Any]], path: pathlib.Path, title: str,
                             baseline: dict[str, float]) -> pathlib.Path:
  """Two panels against training FLOPs (log x): masked accuracy and MLM loss, mean ± std over seeds,
  with the unigram baseline (what ignoring the context scores) as a dashed line."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  # plots sets the Agg backend.
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  summary = summarize(records)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  panels = ((axes[0], 'masked_accuracy', 'masked-token accuracy', 'accuracy', 'always the most frequent token'),
            (axes[1], 'mlm_loss', 'MLM loss', 'mlm_loss', 'unigram frequencies'))
  for ax, key, label, baseline_key, baseline_label in panels:
    ax.axhline(baseline[baseline_key], color='0.5', linestyle='--', linewidth=1,
               label=f'no context: {baseline_label} ({baseline[baseline_key]:.3f})')
    for i, model in enumerate(sorted({r['model'] for r in summary})):
      rows = [r for r in summary if r['model'] == model]
      seeds = max(r['seeds'] for r in rows)
      ax.errorbar([r['flops_trained'] for r in rows], [r[key] for r in rows], yerr=[r[f'{key}_std'] for r in rows],
                  marker='o', markersize=4, capsize=3, color=f'C{i}',
                  label=f'{model} ({rows[0]["params"]:,} params, {seeds} seed{"s" * (seeds > 1)})')
    ax.set_xscale('log')
    budgets = sorted({r['flops'] for r in summary})
    ax.xaxis.set_major_locator(ticker.FixedLocator(budgets))  # One labelled tick per budget.
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([budget_label(b) for b in budgets]))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel('training FLOPs (XLA-counted; ticks at the budgets)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_outputs(workdir: pathlib.Path, records: list[dict[str, Any]], description: str,
                  baseline: dict[str, float], suffix: str = '') -> None:
  """results{suffix}.json / .md and accuracy_vs_compute{suffix}.png in workdir (process 0)."""
  if jax.process_index() != 0 or not records:
    return
  ckpt_lib.write_json(workdir / f'results{suffix}.json', records)
  (workdir / f'results{suffix}.md').write_text(results_markdown(records, description, baseline))
  plot_accuracy_vs_compute(records, workdir / f'{pathlib.Path(PLOT_FILE).stem}{suffix}.png',
                           'MLM: accuracy and loss vs training compute (mean ± std over seeds)', baseline)


# --- evaluation mode --------------------------------------------------------------------------------


def _eval_tokens_from_files(files: str, data_cfg: Any, workdir: pathlib.Path) -> np.ndarray:
  """Packs `files` with the study's tokenizer, as the study packed its own eval text."""
  tokenizer = tokenizer_lib.load_tokenizer(workdir)
  ids = tokenizer_lib.special_ids(tokenizer)
  lines = []
  for f in text_lib.split_files(files):
    lines.extend(text_lib.read_lines(f))
  stream_T = tokenizer_lib.encode_to_array(tokenizer, lines, ids.sep)
  return mlm_data.pack_sequences(stream_T, int(data_cfg.seq_len), ids.cls if data_cfg.get('add_cls', True) else None)


def _restore_params(cfg: ml_collections.ConfigDict, run_dir: pathlib.Path, model, data: mlm_data.MLMData,
                    mesh: jax.sharding.Mesh) -> Any:
  """The eval params of run_dir's latest checkpoint."""
  task = mlm_lib.MLMTask(cfg, model, data)
  tx, _ = optim.make_optimizer(cfg.train)
  abstract = jax.eval_shape(lambda: loop.init_state(model, task, cfg, tx, mesh))
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding.replicated(mesh)),
                          abstract)
  checkpoints = ckpt_lib.Checkpoints(run_dir, read_only=True)
  restored = checkpoints.restore(abstract, which='latest')
  checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {run_dir / "checkpoints"} although {run_dir / RESULT_FILE} exists')
  return eval_params(restored[0])


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Re-scores every finished run in workdir on the fixed eval masks (or on config.data.eval_files).

  Without eval_files, the runs' result.json and the study's tables are rewritten;
  with them, results_<stem>.json/.md and accuracy_vs_compute_<stem>.png are written.
  """
  workdir = pathlib.Path(workdir)
  saved_path = workdir / 'study_config.json'
  if not saved_path.is_file():
    raise FileNotFoundError(f'{saved_path} not found: {workdir} holds no MLM study (train it first)')
  study_cfg = ml_collections.ConfigDict(json.loads(saved_path.read_text()))
  run_dirs = [p.parent for p in sorted((workdir / RUNS_DIR).glob(f'*/{RESULT_FILE}'))]
  if not run_dirs:
    raise FileNotFoundError(f'no finished run in {workdir / RUNS_DIR}: train first with --mode=train')
  data = mlm_data.prepare(study_cfg.data, workdir, process_index=jax.process_index())
  eval_files = str(config.data.eval_files or '')
  suffix = ''
  eval_tokens_NxL = data.eval_tokens_NxL
  if eval_files and eval_files != str(study_cfg.data.eval_files or ''):
    eval_tokens_NxL = _eval_tokens_from_files(eval_files, study_cfg.data, workdir)
    suffix = '_' + '_'.join(pathlib.Path(f).stem for f in text_lib.split_files(eval_files))
  mesh = sharding.make_mesh()
  eval_bs = int(config.eval.batch_size)
  sharding.check_batch_size(eval_bs, mesh, 'eval.batch_size')
  batches = mlm_lib.eval_set(eval_tokens_NxL, study_cfg.data, eval_bs, data.vocab_size, data.special_ids,
                             mlm_lib.readout_group(config, eval_bs, 'eval.batch_size'))
  print(f'scoring {len(run_dirs)} runs on {eval_files or "the study eval set"}: '
        f'{sum(int((b["weights"] > 0).sum()) for b in batches):,} masked positions', flush=True)
  evaluators: dict[str, tuple[Any, mlm_lib.Evaluator]] = {}
  records = []
  for run_dir in run_dirs:
    cfg = ml_collections.ConfigDict(json.loads((run_dir / 'config.json').read_text()))
    record = json.loads((run_dir / RESULT_FILE).read_text())
    model_key = json.dumps(cfg.model.to_dict(), sort_keys=True) + str(cfg.data.seq_len)
    if model_key not in evaluators:
      model = build_model(cfg, data.vocab_size)
      evaluators[model_key] = (model, mlm_lib.Evaluator(model, int(cfg.model.depth), batches, mesh))
    model, evaluator = evaluators[model_key]
    scores = evaluator(_restore_params(cfg, run_dir, model, data, mesh))
    record.update(scores)
    if not suffix:
      ckpt_lib.write_json(run_dir / RESULT_FILE, record)
    print(overall_line(record), flush=True)
    records.append(record)
  records.sort(key=lambda r: (r['model'], r['flops'], r['seed']))
  source = eval_files if suffix else ''
  write_outputs(workdir, records, describe(study_cfg, mlm_data.MLMData(
      data.tokenizer, data.vocab_size, data.special_ids, data.train_tokens_NxL, eval_tokens_NxL), source),
                mlm_lib.unigram_baseline(batches), suffix)
  print(plots.markdown_table(('model', 'FLOPs', 'masked acc', 'MLM loss'),
                             [[r['model'], f'{r["flops"]:.3g}', f'{r["masked_accuracy"]:.4f} ± '
                               f'{r["masked_accuracy_std"]:.4f}', f'{r["mlm_loss"]:.4f} ± {r["mlm_loss_std"]:.4f}']
                              for r in summarize(records)]), flush=True)
  return records
