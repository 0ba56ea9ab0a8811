"""Sudoku losses: deep supervision over depth (with warm starts), or TRM's one-step-per-update ACT training."""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from data import sudoku_pipeline
from models.unroll import reset_carry, unroll
from train import loop
from train.errors import ConfigError


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
  warm = int(train_cfg.warm_start_max)
  if warm > 0:
    carry = warm_start(params, puzzle_BxL, rng, model=model, max_steps=warm, scan_unroll=scan_unroll)
  _, out = unroll(model, {'params': params}, puzzle_BxL, depth, detach=bool(train_cfg.detach), carry=carry,
                  scan_unroll=scan_unroll, dropout_rng=_dropout_rng(model, rng))
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


def _dropout_rng(model: nn.Module, rng: jax.Array) -> jax.Array | None:
  """The dropout key of a training step (None when model.dropout is 0: no dropout op at all)."""
  return jax.random.fold_in(rng, 2) if model.config.dropout > 0 else None


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
  raise ConfigError(f"train.loss_cells must be 'all' or 'blank', got {loss_cells!r}")


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
  carry, out = unroll(model, variables, puzzle_BxL, 1, detach=True, carry=carry,
                      dropout_rng=_dropout_rng(model, rng))
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


def make_objective(config: ml_collections.ConfigDict, model: nn.Module,
                   splits: sudoku_pipeline.SudokuSplits, scan_unroll: int | bool = 1) -> loop.Objective:
  """Deep supervision over the whole depth, or TRM/ACT steps (train.act): see the two losses above."""
  depth = int(config.model.depth)
  if config.train.act:
    if int(config.train.warm_start_max) > 0:
      raise ConfigError('train.warm_start_max applies to train.act=False; with act=True puzzles already '
                        'continue from their own carries (set warm_start_max=0)')
    loss_fn = functools.partial(act_sudoku_loss, model=model, max_steps=depth, train_cfg=config.train)
    seq_len = splits.train.puzzles.shape[1]
    init = lambda params, batch: init_act_state(model, params, batch, seq_len)  # pylint: disable=unnecessary-lambda-assignment
  else:
    loss_fn = functools.partial(sudoku_loss, model=model, depth=depth, train_cfg=config.train,
                                scan_unroll=scan_unroll)
    init = None

  def train_batch(step: int, batch_size: int, process_index: int, process_count: int) -> dict[str, np.ndarray]:
    batch = sudoku_pipeline.train_batch(splits.train, config.data, step, batch_size, process_index, process_count)
    return {'puzzle': batch['puzzle'].astype(np.int32), 'solution': batch['solution'].astype(np.int32)}

  return loop.Objective(loss_fn=loss_fn, train_batch=train_batch,
                        example_inputs=splits.train.puzzles[:2].astype(np.int32), init_task_state=init,
                        progress_metrics=('loss', 'acc', 'exact'))
