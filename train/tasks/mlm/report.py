"""MLM tables and figures over the finished runs: results.json, results.md, accuracy_vs_compute.png,
depth_vs_loss.png."""
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from data import mlm_batches
from train import plots
from train import tables
from train.tables import format_value
from train.files import write_json, write_text

PLOT_FILE = 'accuracy_vs_compute.png'
DEPTH_PLOT_FILE = 'depth_vs_loss.png'


def model_label(record: dict[str, Any]) -> str:
  """What a curve stands for: the point's values but budget and seed ('bert'; 'bert, train.lr=0.003')."""
  values = {k: v for k, v in record.get('point', {}).items() if k not in ('flops_budget', 'seed')}
  if not values:
    return record['model']
  return ', '.join(str(v) if k == 'model' else f'{k}={v}' for k, v in values.items())


def overall_line(record: dict[str, Any]) -> str:
  """The per-run summary line scripts grep for."""
  return (f'{record["model"]} flops={record["flops"]:.3g} seed={record["seed"]} steps={record["steps"]}: '
          f'masked_accuracy={record["masked_accuracy"]:.4f} mlm_loss={record["mlm_loss"]:.4f} '
          f'perplexity={record["perplexity"]:.2f} ({record["train_seconds"]:.1f}s)')


def describe(config: ml_collections.ConfigDict, data: mlm_batches.MLMData, eval_source: str = '') -> str:
  """One line on the data behind the numbers."""
  source = config.data.files or f'HF {config.data.hf_name}/{config.data.hf_config}'
  evaluated = eval_source or (config.data.eval_files or
                              (f'last {config.data.eval_fraction:g} of the lines' if config.data.files
                               else 'its validation split'))
  available, wanted = data.eval_tokens_NxL.shape[0], int(config.data.num_eval_sequences)
  scored = available if wanted <= 0 else min(wanted, available)
  return (f'Trained on {source}; evaluated on {evaluated} ({available:,} sequences, '
          f'{scored:,} scored with fixed masks, seed {config.data.eval_seed}). '
          f'WordPiece vocab {data.vocab_size}, sequences of {config.data.seq_len} tokens, '
          f'{config.data.mask_prob:.0%} masked (80/10/10).')


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean and std over seeds per (model, budget)."""
  groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
  for r in records:
    groups.setdefault((model_label(r), r['flops']), []).append(r)
  rows = []
  for (model, budget), runs in sorted(groups.items()):
    row = dict(model=model, flops=budget, seeds=len(runs), steps=int(np.mean([r['steps'] for r in runs])),
               params=runs[0]['params'], flops_trained=float(np.mean([r['flops_trained'] for r in runs])),
               flops_per_step_xla=runs[0]['flops_per_step_xla'],
               flops_per_step_analytic=runs[0]['flops_per_step_analytic'],
               train_seconds=float(np.mean([r['train_seconds'] for r in runs])))
    for key in ('masked_accuracy', 'mlm_loss', 'perplexity'):
      row[key], row[f'{key}_std'] = tables.mean_std([r[key] for r in runs])
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
          + tables.markdown_table(header, rows)
          + '\n## Runs\n\n'
          + tables.markdown_table(('run', 'steps', 'FLOPs trained', 'masked accuracy', 'MLM loss', 'perplexity',
                                  'train s'), per_run))


def _is_recursive(record: dict[str, Any]) -> bool:
  return record.get('architecture', record['model']) == 'trm' or int(record.get('depth', 1)) > 1


def depth_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per recursive model and budget: masked accuracy and loss after each step at eval (1 .. the evaluated depth,
  e.g. 4x the trained one), mean and std over seeds."""
  groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
  for r in records:
    if _is_recursive(r) and r.get('loss_by_depth'):
      groups.setdefault((model_label(r), r['flops']), []).append(r)
  rows = []
  for (model, budget), runs in sorted(groups.items()):
    steps = min(len(r['loss_by_depth']) for r in runs)
    loss_SxD = np.array([r['loss_by_depth'][:steps] for r in runs])
    acc_SxD = np.array([r['accuracy_by_depth'][:steps] for r in runs])
    std = lambda a: a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])  # pylint: disable=unnecessary-lambda-assignment
    rows.append(dict(model=model, flops=budget, seeds=len(runs), trained_depth=int(runs[0]['depth']),
                     loss=loss_SxD.mean(0).tolist(), loss_std=std(loss_SxD).tolist(),
                     accuracy=acc_SxD.mean(0).tolist(), accuracy_std=std(acc_SxD).tolist()))
  return rows


