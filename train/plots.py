"""Figures written into the workdir (PNG), saved atomically: shards of a sweep may write the same one."""
import math
import pathlib
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from train import files  # pylint: disable=g-import-not-at-top


def plot_depth_curves(curves: dict[str, dict[str, Sequence[float]]], trained_depths: dict[str, int],
                      path: str | pathlib.Path, title: str) -> pathlib.Path:
  """Exact-solve and blank-cell accuracy against recurrent depth, one curve per label.

  curves[label] holds 'exact' and 'cell' lists indexed by depth-1; a dashed line marks each
  label's trained depth (to its right the model runs deeper than it was trained).
  """
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
  for ax, key, name in ((axes[0], 'exact', 'exact-solve accuracy'),
                        (axes[1], 'cell', 'blank-cell accuracy')):
    for i, (label, curve) in enumerate(curves.items()):
      depths = list(range(1, len(curve[key]) + 1))
      color = f'C{i}'
      ax.plot(depths, curve[key], marker='o', markersize=3, color=color, label=label)
      if label in trained_depths:
        ax.axvline(trained_depths[label], color=color, linestyle='--', linewidth=1, alpha=0.6)
    ax.set_xlabel('recurrent depth (steps); dashed = trained depth')
    ax.set_ylabel(name)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  # One legend, beside the panels, so that it never hides a curve.
  axes[1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return save(fig, path)


def save(fig: Any, path: str | pathlib.Path) -> pathlib.Path:
  """Saves `fig` as a PNG (atomically, train/files.py) and closes it."""
  try:
    return files.write_atomically(path, lambda tmp: fig.savefig(tmp, format='png', dpi=120, bbox_inches='tight'))
  finally:
    plt.close(fig)


def plot_ablation(groups: dict[str, list[dict[str, Any]]], metric: str, path: str | pathlib.Path,
                  baseline_value: Any = None) -> pathlib.Path:
  """One panel per varied axis: `metric` (mean ± std over seeds) against the axis value, one line per
  group (e.g. model), the baseline's value as a dashed line of the same colour."""
  axes_names = sorted({r['axis'] for rows in groups.values() for r in rows if r['axis'] is not None})
  cols = max(len(axes_names), 1)
  fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.8), squeeze=False)
  for ax, name in zip(axes[0], axes_names):
    for i, (label, rows) in enumerate(groups.items()):
      base = next((r for r in rows if r['axis'] is None), None)
      pts = [r for r in rows if r['axis'] == name]
      if base is not None:
        ax.axhline(base['mean'], color=f'C{i}', linestyle='--', linewidth=1, alpha=0.7)
        if baseline_value is not None:  # The baseline is a point of every axis's curve.
          pts.append(dict(base, value=baseline_value(base['group_values'], name)))
      pts.sort(key=lambda r: _order(r['value']))
      xs = [_order(r['value']) for r in pts]
      numeric = all(isinstance(x, (int, float)) for x in xs)
      ax.errorbar(xs if numeric else [str(r['value']) for r in pts], [r['mean'] for r in pts],
                  yerr=[r['std'] for r in pts], marker='o', markersize=4, capsize=3, color=f'C{i}', label=label)
      if numeric and xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale('log')
    ax.set_xlabel(name)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     title='dashed: baseline')
  fig.suptitle(f'Ablation: {metric} against each axis, the others at the baseline (mean ± std over seeds)',
               fontsize=10)
  fig.tight_layout()
  return save(fig, path)


def _order(value: Any) -> Any:
  """Numbers as they are (0 stays 0), other values as strings."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    return str(value)
  return value


def plot_lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | pathlib.Path, title: str,
               xlabel: str, ylabel: str, *, log_x: bool = False, marks: dict[str, float] | None = None,
               errors: dict[str, Sequence[float]] | None = None, ylim: tuple[float, float] | None = (-0.02, 1.02),
               references: dict[str, float] | None = None) -> pathlib.Path:
  """One line per label (x values, y values), optional ± error bars, a dashed vertical mark per label, and
  dotted horizontal reference levels (e.g. a baseline's score); `ylim` None fits the data."""
  fig, ax = plt.subplots(figsize=(7.5, 4.2))
  for i, (label, (xs, ys)) in enumerate(series.items()):
    color = f'C{i}'
    err = (errors or {}).get(label)
    ax.errorbar(xs, ys, yerr=err, marker='o', markersize=3, capsize=2 if err is not None else 0, color=color,
                label=label)
    if marks and label in marks:
      ax.axvline(marks[label], color=color, linestyle='--', linewidth=1, alpha=0.6)
  for i, (label, level) in enumerate((references or {}).items()):
    ax.axhline(level, color=f'{0.3 + 0.2 * i:.1f}', linestyle=':', linewidth=1.2, label=f'{label} ({level:.3g})')
  if log_x:
    ax.set_xscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  return save(fig, path)
