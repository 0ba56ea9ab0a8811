"""The Sudoku task: recurrent depth vs accuracy (MLP, BERT-style encoder, TRM).

A run trains one model, then scores every held-out set at every depth 1..eval.depth_multipliers x
the trained depth, writing results.json, results.md and depth_vs_accuracy.png into its
directory. Over a sweep (e.g. `sweep.grid='model.name=mlp,bert,trm'`, the `compare` variant)
the workdir gets one table and one curve per run on the test set.
"""
import dataclasses
import pathlib
from typing import Any

import jax
import ml_collections
from absl import logging

import models
from data import sudoku_grids
from data import sudoku_pipeline
from train import checkpoint as ckpt_lib
from train import loop
from train import plots
from train import registry
from train import sharding
from train import tables
from train.errors import ConfigError
from train.tasks.sudoku import depth_eval
from train.tasks.sudoku import losses
from train.workdir import write_json

RESULTS_HEADER = depth_eval.SUMMARY_HEADER


def build_model(config: ml_collections.ConfigDict, size: int):
  return models.get_model(config.model, vocab_size=size + 1, num_classes=size, seq_len=size * size,
                          task_keys=('depth',))


@dataclasses.dataclass
class SudokuContext:
  """Splits (per data settings, built once and cached in W/data_cache) and eval-file puzzles."""
  workdir: pathlib.Path
  _splits: dict[str, sudoku_pipeline.SudokuSplits] = dataclasses.field(default_factory=dict)
  _eval_puzzles: dict[str, sudoku_grids.PuzzleSet] = dataclasses.field(default_factory=dict)

  def splits(self, data_cfg: ml_collections.ConfigDict) -> sudoku_pipeline.SudokuSplits:
    key = sudoku_pipeline.cache_key(data_cfg)
    if key not in self._splits:
      self._splits[key] = sudoku_pipeline.build_splits(data_cfg, str(self.workdir / 'data_cache'))
    return self._splits[key]

  def eval_puzzles(self, path: str) -> sudoku_grids.PuzzleSet:
    if path not in self._eval_puzzles:
      self._eval_puzzles[path] = depth_eval.eval_file_puzzles(path)
    return self._eval_puzzles[path]


def _max_depth(config: ml_collections.ConfigDict) -> int:
  return int(config.model.depth) * max(int(config.eval.depth_multipliers), 1)


