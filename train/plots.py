"""Figures and markdown tables written into the workdir."""
import pathlib
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


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
  path = pathlib.Path(path)
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)
  return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """A GitHub markdown table; floats get 3 decimals."""
  def cell(v: object) -> str:
    return f'{v:.3f}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'
