"""Markdown tables and the figures behind them: sweep summaries (mean ± std over seeds) and the ablation ranking."""
import math
from typing import Any, Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """A GitHub markdown table; floats get 3 decimals."""
  def cell(v: object) -> str:
    return f'{v:.3f}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one value); NaN for none."""
  values = [float(v) for v in values]
  if not values:
    return math.nan, math.nan
  mean = math.fsum(values) / len(values)
  if len(values) == 1:
    return mean, 0.0
  return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pm(values: Sequence[float], fmt: str = '') -> str:
  """'mean ± std'; without `fmt`: whole numbers as such, figures >= 100 with one decimal, others four."""
  mean, std = mean_std(values)
  if not fmt:
    fmt = '.0f' if all(float(v).is_integer() for v in values) else ('.1f' if abs(mean) >= 100 else '.4f')
  return f'{mean:{fmt}} ± {std:{fmt}}'


def _pm_of(runs: list[dict[str, Any]], key: str) -> str:
  """mean ± std of `key` over the runs that have it; diverged runs are counted apart."""
  values = [r[key] for r in runs if key in r]
  diverged = sum('diverged' in r for r in runs)
  text = pm(values) if values else '-'
  return text + (f' ({diverged} diverged)' if diverged else '')


def group_over_seeds(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
  """Records grouped by every axis value but the seed, in first-appearance order."""
  groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
  for r in records:
    key_values = {k: v for k, v in r.get('point', {}).items() if k != 'seed'}
    groups.setdefault(repr(sorted(key_values.items())), (key_values, []))[1].append(r)
  return list(groups.values())


def format_value(value: Any) -> str:
  """A short, file-name-safe form: 0.001 -> '0.001', 5e-5 -> '5e-5', 0.5 -> '0.5', 1.5e12 -> '1.5e12'."""
  if isinstance(value, float):
    if value == 0 or 1e-3 <= abs(value) < 1e4:
      return f'{value:g}'
    mantissa, exponent = f'{value:.3e}'.split('e')
    return f'{mantissa.rstrip("0").rstrip(".")}e{int(exponent)}'
  return str(value)


def _label(values: dict[str, Any]) -> str:
  return ', '.join(f'{k}={format_value(v)}' for k, v in values.items()) or '(config)'


def sweep_markdown(records: list[dict[str, Any]], points: Sequence[Any], missing: Sequence[str],
                   metrics: Sequence[tuple[str, str]]) -> str:
  """sweep.md: one row per point up to the seed, each metric mean ± sample std over seeds."""
  keys = [k for k, _ in metrics]
  rows = [[_label(values), len(runs)] + [_pm_of(runs, k) for k in keys] for values, runs in group_over_seeds(records)]
  text = (f'# Sweep: {len(records)} of {len(points)} points finished\n\n'
          'Mean ± sample std over seeds.\n\n' + markdown_table(('point', 'seeds', *keys), rows))
  if missing:
    text += f'\nNot finished yet: {", ".join(missing)}\n'
  return text


def ablation_rows(records: list[dict[str, Any]], metric: tuple[str, str]) -> dict[str, list[dict[str, Any]]]:
  """Per grid combination (e.g. model=bert): one row per setting, ranked by `metric`."""
  key, better = metric
  out: dict[str, list[dict[str, Any]]] = {}
  for values, runs in group_over_seeds(records):
    varied = runs[0].get('varied')
    base_values = {k: v for k, v in values.items() if k != varied}
    setting = 'baseline' if varied is None else f'{varied}={format_value(values[varied])}'
    diverged = sum('diverged' in r for r in runs)
    if diverged:
      setting += f' ({diverged} of {len(runs)} diverged)'
    mean, std = mean_std([r[key] for r in runs if key in r])
    out.setdefault(_label(base_values), []).append(dict(
        setting=setting, axis=varied, value=values.get(varied), mean=mean, std=std, seeds=len(runs),
        group_values=base_values,
        runs=[r for r in runs if key in r]))
  for rows in out.values():
    base = next((r for r in rows if r['axis'] is None), None)
    for r in rows:
      r['delta'] = r['mean'] - base['mean'] if base else math.nan
    # Best first; settings with no finite value (every seed diverged) last.
    rows.sort(key=lambda r: (math.isnan(r['mean']), r['mean'] if better == 'min' else -r['mean']))
  return out


def ablation_markdown(groups: dict[str, list[dict[str, Any]]], metrics: Sequence[tuple[str, str]]) -> str:
  """ablation.md: per group (ablation_rows), the settings ranked by the first metric, change against the baseline."""
  key, better = metrics[0]
  others = [k for k, _ in metrics[1:]]
  text = (f'# Ablation: one axis at a time around the baseline\n\nRanked by {key} '
          f'({"lower" if better == "min" else "higher"} is better); mean ± sample std over seeds; '
          'Δ = mean minus the baseline row\'s mean.\n')
  for label, rows in groups.items():
    table = [[i, r['setting'], f'{r["mean"]:.4f} ± {r["std"]:.4f}', f'{r["delta"]:+.4f}',
              *[_pm_of(r['runs'], k) for k in others], r['seeds']] for i, r in enumerate(rows, 1)]
    text += f'\n## {label}\n\n' + markdown_table(('rank', 'setting', key, 'Δ vs baseline', *others, 'seeds'), table)
  return text
