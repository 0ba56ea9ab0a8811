"""The Sudoku task: recurrent depth vs accuracy (MLP, BERT-style encoder, TRM).

A run trains one model (losses.py), picks its checkpoint by exact accuracy on validation, then scores
every held-out set at every depth 1..eval.depth_multipliers x the trained depth (depth_eval.py),
writing results.md and depth_vs_accuracy.png beside the core's results.json. Over a sweep (e.g.
`sweep.grid='model.name=mlp,bert,trm'`, the `compare` variant) the workdir gets one table and one
curve per run on the test set.
"""
import dataclasses
import pathlib
from typing import Any

import ml_collections

import models
from data import sudoku_grids
from data import sudoku_pipeline
from train import plots
from train import tables
from train import task as task_lib
from train import workdir as workdir_lib
from train.errors import ConfigError
from train.files import write_json, write_text
from train.tasks.sudoku import depth_eval
from train.tasks.sudoku import losses


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
    """An eval file's puzzles (those without solutions solved first); errors name the file and line."""
    if path not in self._eval_puzzles:
      self._eval_puzzles[path] = sudoku_pipeline.load_eval_file(str(path))
    return self._eval_puzzles[path]


@task_lib.register('sudoku')
class SudokuTask(task_lib.Task):
  """Registered as config.task='sudoku'."""
  summary_metrics = (('test_exact', 'max'), ('test_cell', 'max'), ('train_seconds', 'min'))
  evaluators = {'validation': depth_eval.ValidationEval, 'depth': depth_eval.DepthEval}
  free_fields = ('data.eval_file',)
  count_flops = False

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> SudokuContext:
    del config
    return SudokuContext(pathlib.Path(workdir))

  def check(self, config: ml_collections.ConfigDict) -> None:
    if int(config.data.num_val) < 1:
      raise ConfigError(f'data.num_val={config.data.num_val} must be >= 1: validation picks the checkpoint '
                        'that the test sets are scored with')

  def build_model(self, config: ml_collections.ConfigDict, context: SudokuContext):
    size = int(config.data.size)
    return models.build(config.model, vocab_size=size + 1, num_classes=size, seq_len=size * size)

  def objective(self, config, model, context: SudokuContext, scan_unroll: int | bool = 1):
    return losses.make_objective(config, model, context.splits(config.data), scan_unroll)

  def record(self, config: ml_collections.ConfigDict, run: Any) -> dict[str, Any]:
    return dict(trained_depth=int(config.model.depth))

  def report_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    """results.md and depth_vs_accuracy.png: every set at every depth; the test line last."""
    name, depth, per_set = config.model.name, record['trained_depth'], record['sets']
    rows = [depth_eval.summary_row(k, v, depth, float(config.train.halt_loss_weight) > 0) for k, v in per_set.items()]
    size = int(config.data.size)
    header = (f'# Sudoku {size}x{size}: {name} ({record["params"]:,} params), trained depth D={depth}, '
              f'{config.train.steps} steps x batch {config.train.batch_size}, checkpoint step '
              f'{record["checkpoint_step"]}\n\n')
    write_text(run_dir / 'results.md', header + tables.markdown_table(depth_eval.SUMMARY_HEADER, rows))
    plots.plot_depth_curves({f'{name} ({k})': v for k, v in per_set.items()}, {f'{name} ({k})': depth for k in per_set},
                            run_dir / 'depth_vs_accuracy.png', f'Sudoku {size}x{size}: accuracy vs recurrent depth')
    print(tables.markdown_table(depth_eval.SUMMARY_HEADER, rows), flush=True)
    test = per_set.get('test') or per_set['val']
    print(f'{name} test: {depth_eval.final_line(test)}', flush=True)

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
    header = ('run', 'params', 'train s') + depth_eval.SUMMARY_HEADER[1:]
    write_text(workdir / 'results.md', '# Sudoku sweep (test set)\n\n' + tables.markdown_table(header, rows))
    write_json(workdir / 'results.json', {r['run']: r for r in records})

  def normalize_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
    return workdir_lib.rename_fields(settings, {'model.hidden': 'model.width'})
