"""PNG figures: training loss curve and a 2-D PCA map of chosen words.

matplotlib is imported lazily here only, so training never loads it.
"""
import os
from typing import Sequence

import numpy as np

from w2v_numpy.evaluate import Embeddings


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def pca_2d(x_Nxd: np.ndarray) -> np.ndarray:
  """Projects rows onto their first two principal components (via SVD of the centered data)."""
  centered = x_Nxd - x_Nxd.mean(axis=0, keepdims=True)
  _, _, vt = np.linalg.svd(centered, full_matrices=False)
  return centered @ vt[:2].T


def plot_loss(history: Sequence[tuple[float, float]], path: str | os.PathLike,
              title: str = 'SGNS training loss') -> None:
  """Mean loss per pair against epochs."""
  if not history:
    raise ValueError('empty loss history: nothing to plot')
  plt = _pyplot()
  epochs, losses = zip(*history)
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(epochs, losses, marker='.', linewidth=1)
  ax.set_xlabel('epoch')
  ax.set_ylabel('mean loss per (context, center) pair')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_words(emb: Embeddings, words: Sequence[str], path: str | os.PathLike,
               title: str = 'PCA of word vectors') -> list[str]:
  """Scatter of the words' vectors in 2-D PCA; returns the words that were not in vocabulary."""
  known = [w for w in words if w in emb]
  missing = [w for w in words if w not in emb]
  if len(known) < 2:
    raise ValueError(f'need at least 2 words in the vocabulary to plot, got {known}')
  xy = pca_2d(np.stack([emb[w] for w in known]).astype(np.float64))
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 6))
  ax.scatter(xy[:, 0], xy[:, 1], s=12)
  for word, (x, y) in zip(known, xy):
    ax.annotate(word, (x, y), fontsize=9, xytext=(3, 3), textcoords='offset points')
  ax.set_title(title)
  ax.set_xlabel('PC 1')
  ax.set_ylabel('PC 2')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return missing
