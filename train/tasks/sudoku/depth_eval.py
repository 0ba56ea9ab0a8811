"""Sudoku scoring: exact-solve and blank-cell accuracy at every depth, halting; the task's two evaluators.

  validation  exact accuracy on the validation puzzles at the trained depths (its best depth), and a
              score that picks the best checkpoint
  depth       every held-out set (or --mode=eval's puzzle file) at every depth 1 .. eval.depth_multipliers x
              the trained depth, beyond the trained one
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import linen as nn

from data import sudoku_grids
from models.unroll import unroll
from train import evaluators
from train import sharding
from train import tables
from train.errors import ConfigError, InputError


def _depth_counts(params: Any, puzzle_BxL: jax.Array, solution_BxL: jax.Array, valid_B: jax.Array, *,
                  model: nn.Module, depth: int) -> dict[str, jax.Array]:
  """Counts of correct blank cells and solved puzzles at every depth 1..depth (one pass).

  A puzzle counts as solved when the givens filled with the predictions at the
  blanks make a valid Sudoku: for a unique puzzle that is its solution, and a
  puzzle with several solutions is solved by any of them. Cell accuracy compares
  with the reference solution.
  """
  _, out = unroll(model, {'params': params}, puzzle_BxL, depth)
  pred_DxBxL = jnp.argmax(out['logits'], -1) + 1
  blank_BxL = puzzle_BxL == 0
  correct_DxBxL = (pred_DxBxL == solution_BxL[None]) & blank_BxL[None]
  solved_DxB = _valid_grids(jnp.where(blank_BxL[None], pred_DxBxL, puzzle_BxL[None]), out['logits'].shape[-1])
  # Halting: the answer of the first step whose halt head says "done" (else the last step).
  halted_DxB = out['halt_logit'] > 0
  first_B = jnp.where(jnp.any(halted_DxB, 0), jnp.argmax(halted_DxB, 0), depth - 1)
  halt_solved_B = jnp.take_along_axis(solved_DxB, first_B[None], 0)[0]
  w = valid_B.astype(jnp.float32)
  return dict(
      cell=jnp.sum(correct_DxBxL * (w[None, :, None]), axis=(1, 2)),
      exact=jnp.sum(solved_DxB * w[None], axis=1),
      blanks=jnp.sum(blank_BxL * w[:, None]),
      halt_exact=jnp.sum(halt_solved_B * w),
      halt_steps=jnp.sum((first_B + 1) * w),
  )


def _valid_grids(grids_DxBxL: jax.Array, size: int) -> jax.Array:
  """True where a filled grid holds every digit exactly once in each row, column and box: [D, B]."""
  member_UxL = np.zeros((3 * size, size * size), np.float32)
  for u, cells in enumerate(sudoku_grids.unit_cells(size)):
    member_UxL[u, cells] = 1.0
  onehot_DxBxLxC = jax.nn.one_hot(grids_DxBxL - 1, size, dtype=jnp.float32)
  counts_DxBxUxC = jnp.einsum('ul,dblc->dbuc', member_UxL, onehot_DxBxLxC)
  return jnp.all(counts_DxBxUxC == 1.0, axis=(-2, -1))


class DepthScorer:
  """Accuracy at every depth 1..max_depth of a puzzle set, batched and sharded over the mesh."""

  def __init__(self, model: nn.Module, mesh: jax.sharding.Mesh, batch_size: int):
    self.model = model
    self.mesh = mesh
    self.batch_size = max(-(-batch_size // mesh.size) * mesh.size, mesh.size)
    self._fns = {}

  def _fn(self, depth: int):
    if depth not in self._fns:
      self._fns[depth] = jax.jit(functools.partial(_depth_counts, model=self.model, depth=depth),
                                 out_shardings=sharding.replicated(self.mesh))
    return self._fns[depth]

  def __call__(self, params: Any, puzzles: sudoku_grids.PuzzleSet, max_depth: int,
               max_puzzles: int = 0) -> dict[str, Any]:
    n = len(puzzles.puzzles) if not max_puzzles else min(max_puzzles, len(puzzles.puzzles))
    if n == 0:
      raise InputError(f'no puzzles to evaluate in {puzzles.source}')
    totals = None
    fn = self._fn(max_depth)
    for lo in range(0, n, self.batch_size):
      chunk = {'puzzle': puzzles.puzzles[lo:lo + self.batch_size].astype(np.int32),
               'solution': puzzles.solutions[lo:lo + self.batch_size].astype(np.int32)}
      chunk['puzzle'], chunk['solution'] = chunk['puzzle'][:n - lo], chunk['solution'][:n - lo]
      padded, valid = sharding.pad_to_multiple(chunk, self.batch_size)
      arrays = sharding.put_batch(dict(padded, valid=valid), self.mesh)
      counts = jax.device_get(fn(params, arrays['puzzle'], arrays['solution'], arrays['valid']))
      totals = counts if totals is None else jax.tree.map(np.add, totals, counts)
    exact = (totals['exact'] / n).tolist()
    cell = (totals['cell'] / max(float(totals['blanks']), 1.0)).tolist()
    best = int(np.argmax(exact))
    return dict(n=n, exact=exact, cell=cell, best_depth=best + 1, best_exact=exact[best],
                halt_exact=float(totals['halt_exact'] / n), halt_mean_steps=float(totals['halt_steps'] / n))


def summary_row(name: str, res: dict[str, Any], depth: int, halting: bool = True) -> list[object]:
  """One results-table row: exact at 1x, 2x, 4x the trained depth, best, blank-cell accuracy, halting."""
  def at(d):
    return res['exact'][d - 1] if d <= len(res['exact']) else '-'
  return [name, res['n'], at(depth), at(2 * depth), at(4 * depth),
          f'{res["best_exact"]:.3f} @ {res["best_depth"]}', res['cell'][min(depth, len(res['cell'])) - 1],
          f'{res["halt_exact"]:.3f} ({res["halt_mean_steps"]:.1f} steps)' if halting else '- (head not trained)']


SUMMARY_HEADER = ('set', 'puzzles', 'exact @ D', 'exact @ 2D', 'exact @ 4D', 'best exact @ depth',
                  'blank-cell acc @ D', 'exact with halting (mean steps)')


def final_line(res: dict[str, Any]) -> str:
  """The line scripts grep for: best exact accuracy and its depth."""
  return f'exact_accuracy={res["best_exact"]:.3f} depth={res["best_depth"]}'


def max_depth(config: Any) -> int:
  """The deepest evaluation: eval.depth_multipliers x the trained depth."""
  return int(config.model.depth) * max(int(config.eval.depth_multipliers), 1)


class ValidationEval(evaluators.Evaluator):
  """Exact accuracy on validation at the trained depths (best depth); `score` picks the best checkpoint."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.scorer = DepthScorer(self.model, sharding.make_mesh(), int(self.config.eval.batch_size))
    self.puzzles = self.context.splits(self.config.data).val

  def __call__(self, params: Any) -> dict[str, Any]:
    res = self.scorer(params, self.puzzles, int(self.config.model.depth), int(self.config.eval.max_puzzles))
    return dict(exact=res['best_exact'], depth=res['best_depth'], cell=res['cell'][-1],
                score=res['best_exact'] + 1e-3 * res['cell'][-1])


