"""PNG figures: training loss curve and a 2-D PCA map of chosen words.

matplotlib is imported lazily here only, so training never loads it.
"""
import multiprocessing
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


def _plot_loss_when_told(conn, parent_end) -> None:
  """Child of LossPlotter: imports matplotlib at once, then plots the history it is sent (exits
  when the parent's end closes, also when the parent is killed)."""
  parent_end.close()
  try:
    _pyplot()
    history, path = conn.recv()
    plot_loss(history, path)
    conn.send(None)
  except Exception as e:  # pylint: disable=broad-except  (reported by the parent)
    conn.send(f'{type(e).__name__}: {e}')
  finally:
    conn.close()


class LossPlotter:
  """plot_loss in a forked process started before training: matplotlib's import (most of the
  time a loss plot takes) then runs on a spare core while NumPy trains, not after it.

  Without fork (or with `background=False`), `plot` simply calls plot_loss.
  """

  def __init__(self, background: bool = True):
    self._conn = self._proc = None
    if background and 'fork' in multiprocessing.get_all_start_methods():
      ctx = multiprocessing.get_context('fork')
      self._conn, child = ctx.Pipe()
      self._proc = ctx.Process(target=_plot_loss_when_told, args=(child, self._conn), daemon=True)
      self._proc.start()
      child.close()

  def plot(self, history: Sequence[tuple[float, float]], path: str | os.PathLike) -> None:
    """Writes the PNG (raises ValueError with the child's message if that failed)."""
    if self._proc is None:
      try:
        plot_loss(history, path)
      except (OSError, ImportError) as e:
        raise ValueError(f'could not write {os.fspath(path)}: {type(e).__name__}: {e}') from None
      return
    try:
      if not self._conn.poll():   # an early message is the child's failure (e.g. no matplotlib)
        self._conn.send((list(history), os.fspath(path)))
      error = self._conn.recv()
    except (EOFError, OSError) as e:
      error = f'the plotting process died ({e or type(e).__name__})'
    self._conn.close()
    self._proc.join()
    self._proc = None
    if error:
      raise ValueError(f'could not write {os.fspath(path)}: {error}')

  def close(self) -> None:
    """Stops the child (if any); it has nothing left to do."""
    if self._proc is not None:
      self._conn.close()
      self._proc.terminate()
      self._proc.join()
      self._proc = None
