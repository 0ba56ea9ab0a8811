"""Tests of how train/sudoku.py scores a filled grid."""
import jax.numpy as jnp
import numpy as np

from data import sudoku
from data import sudoku_solver
from train import sudoku as sudoku_task


def test_valid_grids_accepts_any_solution_and_rejects_clashes():
  puzzles = sudoku.generate_puzzles(4, 9, 30, 30, seed=0)
  good = puzzles.solutions.astype(np.int32)
  bad = good.copy()
  bad[:, [0, 1]] = bad[:, [1, 0]]  # Two cells of row 0 swapped: columns and maybe a box now clash.
  relabeled = good.copy()
  relabeled[good == 1], relabeled[good == 2] = 2, 1  # Another valid grid.
  grids = jnp.asarray(np.stack([good, bad, relabeled]))
  valid = np.asarray(sudoku_task._valid_grids(grids, 9))
  assert valid[0].all() and not valid[1].any() and valid[2].all()


def test_an_ambiguous_puzzle_counts_as_solved_by_either_solution():
  solution = sudoku.generate_puzzles(1, 4, 4, 4, seed=1).solutions[0]
  # The empty 4x4 grid: its reference solution and any other full grid both solve it.
  others = sudoku.all_solution_grids(4)
  other = next(g for g in others if not np.array_equal(g, solution))
  count, _ = sudoku_solver.solve(np.zeros(16, np.int8), 4)
  assert count > 1
  grids = jnp.asarray(np.stack([solution, other]).astype(np.int32))[None]
  assert np.asarray(sudoku_task._valid_grids(grids, 4)).all()
