"""Tests of how the Sudoku task (train/tasks/sudoku/) scores a filled grid, and its warm starts."""
import jax.numpy as jnp
import numpy as np

from data import sudoku_grids
from data import sudoku_solver
from train.tasks.sudoku import depth_eval
from train.tasks.sudoku import losses


def test_valid_grids_accepts_any_solution_and_rejects_clashes():
  puzzles = sudoku_grids.generate_puzzles(4, 9, 30, 30, seed=0)
  good = puzzles.solutions.astype(np.int32)
  bad = good.copy()
  bad[:, [0, 1]] = bad[:, [1, 0]]  # Two cells of row 0 swapped: columns and maybe a box now clash.
  relabeled = good.copy()
  relabeled[good == 1], relabeled[good == 2] = 2, 1  # Another valid grid.
  grids = jnp.asarray(np.stack([good, bad, relabeled]))
  valid = np.asarray(depth_eval._valid_grids(grids, 9))
  assert valid[0].all() and not valid[1].any() and valid[2].all()


def test_an_ambiguous_puzzle_counts_as_solved_by_either_solution():
  solution = sudoku_grids.generate_puzzles(1, 4, 4, 4, seed=1).solutions[0]
  # The empty 4x4 grid: its reference solution and any other full grid both solve it.
  others = sudoku_grids.all_solution_grids(4)
  other = next(g for g in others if not np.array_equal(g, solution))
  count, _ = sudoku_solver.solve(np.zeros(16, np.int8), 4)
  assert count > 1
  grids = jnp.asarray(np.stack([solution, other]).astype(np.int32))[None]
  assert np.asarray(depth_eval._valid_grids(grids, 4)).all()


def test_warm_start_carry_is_the_unrolled_carry_after_a_random_number_of_steps():
  import jax
  import ml_collections
  import models
  cfg = ml_collections.ConfigDict(dict(name='bert', width=16, num_layers=1, num_heads=2, mlp_ratio=2.0,
                                       mlp_act='gelu', mixer='attention', norm='layernorm', post_norm=False,
                                       use_bias=True, inner_steps=1, cycles=1, dtype='float32',
                                       tie_embeddings=False, mlp_state_dim=16))
  model = models.build(cfg, vocab_size=5, num_classes=4, seq_len=16)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 5, (32, 16)), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens)['params']
  carry = losses.warm_start(params, tokens, jax.random.PRNGKey(1), model=model, max_steps=3)
  per_depth = [models.unroll(model, {'params': params}, tokens, d)[0]['h'] for d in (1, 2, 3)]
  fresh = jnp.zeros_like(per_depth[0])
  matches = [np.allclose(carry['h'], h, atol=1e-5) for h in [fresh] + per_depth]
  steps_B = [next(k for k, h in enumerate([fresh] + per_depth) if np.allclose(carry['h'][b], h[b], atol=1e-5))
             for b in range(32)]
  assert not any(matches)  # Puzzles do not all get the same number of steps ...
  assert set(steps_B) == {0, 1, 2, 3}  # ... and every count in 0..3 occurs.


def test_warm_starts_are_refused_with_act_training():
  import pytest
  from configs import sudoku as sudoku_configs
  config = sudoku_configs.get_config('smoke')
  with config.unlocked():
    config.train.act = True
    config.train.warm_start_max = 2
  with pytest.raises(ValueError, match='warm_start_max applies to train.act=False'):
    losses.make_objective(config, None, None)
