"""Sudoku task: loss with deep supervision, accuracy at every depth, results, plots, eval files."""
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from data import sudoku as sudoku_lib
from data import sudoku_pipeline
from models.unroll import reset_carry, unroll
from train import sharding


def sudoku_loss(params: Any, batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module,
                depth: int, train_cfg: ml_collections.ConfigDict, scan_unroll: int | bool = 1
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy at every step (deep supervision) or the last, plus the optional halting BCE.

  scan_unroll=True unrolls the loops over depth (same result), so that XLA's
  cost analysis counts every step.
  """
  puzzle_BxL = batch['puzzle']
  target_BxL = batch['solution'] - 1
  carry = None
  warm = int(train_cfg.get('warm_start_max', 0))
  if warm > 0:
    carry = warm_start(params, puzzle_BxL, rng, model=model, max_steps=warm, scan_unroll=scan_unroll)
  _, out = unroll(model, {'params': params}, puzzle_BxL, depth, detach=bool(train_cfg.detach), carry=carry,
                  scan_unroll=scan_unroll)
  logits_DxBxLxC = out['logits']
  blank_BxL, weight_BxL = _cell_weights(puzzle_BxL, train_cfg.loss_cells)
  ce_DxBxL = optax.softmax_cross_entropy_with_integer_labels(logits_DxBxLxC, target_BxL[None])
  ce_D = jnp.sum(ce_DxBxL * weight_BxL, axis=(1, 2)) / jnp.maximum(jnp.sum(weight_BxL), 1.0)
  loss = jnp.mean(ce_D) if train_cfg.deep_supervision else ce_D[-1]

  correct_DxBxL = jnp.argmax(logits_DxBxLxC, -1) == target_BxL[None]
  solved_DxB = jnp.all(correct_DxBxL | (blank_BxL[None] == 0), axis=-1)
  metrics = {}
  if float(train_cfg.halt_loss_weight) > 0:
    halt_DxB = out['halt_logit']
    bce = optax.sigmoid_binary_cross_entropy(halt_DxB, solved_DxB.astype(jnp.float32))
    halt_loss = jnp.mean(bce) if train_cfg.deep_supervision else jnp.mean(bce[-1])
    loss = loss + float(train_cfg.halt_loss_weight) * halt_loss
    metrics['halt_loss'] = halt_loss
  n_blank = jnp.maximum(jnp.sum(blank_BxL), 1.0)
  metrics['ce'] = ce_D[-1]
  metrics['acc'] = jnp.sum(correct_DxBxL[-1] * blank_BxL) / n_blank
  metrics['exact'] = jnp.mean(solved_DxB[-1])
  return loss, metrics


def warm_start(params: Any, puzzle_BxL: jax.Array, rng: jax.Array, *, model: nn.Module,
               max_steps: int, scan_unroll: int | bool = 1) -> Any:
  """The carry after a random 0..max_steps steps per puzzle, without gradients.

  Supervised steps that start here learn to improve the model's own
  intermediate states (incremental-progress training, Bansal et al. 2022), so
  the trained step keeps helping beyond the trained depth. Costs max_steps
  forward steps.
  """
  steps_B = jax.random.randint(rng, puzzle_BxL.shape[:1], 0, max_steps + 1)
  carry, _ = unroll(model, {'params': jax.lax.stop_gradient(params)}, puzzle_BxL, max_steps, steps_B=steps_B,
                    every_step=False, scan_unroll=scan_unroll)
  return jax.lax.stop_gradient(carry)


def _cell_weights(puzzle_BxL: jax.Array, loss_cells: str) -> tuple[jax.Array, jax.Array]:
  """(blank mask, loss weights) of a batch: the loss counts 'all' cells or the 'blank' ones."""
  blank_BxL = (puzzle_BxL == 0).astype(jnp.float32)
  if loss_cells == 'blank':
    return blank_BxL, blank_BxL
  if loss_cells == 'all':
    return blank_BxL, jnp.ones_like(blank_BxL)
  raise ValueError(f"train.loss_cells must be 'all' or 'blank', got {loss_cells!r}")


def init_act_state(model: nn.Module, params: Any, global_batch: int, seq_len: int) -> dict[str, Any]:
  """TRM/ACT training state before step 0: every slot halted, so step 0 loads fresh puzzles."""
  puzzle_BxL = jnp.zeros((global_batch, seq_len), jnp.int32)
  variables = {'params': params}
  inputs = model.apply(variables, puzzle_BxL, method=type(model).encode)
  carry = model.apply(variables, inputs, method=type(model).init_carry)
  return dict(carry=carry, puzzle=puzzle_BxL, solution=jnp.ones_like(puzzle_BxL),
              steps=jnp.zeros((global_batch,), jnp.int32), min_steps=jnp.ones((global_batch,), jnp.int32),
              halted=jnp.ones((global_batch,), bool))


def act_sudoku_loss(params: Any, batch: dict[str, jax.Array], rng: jax.Array, act: dict[str, Any], *,
                    model: nn.Module, max_steps: int, train_cfg: ml_collections.ConfigDict
                    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict[str, Any]]]:
  """TRM's training: ONE supervision step per optimizer step; puzzles stay in the batch across steps.

  A slot whose puzzle halted (after `max_steps` steps, or when the halting head says it is solved,
  if trained) takes the fresh puzzle of `batch` in its place and restarts from the initial carry.
  The carry enters each step detached, as between TRM's supervision steps. With probability
  train.halt_exploration a new puzzle must stay at least a random 2..max_steps steps (TRM's
  exploration), so the halting head also sees later steps.
  """
  variables = {'params': params}
  reset_B = act['halted']
  explore_B = jax.random.bernoulli(jax.random.fold_in(rng, 0), float(train_cfg.halt_exploration), reset_B.shape)
  drawn_B = jax.random.randint(jax.random.fold_in(rng, 1), reset_B.shape, 2, max(max_steps, 2) + 1)
  min_steps_B = jnp.where(reset_B, jnp.where(explore_B, drawn_B, 1), act['min_steps'])
  puzzle_BxL = jnp.where(reset_B[:, None], batch['puzzle'], act['puzzle'])
  solution_BxL = jnp.where(reset_B[:, None], batch['solution'], act['solution'])
  inputs = model.apply(variables, puzzle_BxL, method=type(model).encode)
  fresh = model.apply(variables, inputs, method=type(model).init_carry)
  carry = reset_carry(act['carry'], fresh, reset_B)
  steps_B = jnp.where(reset_B, 0, act['steps']) + 1
  carry, out = unroll(model, variables, puzzle_BxL, 1, detach=True, carry=carry)
  logits_BxLxC, halt_B = out['logits'][0], out['halt_logit'][0]
  target_BxL = solution_BxL - 1
  blank_BxL, weight_BxL = _cell_weights(puzzle_BxL, train_cfg.loss_cells)
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxC, target_BxL)
  loss = jnp.sum(ce_BxL * weight_BxL) / jnp.maximum(jnp.sum(weight_BxL), 1.0)
  correct_BxL = jnp.argmax(logits_BxLxC, -1) == target_BxL
  solved_B = jnp.all(correct_BxL | (blank_BxL == 0), axis=-1)
  metrics = {'ce': loss}
  halted_B = steps_B >= max_steps
  if float(train_cfg.halt_loss_weight) > 0:
    halt_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(halt_B, solved_B.astype(jnp.float32)))
    loss = loss + float(train_cfg.halt_loss_weight) * halt_loss
    metrics['halt_loss'] = halt_loss
    halted_B = halted_B | ((halt_B > 0) & (steps_B >= min_steps_B))
  metrics['acc'] = jnp.sum(correct_BxL * blank_BxL) / jnp.maximum(jnp.sum(blank_BxL), 1.0)
  metrics['exact'] = jnp.mean(solved_B)
  metrics['steps_at_halt'] = jnp.sum(steps_B * halted_B) / jnp.maximum(jnp.sum(halted_B), 1)
  new_act = dict(carry=jax.lax.stop_gradient(carry), puzzle=puzzle_BxL, solution=solution_BxL,
                 steps=steps_B, min_steps=min_steps_B, halted=halted_B)
  return loss, (metrics, new_act)


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
  for u, cells in enumerate(sudoku_lib.unit_cells(size)):
    member_UxL[u, cells] = 1.0
  onehot_DxBxLxC = jax.nn.one_hot(grids_DxBxL - 1, size, dtype=jnp.float32)
  counts_DxBxUxC = jnp.einsum('ul,dblc->dbuc', member_UxL, onehot_DxBxLxC)
  return jnp.all(counts_DxBxUxC == 1.0, axis=(-2, -1))


class DepthEvaluator:
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

  def __call__(self, params: Any, puzzles: sudoku_lib.PuzzleSet, max_depth: int,
               max_puzzles: int = 0) -> dict[str, Any]:
    n = len(puzzles.puzzles) if not max_puzzles else min(max_puzzles, len(puzzles.puzzles))
    if n == 0:
      raise ValueError(f'no puzzles to evaluate in {puzzles.source}')
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


class SudokuTask:
  """Binds data, model and config into the loop's Task interface."""

  def __init__(self, config: ml_collections.ConfigDict, model: nn.Module,
               splits: sudoku_pipeline.SudokuSplits, evaluator: DepthEvaluator):
    self.config = config
    self.model = model
    self.splits = splits
    self.evaluator = evaluator
    self.depth = int(config.model.depth)
    self.loss_fn = functools.partial(sudoku_loss, model=model, depth=self.depth, train_cfg=config.train)

  def example_inputs(self) -> np.ndarray:
    return self.splits.train.puzzles[:2].astype(np.int32)

  def train_batch(self, step: int, batch_size: int, process_index: int, process_count: int):
    batch = sudoku_pipeline.train_batch(self.splits.train, self.config.data, step, batch_size,
                                        process_index, process_count)
    return {'puzzle': batch['puzzle'].astype(np.int32), 'solution': batch['solution'].astype(np.int32)}

  def validate(self, params: Any, step: int) -> tuple[float, dict[str, float]]:
    """Exact accuracy on validation at the trained depths (best depth); picks the best checkpoint."""
    res = self.evaluator(params, self.splits.val, self.depth, int(self.config.eval.max_puzzles))
    print(f'  validation @ step {step}: exact {res["best_exact"]:.3f} (depth {res["best_depth"]}), '
          f'blank-cell acc {res["cell"][-1]:.3f}', flush=True)
    score = res['best_exact'] + 1e-3 * res['cell'][-1]
    return score, dict(val_exact=res['best_exact'], val_depth=res['best_depth'], val_cell=res['cell'][-1])


class ActSudokuTask(SudokuTask):
  """TRM-style training (config.train.act): one supervision step per optimizer step, see act_sudoku_loss."""

  def __init__(self, config, model, splits, evaluator):
    super().__init__(config, model, splits, evaluator)
    self.loss_fn = functools.partial(act_sudoku_loss, model=model, max_steps=self.depth,
                                     train_cfg=config.train)

  def init_task_state(self, params: Any, global_batch: int) -> dict[str, Any]:
    return init_act_state(self.model, params, global_batch, self.splits.train.puzzles.shape[1])


def make_task(config: ml_collections.ConfigDict, model: nn.Module, splits: sudoku_pipeline.SudokuSplits,
              evaluator: DepthEvaluator) -> SudokuTask:
  """The Sudoku task: deep supervision over the whole depth, or TRM/ACT steps (train.act)."""
  if config.train.act and int(config.train.get('warm_start_max', 0)) > 0:
    raise ValueError('train.warm_start_max applies to train.act=False; with act=True puzzles already '
                     'continue from their own carries (set warm_start_max=0)')
  return (ActSudokuTask if config.train.act else SudokuTask)(config, model, splits, evaluator)


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


def eval_file_puzzles(path: str | pathlib.Path) -> sudoku_lib.PuzzleSet:
  """Reads and validates an eval file (puzzles without solutions are solved first)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'eval file {path} does not exist')
  return sudoku_pipeline.load_eval_file(str(path))
