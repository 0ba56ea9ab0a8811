"""MLM tables and figures over the finished runs: results.json, results.md, accuracy_vs_compute.png."""
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from data import mlm_batches
from train import plots
from train import tables
from train.sweep import format_value
from train.workdir import write_json

PLOT_FILE = 'accuracy_vs_compute.png'


def model_label(record: dict[str, Any]) -> str:
  """What a curve stands for: the point's values but budget and seed ('bert'; 'bert, model.lr=0.003')."""
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
  write_json(workdir / f'results{suffix}.json', records)
  tables.write_atomically(workdir / f'results{suffix}.md', results_markdown(records, description, baseline))
  plot_accuracy_vs_compute(records, workdir / f'{pathlib.Path(PLOT_FILE).stem}{suffix}.png',
                           'MLM: accuracy and loss vs training compute (mean ± std over seeds)', baseline)