@registry.register('sudoku')
class SudokuTask:
  """Registered as config.task='sudoku'."""
  free_fields = ('train.steps', 'data.eval_file')
  eval_free_fields = ('data.eval_file',)
  summary_metrics = (('test_exact', 'max'), ('test_cell', 'max'), ('train_seconds', 'min'))

  def name_part(self, path: str, value: Any) -> str | None:
    del path, value
    return None

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> SudokuContext:
    del config
    return SudokuContext(pathlib.Path(workdir))

  def train_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                context: SudokuContext) -> dict[str, Any]:
    if int(config.data.num_val) < 1:
      raise ConfigError(f'data.num_val={config.data.num_val} must be >= 1: validation picks the checkpoint '
                        'that the test sets are scored with')
    splits = context.splits(config.data)
    write_json(run_dir / 'config.json', config.to_dict())
    model = build_model(config, splits.size)
    mesh = sharding.make_mesh()
    evaluator = depth_eval.DepthEvaluator(model, mesh, int(config.eval.batch_size))
    depth = int(config.model.depth)

    def validate(params: Any, step: int) -> dict[str, Any]:
      """Exact accuracy on validation at the trained depths (best depth); picks the best checkpoint."""
      del step
      res = evaluator(params, splits.val, depth, int(config.eval.max_puzzles))
      return dict(exact=res['best_exact'], depth=res['best_depth'], cell=res['cell'][-1],
                  score=res['best_exact'] + 1e-3 * res['cell'][-1])

    result = loop.train(config, run_dir, model, losses.make_objective(config, model, splits),
                        [loop.Evaluator('val', validate, int(config.train.eval_every), select='score')],
                        label=config.model.name)
    result.checkpoints.close()
    # Score the test sets once, with the best-on-validation checkpoint.
    params, used_step, _ = ckpt_lib.restore_eval_params(run_dir, 'best', mesh)
    max_depth = _max_depth(config)
    sets = {'val': splits.val, 'test': splits.test, **splits.extra_tests}
    per_set = {}
    for set_name, puzzles in sets.items():
      if len(puzzles.puzzles) == 0:
        continue
      per_set[set_name] = evaluator(params, puzzles, max_depth, int(config.eval.max_puzzles))
      logging.info('%s: %s', set_name, depth_eval.final_line(per_set[set_name]))
    n_params = loop.count_params(params)
    test = per_set.get('test') or per_set['val']
    results = dict(model=config.model.name, trained_depth=depth, max_eval_depth=max_depth,
                   checkpoint_step=used_step, train_steps=int(config.train.steps),
                   batch_size=int(config.train.batch_size), params=n_params,
                   train_seconds=result.train_seconds, sets=per_set,
                   test_exact=test['best_exact'], test_cell=test['cell'][depth - 1])
    write_json(run_dir / 'results.json', results)
    halting = float(config.train.halt_loss_weight) > 0
    rows = [depth_eval.summary_row(k, v, depth, halting) for k, v in per_set.items()]
    header = (f'# Sudoku {splits.size}x{splits.size}: {config.model.name} ({n_params:,} params), '
              f'trained depth D={depth}, {config.train.steps} steps x batch {config.train.batch_size}, '
              f'checkpoint step {used_step}\n\n')
    if jax.process_index() == 0:
      tables.write_atomically(run_dir / 'results.md', header + tables.markdown_table(RESULTS_HEADER, rows))
      plots.plot_depth_curves({f'{config.model.name} ({k})': v for k, v in per_set.items()},
                              {f'{config.model.name} ({k})': depth for k in per_set},
                              run_dir / 'depth_vs_accuracy.png',
                              f'Sudoku {splits.size}x{splits.size}: accuracy vs recurrent depth')
    print(tables.markdown_table(RESULTS_HEADER, rows), flush=True)
    print(f'{config.model.name} test: {depth_eval.final_line(test)}', flush=True)
    return results

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: SudokuContext) -> None:
    """One curve per run (test set) and one table for the whole sweep."""
    del context
    label = lambda r: f'{r["run"]} ({r["params"]:,} params)'  # pylint: disable=unnecessary-lambda-assignment
    curves = {label(r): r['sets']['test'] for r in records if 'test' in r['sets']}
    depths = {label(r): r['trained_depth'] for r in records}
    plots.plot_depth_curves(curves, depths, workdir / 'depth_vs_accuracy.png',
                            f'Sudoku: test accuracy vs depth, same budget ({config.train.steps} steps x '
                            f'batch {config.train.batch_size})')
    halting = float(config.train.halt_loss_weight) > 0
    rows = [[r['run'], r['params'], f'{r["train_seconds"]:.0f}']
            + depth_eval.summary_row('test', r['sets']['test'], r['trained_depth'], halting)[1:]
            for r in records if 'test' in r['sets']]
    header = ('run', 'params', 'train s') + RESULTS_HEADER[1:]
    tables.write_atomically(workdir / 'results.md', '# Sudoku sweep (test set)\n\n'
                            + tables.markdown_table(header, rows))
    write_json(workdir / 'results.json', {r['run']: r for r in records})

  def evaluate_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                   context: SudokuContext) -> dict[str, Any]:
    """Scores config.data.eval_file at every depth with the run's best (or latest) checkpoint."""
    if not config.data.eval_file:
      raise ConfigError('--mode=eval needs --config.data.eval_file=FILE (one puzzle per line, or CSV '
                        'puzzle,solution)')
    puzzles = context.eval_puzzles(config.data.eval_file)
    size = int(config.data.size)
    if puzzles.size != size:
      raise ConfigError(f'{config.data.eval_file} holds {puzzles.size}x{puzzles.size} puzzles but the model in '
                        f'{run_dir} was trained on {size}x{size}')
    mesh = sharding.make_mesh()
    params, step, which = ckpt_lib.restore_eval_params(run_dir, str(config.eval.checkpoint), mesh)
    print(f'restored {which} checkpoint (step {step}) from {run_dir}', flush=True)
    model = build_model(config, size)
    depth = int(config.model.depth)
    max_depth = _max_depth(config)
    evaluator = depth_eval.DepthEvaluator(model, mesh, int(config.eval.batch_size))
    res = evaluator(params, puzzles, max_depth, int(config.eval.max_puzzles))
    rows = [[d, res['exact'][d - 1], res['cell'][d - 1]] for d in range(1, max_depth + 1)]
    print(f'{config.data.eval_file}: {res["n"]} puzzles, model {config.model.name}, trained depth {depth}')
    print(tables.markdown_table(('depth', 'exact', 'blank-cell acc'), rows), flush=True)
    name = pathlib.Path(config.data.eval_file).name
    out = dict(res, file=str(config.data.eval_file), model=config.model.name, checkpoint=which,
               checkpoint_step=step, trained_depth=depth)
    write_json(run_dir / f'eval_{name}.json', out)
    return res

  def report_evaluation(self, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                        results: dict[str, dict[str, Any]], context: SudokuContext) -> None:
    del config, workdir, context
    if len(results) > 1:
      for name, res in results.items():
        print(f'{name}: {depth_eval.final_line(res)}', flush=True)
    best = max(results.values(), key=lambda res: res['best_exact'])
    print(depth_eval.final_line(best), flush=True)
