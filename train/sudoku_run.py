"""Sudoku runs: train + depth study (train mode), and scoring of puzzle files (eval mode)."""
import copy
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

import models
from data import sudoku_pipeline
from train import checkpoint as ckpt_lib
from train import loop
from train import optim
from train import plots
from train import sharding
from train.state import eval_params
from train.sudoku import (SUMMARY_HEADER, DepthEvaluator, eval_file_puzzles, final_line, init_act_state,
                          make_task, summary_row)

# Model fields that change parameter shapes or the computation: eval must use the trained ones.
_MODEL_KEYS_FROM_CHECKPOINT = ('name', 'attention_bias', 'prefix_len', 'pos_emb', 'norm_scale',
                               'mlp_multiple_of', 'hidden', 'num_layers', 'num_heads', 'mlp_ratio', 'mlp_act', 'mixer',
                               'norm', 'post_norm', 'use_bias', 'inner_steps', 'cycles', 'depth',
                               'tie_embeddings', 'mlp_state_dim')


def model_names(config: ml_collections.ConfigDict) -> list[str]:
  """The models a run trains: config.compare's list, else config.model.name."""
  names = [n.strip() for n in config.compare.split(',') if n.strip()] if config.compare else []
  return names or [config.model.name]


def config_for_model(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.model.name = name
  return cfg


def build_model(config: ml_collections.ConfigDict, size: int):
  return models.get_model(config.model, vocab_size=size + 1, num_classes=size, seq_len=size * size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains every model of the run, evaluates it at every depth, writes results and plots."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  names = model_names(config)
  for name in names:
    if name not in models.MODEL_NAMES:
      raise ValueError(f'unknown model {name!r} (config.compare / config.model.name); choose from {models.MODEL_NAMES}')
  splits = sudoku_pipeline.build_splits(config.data, str(workdir / 'data_cache'))
  all_results = {}
  for name in names:
    run_dir = workdir / name if len(names) > 1 else workdir
    all_results[name] = _train_one(config_for_model(config, name), run_dir, splits)
  if len(names) > 1:
    _write_comparison(config, workdir, all_results)
  return all_results


def _train_one(config: ml_collections.ConfigDict, run_dir: pathlib.Path,
               splits: sudoku_pipeline.SudokuSplits) -> dict[str, Any]:
  run_dir.mkdir(parents=True, exist_ok=True)
  ckpt_lib.write_json(run_dir / 'config.json', json.loads(config.to_json()))
  model = build_model(config, splits.size)
  mesh = sharding.make_mesh()
  evaluator = DepthEvaluator(model, mesh, int(config.eval.batch_size))
  task = make_task(config, model, splits, evaluator)
  result = loop.train(config, run_dir, model, task)
  # Score the test sets once, with the best-on-validation checkpoint.
  state = result.state
  best = result.checkpoints.restore(state, which='best')
  used_step = int(jax.device_get(state.step))
  if best is not None:
    state, _ = best
    used_step = int(jax.device_get(state.step))
  params = eval_params(state)
  depth = int(config.model.depth)
  max_depth = depth * max(int(config.eval.depth_multipliers), 1)
  sets = {'val': splits.val, 'test': splits.test, **splits.extra_tests}
  per_set = {}
  for set_name, puzzles in sets.items():
    if len(puzzles.puzzles) == 0:
      continue
    per_set[set_name] = evaluator(params, puzzles, max_depth, int(config.eval.max_puzzles))
    logging.info('%s: %s', set_name, final_line(per_set[set_name]))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  results = dict(model=config.model.name, trained_depth=depth, max_eval_depth=max_depth,
                 checkpoint_step=used_step, train_steps=int(config.train.steps),
                 batch_size=int(config.train.batch_size), params=n_params,
                 train_seconds=result.train_seconds, sets=per_set)
  ckpt_lib.write_json(run_dir / 'results.json', results)
  halting = float(config.train.halt_loss_weight) > 0
  rows = [summary_row(k, v, depth, halting) for k, v in per_set.items()]
  header = (f'# Sudoku {splits.size}x{splits.size}: {config.model.name} ({n_params:,} params), '
            f'trained depth D={depth}, {config.train.steps} steps x batch {config.train.batch_size}, '
            f'checkpoint step {used_step}\n\n')
  if jax.process_index() == 0:
    (run_dir / 'results.md').write_text(header + plots.markdown_table(SUMMARY_HEADER, rows))
    plots.plot_depth_curves({f'{config.model.name} ({k})': v for k, v in per_set.items()},
                            {f'{config.model.name} ({k})': depth for k in per_set},
                            run_dir / 'depth_vs_accuracy.png',
                            f'Sudoku {splits.size}x{splits.size}: accuracy vs recurrent depth')
  test = per_set.get('test') or per_set['val']
  print(plots.markdown_table(SUMMARY_HEADER, rows), flush=True)
  print(f'{config.model.name} test: {final_line(test)}', flush=True)
  result.checkpoints.close()
  return results


def _write_comparison(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                      all_results: dict[str, dict[str, Any]]) -> None:
  """One curve per model (test set) and one table for the whole comparison."""
  if jax.process_index() != 0:
    return
  curves = {f'{name} ({r["params"]:,} params)': r['sets']['test'] for name, r in all_results.items()}
  depths = {f'{name} ({r["params"]:,} params)': r['trained_depth'] for name, r in all_results.items()}
  plots.plot_depth_curves(curves, depths, workdir / 'depth_vs_accuracy.png',
                          f'Sudoku: test accuracy vs depth, same budget ({config.train.steps} steps x '
                          f'batch {config.train.batch_size})')
  halting = float(config.train.halt_loss_weight) > 0
  rows = [[name, r['params'], f'{r["train_seconds"]:.0f}'] + summary_row('test', r['sets']['test'],
                                                                         r['trained_depth'], halting)[1:]
          for name, r in all_results.items()]
  header = ('model', 'params', 'train s') + SUMMARY_HEADER[1:]
  (workdir / 'results.md').write_text('# Sudoku model comparison (test set)\n\n' + plots.markdown_table(header, rows))
  ckpt_lib.write_json(workdir / 'results.json', all_results)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores config.data.eval_file at every depth with each trained model of the workdir."""
  workdir = pathlib.Path(workdir)
  if not config.data.eval_file:
    raise ValueError('--mode=eval needs --config.data.eval_file=FILE (one puzzle per line, or CSV puzzle,solution)')
  puzzles = eval_file_puzzles(config.data.eval_file)
  outputs = {}
  names = model_names(config)
  for name in names:
    run_dir = workdir / name if len(names) > 1 else workdir
    outputs[name] = _evaluate_one(config_for_model(config, name), run_dir, puzzles)
  best_name = max(outputs, key=lambda n: outputs[n]['best_exact'])
  if len(names) > 1:
    for name, res in outputs.items():
      print(f'{name}: {final_line(res)}', flush=True)
  print(final_line(outputs[best_name]), flush=True)
  return outputs


def _trained_config(config: ml_collections.ConfigDict, run_dir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config with the model fields the checkpoint was trained with (from run_dir/config.json)."""
  saved_path = run_dir / 'config.json'
  if not saved_path.is_file():
    raise FileNotFoundError(f'{saved_path} not found: {run_dir} holds no trained run (train it first)')
  saved = json.loads(saved_path.read_text())
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for key in _MODEL_KEYS_FROM_CHECKPOINT:
      if key in saved.get('model', {}) and saved['model'][key] != cfg.model[key]:
        logging.warning('model.%s=%r from the command line differs from the trained %r; using the trained one',
                        key, cfg.model[key], saved['model'][key])
        cfg.model[key] = saved['model'][key]
    cfg.data.size = saved.get('data', {}).get('size', cfg.data.size)
    for key in ('act', 'batch_size', 'ema_decay', 'weight_decay', 'grad_clip'):  # They shape the saved state.
      if key in saved.get('train', {}):
        cfg.train[key] = saved['train'][key]
  return cfg


def _evaluate_one(config: ml_collections.ConfigDict, run_dir: pathlib.Path, puzzles) -> dict[str, Any]:
  config = _trained_config(config, run_dir)
  size = int(config.data.size)
  if puzzles.size != size:
    raise ValueError(f'{config.data.eval_file} holds {puzzles.size}x{puzzles.size} puzzles but the model in '
                     f'{run_dir} was trained on {size}x{size}')
  model = build_model(config, size)
  mesh = sharding.make_mesh()
  tx, _ = optim.make_optimizer(config.train)

  class _Init:  # What the state's shapes need: example inputs (and the ACT state, when trained so).
    @staticmethod
    def example_inputs():
      return puzzles.puzzles[:2].astype(np.int32)

  if config.train.act:
    _Init.init_task_state = staticmethod(
        lambda params, batch: init_act_state(model, params, batch, size * size))

  abstract = loop.init_state(model, _Init, config, tx, mesh)
  checkpoints = ckpt_lib.Checkpoints(run_dir, read_only=True)
  which = config.eval.checkpoint
  restored = checkpoints.restore(abstract, which=which)
  if restored is None and which == 'best':
    logging.info('no best-on-validation checkpoint in %s; using the latest', run_dir)
    which = 'latest'
    restored = checkpoints.restore(abstract, which=which)
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {run_dir / "checkpoints"}: train first with --mode=train')
  state, _ = restored
  step = int(jax.device_get(state.step))
  print(f'restored {which} checkpoint (step {step}) from {run_dir}', flush=True)
  depth = int(config.model.depth)
  max_depth = depth * max(int(config.eval.depth_multipliers), 1)
  evaluator = DepthEvaluator(model, mesh, int(config.eval.batch_size))
  res = evaluator(eval_params(state), puzzles, max_depth, int(config.eval.max_puzzles))
  rows = [[d, res['exact'][d - 1], res['cell'][d - 1]] for d in range(1, max_depth + 1)]
  print(f'{config.data.eval_file}: {res["n"]} puzzles, model {config.model.name}, trained depth {depth}')
  print(plots.markdown_table(('depth', 'exact', 'blank-cell acc'), rows), flush=True)
  stem = pathlib.Path(config.data.eval_file).stem
  out = dict(res, file=str(config.data.eval_file), model=config.model.name, checkpoint=which,
             checkpoint_step=step, trained_depth=depth)
  ckpt_lib.write_json(run_dir / f'eval_{stem}.json', out)
  checkpoints.close()
  return res
