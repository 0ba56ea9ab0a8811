"""Tables, plots and printed lines of the arithmetic task (one run, a sweep, an eval file, a completion)."""
import collections
import pathlib
from typing import Any

from data import arith_problems
from data.arith_problems import Problem
from train import plots
from train import tables
from train.files import write_json, write_text


def final_line(res: dict[str, Any]) -> str:
  """The line scripts read (stdout's last of --mode=eval): exact accuracy and the loops used."""
  loops = res['loops'] if res.get('loops') is not None else res.get('trained_loops') or 1
  return f'exact_accuracy={res["exact_accuracy"]:.4f} loops={loops}'


def run_summary(record: dict[str, Any]) -> str:
  ood = f', beyond {record["max_train_digits"]} digits {record["ood_exact"]:.4f}' if 'ood_exact' in record else ''
  ood += f', at Abacus offset {record["abacus_offset"]}' if record.get('abacus_offset') else ''
  written = (f', {record["generated_tokens"]:.1f} tokens written per problem ({record["thought_tokens"]:.1f} of '
             'chain of thought)' if 'generated_tokens' in record else '')
  return (f'{record["model"]} test: exact {record["test_exact"]:.4f} ({record["test_problems"]} problems), '
          f'token acc {record["token_acc"]:.4f}{ood}{written}')


def _units_first_steps(thought: str) -> list[str]:
  """cot_rev's chain of thought one step a line, each number also in the usual order ('?' where what the model
  wrote is not a number)."""
  usual = lambda text: str(int(text[::-1])) if text.isdigit() else '?'  # pylint: disable=unnecessary-lambda-assignment
  lines = []
  for i, chunk in enumerate(thought.split('+')):
    partial, has_total, total = chunk.partition('=')
    line = f'  {("+" if i else "") + chunk:<22} partial product {usual(partial)}'
    lines.append(line + (f', running sum {usual(total)}' if has_total else ''))
  lines[0] += ' (every number is written units first)'
  return lines


def layout(problem: Problem, completion: str, answer: int | None, fmt: str) -> str:
  """A completion for a reader in format `fmt`: the chain of thought one step a line (or a word that there is
  none), then the parsed answer."""
  prompt = f'{problem.a}{problem.op}{problem.b}='
  lines = [prompt + completion.removesuffix('<end>')]
  if '<think>' in completion:
    thought = completion.split('<think>', 1)[1].split('</think>', 1)[0]
    if fmt == 'cot_rev':
      lines += _units_first_steps(thought)  # Numbers units first, joined by + and =.
    else:
      lines += [f'  {step}' for step in thought.split()]
  else:
    lines.append('  (answered without a chain of thought)')
  truth = arith_problems.answer(*problem)
  verdict = 'malformed answer' if answer is None else ('correct' if answer == truth else f'wrong, true answer {truth}')
  lines.append(f'answer: {answer if answer is not None else "-"} ({verdict})')
  return '\n'.join(lines)


def write_run(run_dir: pathlib.Path, record: dict[str, Any]) -> None:
  """results.md and accuracy_vs_length.png (and accuracy_vs_loops.png) of one run."""
  header = (f'# Arithmetic: {record["model"]} ({record["params"]:,} params), {record["train_steps"]} steps x '
            f'batch {record["batch_size"]} = {record["train_flops"]:.3g} training FLOPs (XLA), checkpoint step '
            f'{record["checkpoint_step"]}\n\n{run_summary(record)}; {record["inference_flops"]:.3g} inference FLOPs '
            f'per problem ({record["mean_tokens"]} tokens)\n\n')
  rows = [[n, record['problems_by_length'][n], f'{acc:.4f}', 'yes' if int(n) <= record['max_train_digits'] else 'no']
          for n, acc in record['exact_by_length'].items()]
  body = tables.markdown_table(('digits (longer operand)', 'problems', 'exact', 'trained length'), rows)
  if record.get('exact_by_loops'):
    loop_rows = [[k, f'{acc:.4f}', f'{record["inference_flops_by_loops"][k]:.3g}'] for k, acc in record['exact_by_loops'].items()]
    body += '\n\n## Test-time loops\n\n' + tables.markdown_table(('loops', 'exact', 'inference FLOPs'), loop_rows)
    plots.plot_lines({record['model']: ([int(k) for k in record['exact_by_loops']], list(record['exact_by_loops'].values()))},
                     run_dir / 'accuracy_vs_loops.png', 'Arithmetic: exact accuracy vs test-time loops',
                     'loops at test time (dashed: trained)', 'exact accuracy', marks={record['model']: record['trained_loops']})
  if record.get('exact_by_length_by_loops'):
    body += '\n\n' + _length_by_loops(run_dir, {record['model']: [record]}, record['max_train_digits'])
  write_text(run_dir / 'results.md', header + body + '\n')
  _plot_lengths({record['model']: [record]}, run_dir / 'accuracy_vs_length.png', record['max_train_digits'])