def depth_markdown(rows: list[dict[str, Any]]) -> str:
  """One table per recursive model: a row per budget, a column per eval depth (fractions of the trained depth D
  up to 4D), each cell masked accuracy / MLM loss."""
  parts = []
  for model in sorted({r['model'] for r in rows}):
    mine = [r for r in rows if r['model'] == model]
    trained, evaluated = mine[0]['trained_depth'], min(len(r['loss']) for r in mine)
    columns = sorted({1, max(trained // 2, 1), trained, 2 * trained, 3 * trained, evaluated} & set(range(1, evaluated + 1)))
    header = ['FLOPs budget', 'seeds'] + [f'{d} step{"s" * (d > 1)}' + (' (trained)' if d == trained else '')
                                          for d in columns]
    body = [[f'{r["flops"]:.3g}', r['seeds']] + [f'{r["accuracy"][d - 1]:.4f} / {r["loss"][d - 1]:.4f}'
                                                 for d in columns] for r in mine]
    parts.append(f'### {model} (trained depth {trained})\n\n' + tables.markdown_table(header, body))
  return ('\n## Depth at test time\n\nMasked accuracy / MLM loss after each recurrent step at eval (TRM: a '
          'supervision step of T cycles; looped BERT: one application of its block), from 1 to the evaluated '
          'depth (eval.depth_multiplier x the trained one); mean over seeds. '
          f'All steps are in results.json (loss_by_depth, accuracy_by_depth) and {DEPTH_PLOT_FILE}.\n\n'
          + '\n'.join(parts)) if parts else ''


def plot_depth(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
  """Masked accuracy and MLM loss against the steps applied at eval, one line per recursive model at its largest
  budget (mean ± std over seeds), a dashed mark at the trained depth."""
  if not rows:
    return None
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  largest = {}
  for r in rows:
    if r['model'] not in largest or r['flops'] > largest[r['model']]['flops']:
      largest[r['model']] = r
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, key, label in ((axes[0], 'accuracy', 'masked-token accuracy'), (axes[1], 'loss', 'MLM loss')):
    for i, (model, r) in enumerate(sorted(largest.items())):
      steps = np.arange(1, len(r[key]) + 1)
      ax.errorbar(steps, r[key], yerr=r[f'{key}_std'], marker='o', markersize=3, capsize=2, color=f'C{i}',
                  label=f'{model} ({format_value(r["flops"])} FLOPs, {r["seeds"]} seed{"s" * (r["seeds"] > 1)})')
      ax.axvline(r['trained_depth'], color=f'C{i}', linestyle='--', linewidth=1, alpha=0.6)
    ax.set_xscale('log', base=2)
    ax.set_xlabel('recurrent steps at eval (dashed: trained depth)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  fig.suptitle('MLM: depth at test time (each recursive model at its largest budget)', fontsize=10)
  fig.tight_layout()
  return plots.save(fig, path)


def diagnostics_markdown(records: list[dict[str, Any]]) -> str:
  """diagnostics.md: per setting, mean over seeds of the scores and of what shows the mechanism (eval.diagnostics):
  gradient norms reaching the embeddings, the first block and the head, at init and after training; the mean
  relative change of each state per application in the last supervision step; the loss after each step."""
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in records:
    if 'diagnostics' in r:
      groups.setdefault(model_label(r), []).append(r)
  if not groups:
    return ''
  mean = lambda values: float(np.mean(values))  # pylint: disable=unnecessary-lambda-assignment

  def grad(runs, when, group):
    return mean([r['diagnostics'][when]['grad_norm'].get(group, np.nan) for r in runs])

  def change(runs, when):
    names = sorted(runs[0]['diagnostics'][when]['change'][-1])
    return ', '.join(f'{n} {mean([np.nanmean(r["diagnostics"][when]["change"][-1][n]) for r in runs]):.2g}'
                     for n in names)

  rows = []
  for label, runs in sorted(groups.items(), key=lambda kv: mean([r['mlm_loss'] for r in kv[1]])):
    by_step = np.mean([r['diagnostics']['final']['loss_by_step'] for r in runs], axis=0)
    rows.append([label, len(runs), mean([r['steps'] for r in runs]),
                 f'{mean([r["masked_accuracy"] for r in runs]):.4f}', f'{mean([r["mlm_loss"] for r in runs]):.4f}',
                 f'{grad(runs, "init", "embed"):.2g} -> {grad(runs, "final", "embed"):.2g}',
                 f'{grad(runs, "init", "block_0"):.2g} -> {grad(runs, "final", "block_0"):.2g}',
                 f'{grad(runs, "final", "head"):.2g}', change(runs, 'init'), change(runs, 'final'),
                 ' / '.join(f'{x:.3f}' for x in by_step)])
  header = ('setting', 'seeds', 'steps', 'masked acc', 'MLM loss', '|grad| embed (init -> end)',
            '|grad| block_0 (init -> end)', '|grad| head (end)', 'change per application, init',
            'change per application, end', 'train-batch loss by supervision step (end)')
  return ('# Diagnostics (mean over seeds)\n\nOn the run\'s first training batch, at initialisation and after training: '
          'the norm of the loss gradient per parameter group; ||new - old|| / ||old|| of each state per application '
          'of the network in the last supervision step (TRM: z per latent update, y per cycle; other models: the '
          'carry per step), averaged over the applications; the loss after each supervision step.\n\n'
          + tables.markdown_table(header, rows))


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
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([format_value(b) for b in budgets]))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel('training FLOPs (XLA-counted; ticks at the budgets)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return plots.save(fig, path)


def write_outputs(workdir: pathlib.Path, records: list[dict[str, Any]], description: str,
                  baseline: dict[str, float], suffix: str = '') -> None:
  """results{suffix}.json / .md and accuracy_vs_compute{suffix}.png in workdir (process 0)."""
  if jax.process_index() != 0 or not records:
    return
  # A run's `model` is its section of config.models (looped_bert), its `architecture` the registry name (bert).
  records = [dict(r, model=r.get('point', {}).get('model', r['model'])) for r in records]
  write_json(workdir / f'results{suffix}.json', records)
  depth_rows = depth_summary(records)
  write_text(workdir / f'results{suffix}.md',
                          results_markdown(records, description, baseline) + depth_markdown(depth_rows))
  plot_depth(depth_rows, workdir / f'{pathlib.Path(DEPTH_PLOT_FILE).stem}{suffix}.png')
  diagnostics = diagnostics_markdown(records)
  if diagnostics:
    write_text(workdir / f'diagnostics{suffix}.md', diagnostics)
  plot_accuracy_vs_compute(records, workdir / f'{pathlib.Path(PLOT_FILE).stem}{suffix}.png',
                           'MLM: accuracy and loss vs training compute (mean ± std over seeds)', baseline)
