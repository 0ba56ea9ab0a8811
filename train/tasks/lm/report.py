"""Tables and plots of the language-model task: one run's results.md, a sweep's results.md and bpb_vs_compute.png."""
import collections
import pathlib
from typing import Any

from train import plots
from train import tables
from train.files import write_json, write_text

PLOT_FILE = 'bpb_vs_compute.png'


def summary_line(record: dict[str, Any]) -> str:
  return (f'{record["model"]} validation: bits_per_byte={record["bits_per_byte"]:.4f} '
          f'perplexity={record["perplexity"]:.2f} (unigram {record["unigram_bits_per_byte"]:.4f}, bytes '
          f'{record["byte_bits_per_byte"]:.4f} bits per byte; {record["tokens"]:,} tokens)')


def write_run(run_dir: pathlib.Path, record: dict[str, Any]) -> None:
  text = (f'# Language model: {record["model"]} ({record["params"]:,} params), {record["train_steps"]} steps x '
          f'batch {record["batch_size"]}' + (f' = {record["train_flops"]:.3g} training FLOPs (XLA)'
                                              if 'train_flops' in record else '') + '\n\n' + summary_line(record) + '\n')
  final = record.get('final_train_metrics') or {}
  if 'expert_load_max' in final:  # A mixture of experts: its routing over the last logged steps.
    text += (f'\nRouting (the last logged training steps): fraction of assignments per expert '
             f'{final["expert_load_min"]:.3f} (min) to {final["expert_load_max"]:.3f} (max), dropped '
             f'{final.get("dropped_fraction", 0.0):.3f}; load-balancing loss {final.get("load_balance", 0.0):.4g}, '
             f'router z-loss {final.get("router_z", 0.0):.4g} (weighted)\n')
  if record.get('bits_per_byte_by_loops'):
    rows = [[k, f'{v:.4f}'] for k, v in record['bits_per_byte_by_loops'].items()]
    text += '\n## Test-time loops\n\n' + tables.markdown_table(('loops', 'bits per byte'), rows)
  write_text(run_dir / 'results.md', text)


def _budget(record: dict[str, Any]) -> float:
  return float(record.get('point', {}).get('flops_budget') or record.get('train_flops', 0.0))


def write_sweep(workdir: pathlib.Path, records: list[dict[str, Any]]) -> None:
  """results.md/.json and bpb_vs_compute.png: validation bits per byte against training FLOPs, mean ± std over
  seeds, with the context-free baselines."""
  by_model = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in records:
    by_model[r['model']][_budget(r)].append(r)
  series, errors, rows = {}, {}, []
  for label, budgets in by_model.items():
    points = sorted(budgets.items())
    stats = [tables.mean_std([r['bits_per_byte'] for r in rs]) for _, rs in points]
    series[label] = ([b for b, _ in points], [m for m, _ in stats])
    errors[label] = [s for _, s in stats]
    for budget, rs in points:
      rows.append([label, f'{budget:.3g}', len(rs), rs[0]['params'], rs[0]['train_steps'],
                   tables.pm([r['bits_per_byte'] for r in rs], '.4f'), tables.pm([r['perplexity'] for r in rs], '.2f'),
                   tables.pm([r['loss'] for r in rs], '.4f')])
  first = records[0]
  references = {'unigram': first['unigram_bits_per_byte'], 'bytes, order 0': first['byte_bits_per_byte']}
  plots.plot_lines(series, workdir / PLOT_FILE, 'Language models: validation bits per byte vs training FLOPs '
                   '(mean ± std over seeds)', 'training FLOPs (XLA)', 'bits per byte', log_x=True, errors=errors,
                   ylim=None, references=references)
  header = ('model', 'training FLOPs', 'seeds', 'params', 'steps', 'bits per byte', 'perplexity', 'loss per token')
  text = ('# Language models at matched training FLOPs (validation; mean ± std over seeds)\n\n'
          f'Context-free references on the same text: the training text\'s token unigram '
          f'{references["unigram"]:.4f} bits per byte (loss {first["unigram_loss"]:.4f}), its byte frequencies '
          f'{references["bytes, order 0"]:.4f}. Bits per byte: the summed loss in bits over the UTF-8 bytes of the '
          f'tokens scored ({first["bytes"]:,} bytes, {first["tokens"]:,} tokens).\n\n' + tables.markdown_table(header, rows))
  write_text(workdir / 'results.md', text)
  write_json(workdir / 'results.json', {r['run']: r for r in records})