def _length_by_loops(out_dir: pathlib.Path, groups: dict[str, list[dict[str, Any]]], max_train: int) -> str:
  """Looped runs: exact accuracy by operand length at each test-time depth, as a markdown section (mean ± std
  over a group's runs) and accuracy_vs_length_by_loops.png (one line per model and depth)."""
  rows, curves = [], {}
  lengths = sorted({int(n) for runs in groups.values() for r in runs
                    for by_n in r['exact_by_length_by_loops'].values() for n in by_n})
  for label, runs in groups.items():
    for k in sorted({int(k) for r in runs for k in r['exact_by_length_by_loops']}):
      per_run = [r['exact_by_length_by_loops'][str(k)] for r in runs if str(k) in r['exact_by_length_by_loops']]
      cells = [[by_n[str(n)] for by_n in per_run if str(n) in by_n] for n in lengths]
      rows.append([label, k, *[(tables.pm(c, '.3f') if len(per_run) > 1 else f'{c[0]:.3f}') if c else '-'
                               for c in cells]])
      curves[f'{label}, {k} loops'] = [dict(exact_by_length=by_n) for by_n in per_run]
  _plot_lengths(curves, out_dir / 'accuracy_vs_length_by_loops.png', max_train,
                title='Arithmetic: exact accuracy vs operand length at each test-time depth (dashed: longest trained)')
  header = ('model', 'loops', *[f'{n}{"" if n <= max_train else " (beyond)"}' for n in lengths])
  return ('## Exact accuracy by operand length (digits of both operands) and test-time loops\n\n'
          + tables.markdown_table(header, rows))


def _plot_lengths(groups: dict[str, list[dict[str, Any]]], path: pathlib.Path, max_train: int,
                  title: str = 'Arithmetic: exact accuracy vs operand length (dashed: longest trained)') -> None:
  series, errors = {}, {}
  for label, runs in groups.items():
    lengths = sorted({int(n) for r in runs for n in r['exact_by_length']})
    means = [tables.mean_std([r['exact_by_length'][str(n)] for r in runs if str(n) in r['exact_by_length']])
             for n in lengths]
    series[label] = (lengths, [m for m, _ in means])
    errors[label] = [s for _, s in means]
  plots.plot_lines(series, path, title, 'digits of the longer operand', 'exact accuracy', errors=errors,
                   marks={label: max_train for label in series})


def write_sweep(workdir: pathlib.Path, records: list[dict[str, Any]]) -> None:
  """results.md/.json and the compute, length and inference-FLOP plots over the runs of a sweep (and, for looped
  models at their largest budget, length by test-time loops)."""
  by_model = collections.defaultdict(list)
  for r in records:
    by_model[r['model']].append(r)
  compute, compute_err, inference, inference_err = {}, {}, {}, {}
  rows = []
  for label, runs in by_model.items():
    budgets = collections.defaultdict(list)
    for r in runs:  # A run's budget as the sweep set it, else what it trained.
      budgets[float(r.get('point', {}).get('flops_budget') or r['train_flops'])].append(r)
    points = sorted(budgets.items())
    compute[label] = ([b for b, _ in points], [tables.mean_std([r['test_exact'] for r in rs])[0] for _, rs in points])
    compute_err[label] = [tables.mean_std([r['test_exact'] for r in rs])[1] for _, rs in points]
    inference[label] = ([tables.mean_std([r['inference_flops'] for r in rs])[0] for _, rs in points], compute[label][1])
    inference_err[label] = compute_err[label]
    for budget, rs in points:
      ood = [r['ood_exact'] for r in rs if 'ood_exact' in r]
      rows.append([label, f'{budget:.3g}', len(rs), rs[0]['params'], rs[0]['train_steps'],
                   tables.pm([r['test_exact'] for r in rs], '.4f'), tables.pm([r['token_acc'] for r in rs], '.4f'),
                   tables.pm(ood, '.4f') if ood else '-', f'{rs[0]["inference_flops"]:.3g}',
                   tables.pm([r['generated_tokens'] for r in rs], '.1f') if all('generated_tokens' in r for r in rs)
                   else '-'])
  plots.plot_lines(compute, workdir / 'accuracy_vs_compute.png', 'Arithmetic: test exact accuracy vs training FLOPs '
                   '(mean ± std over seeds)', 'training FLOPs (XLA)', 'exact accuracy', log_x=True, errors=compute_err)
  plots.plot_lines(inference, workdir / 'accuracy_vs_inference_flops.png', 'Arithmetic: test exact accuracy vs '
                   'inference FLOPs per problem', 'inference FLOPs per problem (XLA)', 'exact accuracy', log_x=True,
                   errors=inference_err)
  largest = {label: [r for r in runs if r['train_flops'] == max(x['train_flops'] for x in runs)]
             for label, runs in by_model.items()}
  _plot_lengths(largest, workdir / 'accuracy_vs_length.png', max(r['max_train_digits'] for r in records))
  header = ('model', 'training FLOPs', 'seeds', 'params', 'steps', 'test exact', 'token acc', 'beyond trained length',
            'inference FLOPs', 'tokens written')
  body = tables.markdown_table(header, rows)
  looped = {label: runs for label, runs in largest.items() if all(r.get('exact_by_length_by_loops') for r in runs)}
  if looped:
    body += '\n' + _length_by_loops(workdir, looped, max(r['max_train_digits'] for r in records))
  write_text(workdir / 'results.md', '# Arithmetic sweep (held-out test problems; mean ± std over '
                          'seeds)\n\n' + body + '\n')
  write_json(workdir / 'results.json', {r['run']: r for r in records})