class DepthEval(evaluators.Evaluator):
  """Every held-out set (validation, test, the extra test sets of data.eval_givens) at every depth up to
  max_depth; on a file (--mode=eval), that file's puzzles."""
  headline = 'best_exact'
  file_help = 'one puzzle per line, or CSV puzzle,solution'

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.scorer = DepthScorer(self.model, sharding.make_mesh(), int(self.config.eval.batch_size))
    if self.file is not None:
      self.puzzles = self.context.eval_puzzles(self.file)
      size = int(self.config.data.size)
      if self.puzzles.size != size:
        raise ConfigError(f'{self.file} holds {self.puzzles.size}x{self.puzzles.size} puzzles but the model was '
                          f'trained on {size}x{size}')

  def __call__(self, params: Any) -> dict[str, Any]:
    depth, deepest, cap = int(self.config.model.depth), max_depth(self.config), int(self.config.eval.max_puzzles)
    if self.file is not None:
      return dict(self.scorer(params, self.puzzles, deepest, cap), trained_depth=depth)
    splits = self.context.splits(self.config.data)
    per_set = {}
    for name, puzzles in {'val': splits.val, 'test': splits.test, **splits.extra_tests}.items():
      if len(puzzles.puzzles):
        per_set[name] = self.scorer(params, puzzles, deepest, cap)
        logging.info('%s: %s', name, final_line(per_set[name]))
    test = per_set.get('test') or per_set['val']
    return dict(sets=per_set, test_exact=test['best_exact'], test_cell=test['cell'][depth - 1],
                max_eval_depth=deepest)

  def table(self, figures: dict[str, Any]) -> str:
    rows = [[d, figures['exact'][d - 1], figures['cell'][d - 1]] for d in range(1, len(figures['exact']) + 1)]
    return (f'{self.file}: {figures["n"]} puzzles, model {self.config.model.name}, trained depth '
            f'{figures["trained_depth"]}\n' + tables.markdown_table(('depth', 'exact', 'blank-cell acc'), rows))

  def final_line(self, figures: dict[str, Any]) -> str:
    return final_line(figures)
