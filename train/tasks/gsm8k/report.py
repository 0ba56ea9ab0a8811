"""Tables and plots of GSM8K fine-tuning: a run's summary line; a sweep's results.md, accuracy_vs_compute.png and
accuracy_vs_tokens.png (test accuracy against fine-tuning FLOPs and against tokens written per problem)."""
import collections
import pathlib
import re
from typing import Any

from data import gsm8k
from train import plots
from train import tables
from train.files import write_json, write_text


def summary_line(record: dict[str, Any]) -> str:
  lo, hi = record['flexible_extract_ci95']
  return (f'{record["model"]}: GSM8K test ({record["problems"]} problems) flexible_extract='
          f'{record["flexible_extract"]:.4f} (95% {lo:.4f}-{hi:.4f}) strict_match={record["strict_match"]:.4f}, '
          f'{record["new_tokens_per_problem"]:.0f} tokens written per problem')


def layout(completion: str) -> str:
  """A completion for a reader: its reasoning a step a line (sentences, equations), then the parsed answer."""
  body = completion.split('####')[0]
  steps = [s.strip() for line in body.splitlines() for s in re.split(r'(?<=[.!?])\s+|(?<=>>)\s+', line) if s.strip()]
  strict, flexible = gsm8k.extract(completion, 'gsm8k')
  if strict is not None:
    verdict = f'answer: {gsm8k.normalize(strict)}'
  elif flexible is not None:
    verdict = f'answer: {gsm8k.normalize(flexible)} (the last number; no "#### N" line)'
  else:
    verdict = 'answer: - (no number written)'
  return '\n'.join([f'  {s}' for s in steps] + [verdict])


def write_sweep(workdir: pathlib.Path, records: list[dict[str, Any]]) -> None:
  by_answer = collections.defaultdict(list)
  for r in records:
    by_answer[r['model']].append(r)
  compute, tokens, rows = {}, {}, []
  for label, rs in sorted(by_answer.items()):
    rs = sorted(rs, key=lambda r: r.get('train_flops', 0.0))
    compute[label] = ([r.get('train_flops', 0.0) for r in rs], [r['flexible_extract'] for r in rs])
    tokens[label] = ([r['new_tokens_per_problem'] for r in rs], [r['flexible_extract'] for r in rs])
    for r in rs:
      lo, hi = r['flexible_extract_ci95']
      rows.append([label, f'{r.get("train_flops", 0.0):.3g}', r['train_steps'], r['problems_trained'],
                   f'{r["flexible_extract"]:.4f} ({lo:.4f}-{hi:.4f})', f'{r["strict_match"]:.4f}',
                   f'{r["new_tokens_per_problem"]:.0f}', r['problems']])
  plots.plot_lines(compute, workdir / 'accuracy_vs_compute.png', 'GSM8K test accuracy vs fine-tuning FLOPs',
                   'fine-tuning FLOPs (XLA)', 'accuracy (flexible extract)', log_x=True, ylim=None)
  plots.plot_lines(tokens, workdir / 'accuracy_vs_tokens.png', 'GSM8K test accuracy vs tokens written per problem',
                   'tokens written per problem', 'accuracy (flexible extract)', log_x=True, ylim=None)
  header = ('answer format', 'fine-tuning FLOPs', 'steps', 'problems trained', 'flexible extract (95%)',
            'strict match', 'tokens written', 'problems scored')
  write_text(workdir / 'results.md', '# GSM8K fine-tuning: test accuracy by answer format\n\n'
             + tables.markdown_table(header, rows))
  write_json(workdir / 'results.json', {r['run']: r for r in records})
