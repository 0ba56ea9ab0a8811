"""One sweep runner for every task: points over dotted config paths, each a resumable run.

`config.sweep.grid` lists axes whose product is run, `config.sweep.vary` axes varied one at a
time around the config's own values (an ablation), each crossed with the grid:

  sweep.grid = 'model=bert,trm; flops_budget=1e12,4e12; seed=0,1,2'
  sweep.vary = 'train.lr=3e-4,3e-3; train.grad_clip=0,0.5'

An axis is a config path and comma-separated values, cast to the field's type. An axis `X` whose
plural section `Xs` holds the value is a named point: `model=looped` sets every field that
`config.models.looped` holds, a partial config such as {'model': {'name': 'looped', 'loops': 4},
'train': {'random_loops': 4}}, so one name may set fields of several sections. Each point trains in
`W/runs/<name>` (readable: `bert_1e12_s0`, `bert_grad_clip=0_s1`); finished points are skipped
on rerun, a run directory made with other settings is refused (train/workdir.py), and the
tables (`sweep.md`, the task's own, `ablation.md`/`.png` for `vary`) and `train_loss.png` (the training loss
of every point, mean over seeds) are rewritten after each point. A sweep with no axes is one run in W itself.

Scale out with the scheduler you have: `sweep.shard='i/n'` runs every n-th point from the i-th
(a SLURM/k8s job array of n tasks into one shared W), and `--mode=report` collects every
finished point into the tables and plots.
"""
import copy
import dataclasses
import itertools
import pathlib
import time
from typing import Any

import jax
import ml_collections

from train import config_tree
from train import metrics as metrics_lib
from train import plots
from train import run as run_lib
from train import tables
from train import workdir as workdir_lib
from train.errors import ConfigError, NonFiniteLossError
from train.files import read_json, write_json, write_text
from train.tables import format_value
from train.task import Task

RUNS_DIR = 'runs'
RESULT_FILE = 'result.json'
LOSS_PLOT = 'train_loss.png'
DIVERGED = 'diverged'  # Key of a point's record whose loss became NaN/Inf (the record holds no figures).
SEED = 'seed'


@dataclasses.dataclass(frozen=True)
class Axis:
  path: str
  values: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its directory name and the value of each axis it sets."""
  name: str
  values: tuple[tuple[str, Any], ...]  # (path, value) in axis order.
  varied: str | None = None  # The `vary` axis this point changes, None for a baseline point.

  def as_dict(self) -> dict[str, Any]:
    return dict(self.values)


def is_named_axis(config: ml_collections.ConfigDict, path: str) -> bool:
  """An axis `X` whose values are the named points of the section `Xs`."""
  return '.' not in path and isinstance(config.get(path + 's'), ml_collections.ConfigDict)


def get_path(config: ml_collections.ConfigDict, path: str, key: str) -> Any:
  try:
    return config_tree.get(config, path)
  except KeyError:
    raise ConfigError(f'{key}: axis {path!r} names no config field') from None


def _cast(config: ml_collections.ConfigDict, path: str, raw: str, key: str) -> Any:
  if is_named_axis(config, path):
    if raw not in config[path + 's']:
      raise ConfigError(f'{key}: {path}={raw!r} names no point {path}s.{raw} (have {sorted(config[path + "s"])})')
    return raw
  current = get_path(config, path, key)
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f'{key}: axis {path!r} is a section; give a field ({path}.<name>)')
  try:
    if isinstance(current, bool):
      if raw.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(raw)
      return raw.lower() in ('true', '1')
    if isinstance(current, int):
      number = float(raw)
      if number != int(number):
        raise ValueError(raw)
      return int(number)
    if isinstance(current, float):
      return float(raw)
  except ValueError:
    raise ConfigError(f'{key}: {path}={raw!r} is not a {type(current).__name__} like the field') from None
  return raw


def parse_axes(config: ml_collections.ConfigDict, key: str) -> list[Axis]:
  """Axes of config.sweep.<key>: 'path=v1,v2; path2=...'."""
  spec = str(config.sweep[key])
  axes = []
  for part in spec.split(';'):
    part = part.strip()
    if not part:
      continue
    path, sep, raw = part.partition('=')
    path = path.strip()
    values = tuple(_cast(config, path, v.strip(), f'sweep.{key}') for v in raw.split(',') if v.strip())
    if not sep or not path or not values:
      raise ConfigError(f'sweep.{key}: {part!r} is not path=value1,value2 (axes are separated by ";")')
    if len(set(map(str, values))) != len(values):
      raise ConfigError(f'sweep.{key}: axis {path} lists a value twice')
    if any(a.path == path for a in axes):
      raise ConfigError(f'sweep.{key}: axis {path} appears twice')
    axes.append(Axis(path, values))
  return axes


def default_name_part(path: str, value: Any) -> str:
  """`model=bert` -> 'bert', `model.name=mlp` -> 'mlp', `seed=1` -> 's1', `train.lr=3e-4` -> 'lr=3e-4'."""
  if path == SEED:
    return f's{value}'
  if isinstance(value, str):
    return value
  return f'{path.rsplit(".", 1)[-1]}={format_value(value)}'


def points(config: ml_collections.ConfigDict, task: Task) -> list[Point]:
  """Every point of the sweep, in a stable order (seeds innermost).

  `vary` axes are read against each grid combination's config (so `train.lr` means the lr the
  point the `model` axis picked set); a value equal to the baseline's is its baseline point.
  """
  grid = parse_axes(config, 'grid')
  seeds = [a for a in grid if a.path == SEED]
  outer = [a for a in grid if a.path != SEED]
  out = []
  for combo in itertools.product(*[[(a.path, v) for v in a.values] for a in outer]):
    reference = point_config(config, Point('', tuple(combo)))
    vary = parse_axes(reference, 'vary')
    overlap = {a.path for a in grid} & {a.path for a in vary}
    if overlap:
      raise ConfigError(f'sweep.grid and sweep.vary both set {sorted(overlap)}')
    variations: list[tuple[str | None, tuple[tuple[str, Any], ...]]] = [(None, ())]
    for axis in vary:
      baseline = None if is_named_axis(reference, axis.path) else get_path(reference, axis.path, 'sweep.vary')
      variations += [(axis.path, ((axis.path, v),)) for v in axis.values if v != baseline]
    for varied, change in variations:
      for seed in (itertools.product(*[[(a.path, v) for v in a.values] for a in seeds]) if seeds else [()]):
        values = tuple(combo) + change + tuple(seed)
        parts = [task.name_part(p, v) or default_name_part(p, v) for p, v in values]
        out.append(Point('_'.join(parts).replace('/', '-'), values, varied))
  names = [p.name for p in out]
  if len(set(names)) != len(names):
    raise ConfigError('two sweep points get the same run name; give distinct values')
  return out


def shard_of(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(i, n) from sweep.shard 'i/n' ('' = 0/1)."""
  spec = str(config.sweep.shard).strip()
  if not spec:
    return 0, 1
  try:
    i, n = (int(x) for x in spec.split('/'))
  except ValueError:
    raise ConfigError(f"sweep.shard={spec!r} must be 'i/n' with 0 <= i < n (e.g. 0/4)") from None
  if not 0 <= i < n:
    raise ConfigError(f"sweep.shard={spec!r} must be 'i/n' with 0 <= i < n (e.g. 0/4)")
  return i, n


def point_config(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  """The config of one point: each axis value set.

  Whatever the order given: axes on the named points themselves (`models.trm.train.lr=...`) first,
  then the named points (`model=trm` sets the fields models.trm holds), then every other field
  (`train.lr=...`), so that an axis on a field overrides what a named point set.
  """
  cfg = copy.deepcopy(config)
  named = [p for p, _ in point.values if is_named_axis(config, p)]
  on_points = lambda path: '.' in path and path.split('.')[0] in {n + 's' for n in named}  # pylint: disable=unnecessary-lambda-assignment
  ordered = ([(p, v) for p, v in point.values if on_points(p)]
             + [(p, v) for p, v in point.values if p in named]
             + [(p, v) for p, v in point.values if p not in named and not on_points(p)])
  with cfg.unlocked():
    for path, value in ordered:
      if path in named:
        try:
          config_tree.merge(cfg, cfg[path + 's'][value], f'{path}s.{value}')
        except KeyError as e:
          raise ConfigError(f'{e.args[0]} is not a field of the config (a named point sets existing fields)') from None
      else:
        config_tree.set_value(cfg, path, value)
    for path in named:
      del cfg[path + 's']  # A run holds the fields it uses, not the choices.
  return cfg


def _is_sweep(config: ml_collections.ConfigDict) -> bool:
  return bool(str(config.sweep.grid).strip() or str(config.sweep.vary).strip())


def _layout(workdir: pathlib.Path, config: ml_collections.ConfigDict, task: Task, record: bool = False) -> None:
  """A workdir holds one task; a sweep's W records only that (its runs record their settings)."""
  if _is_sweep(config):
    workdir_lib.check_settings(workdir, {'task': task.name, 'layout': 'sweep'}, record=record)


def _use_compilation_cache(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  if bool(config.sweep.compilation_cache) and not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str((workdir / 'xla_cache').absolute()))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task) -> list[dict[str, Any]]:
  """Trains every point of this shard (skipping finished ones), rewriting the tables after each."""
  workdir = pathlib.Path(workdir)
  workdir_lib.check_writable(workdir)
  flops_cache: dict[str, tuple[float, int]] = {}  # One XLA count per compiled program, over all points.
  if not _is_sweep(config):
    run_lib.check(task, config)  # Before the settings are recorded.
    run_lib.check_init_from(config)  # The weights to start from exist (a training run's input, not its config).
    workdir_lib.check_run(workdir, config, task, record=True)
    with workdir_lib.Lock(workdir):
      return [run_lib.train_run(task, config, workdir, task.prepare(config, workdir), flops_cache)]
  all_points = points(config, task)
  i, n = shard_of(config)
  mine = all_points[i::n]
  for point in all_points:  # Every point's values, before any work.
    run_lib.check(task, point_config(config, point), f' (sweep point {point.name})')
    run_lib.check_init_from(point_config(config, point))
  _layout(workdir, config, task, record=True)
  _use_compilation_cache(config, workdir)
  start = time.perf_counter()
  context = task.prepare(config, workdir)
  print(f'sweep: {len(all_points)} points' + (f', shard {i}/{n}: {len(mine)} of them' if n > 1 else ''),
        flush=True)
  records = []
  for k, point in enumerate(mine, 1):
    run_dir = workdir / RUNS_DIR / point.name
    cfg = point_config(config, point)
    workdir_lib.check_run(run_dir, cfg, task, record=True)
    finished = _read_record(run_dir)
    tag = f'[point {k}/{len(mine)}] {point.name}'
    if finished is not None and (DIVERGED in finished or _trained_steps(finished) == run_lib.planned_steps(cfg, run_dir)):
      print(f'{tag}: finished earlier' + (' (diverged)' if DIVERGED in finished else '') + ', skipped', flush=True)
      records.append(finished)
      continue
    print(f'{tag}: ' + ', '.join(f'{p}={format_value(v)}' for p, v in point.values), flush=True)
    try:
      with workdir_lib.Lock(run_dir):
        record = run_lib.train_run(task, cfg, run_dir, context, flops_cache)
    except NonFiniteLossError as e:  # A setting that diverges is a result of the sweep, not its end.
      print(f'{tag}: diverged: {e}', flush=True)
      record = {DIVERGED: str(e)}
    record = dict(record, run=point.name, point=point.as_dict(), varied=point.varied)
    write_json(run_dir / RESULT_FILE, record)
    records.append(record)
    write_reports(config, workdir, task, context, all_points)
  write_reports(config, workdir, task, context, all_points)
  print(f'sweep done in {time.perf_counter() - start:.0f}s: {workdir / "sweep.md"}', flush=True)
  return records


def _trained_steps(record: dict[str, Any]) -> int | None:
  """The steps a finished point trained (records of earlier releases may say `steps`)."""
  return record.get('train_steps', record.get('steps'))


def _read_record(run_dir: pathlib.Path) -> dict[str, Any] | None:
  path = run_dir / RESULT_FILE
  return read_json(path) if path.is_file() else None


def finished_records(workdir: pathlib.Path, all_points: list[Point]) -> list[dict[str, Any]]:
  """The records of the finished points, in sweep order."""
  return [r for r in (_read_record(workdir / RUNS_DIR / p.name) for p in all_points) if r is not None]


def write_reports(config: ml_collections.ConfigDict, workdir: pathlib.Path, task: Task, context: Any,
                  all_points: list[Point]) -> None:
  """sweep.md (mean ± std over seeds), ablation.md/.png (with `vary`) and the task's own outputs."""
  if jax.process_index() != 0:
    return
  records = finished_records(workdir, all_points)
  if not records:
    return
  missing = [p.name for p in all_points if not (workdir / RUNS_DIR / p.name / RESULT_FILE).is_file()]
  write_text(workdir / 'sweep.md', tables.sweep_markdown(records, all_points, missing, task.summary_metrics))
  if str(config.sweep.vary).strip():
    def baseline_value(group_values: dict[str, Any], path: str) -> Any:
      return get_path(point_config(config, Point('', tuple(group_values.items()))), path, 'sweep.vary')
    groups = tables.ablation_rows(records, task.summary_metrics[0])
    write_text(workdir / 'ablation.md', tables.ablation_markdown(groups, task.summary_metrics))
    plots.plot_ablation(groups, task.summary_metrics[0][0], workdir / 'ablation.png', baseline_value)
  write_loss_curves(workdir, all_points)
  trained = [r for r in records if DIVERGED not in r]
  if trained:
    task.report(config, workdir, trained, context)


def write_loss_curves(workdir: pathlib.Path, all_points: list[Point]) -> None:
  """train_loss.png: the logged training loss against the step of every finished point, the mean over its seeds."""
  groups: dict[str, list[dict[int, float]]] = {}
  varying = {k for k, _ in itertools.chain.from_iterable(p.values for p in all_points)
             if k != 'seed' and len({format_value(v) for p in all_points for kk, v in p.values if kk == k}) > 1}
  for p in all_points:
    run_dir = workdir / RUNS_DIR / p.name
    if not (run_dir / RESULT_FILE).is_file():
      continue
    label = ', '.join(f'{k}={format_value(v)}' for k, v in p.values if k in varying) or 'run'
    curve = {int(r['step']): float(r['loss']) for r in metrics_lib.rows(run_dir, 'train') if 'loss' in r}
    if curve:
      groups.setdefault(label, []).append(curve)
  series = {}
  for label, curves in groups.items():
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    series[label] = (steps, [sum(c[s] for c in curves) / len(curves) for s in steps])
  if series:
    plots.plot_lines(series, workdir / LOSS_PLOT, 'Training loss (logged windows, mean over seeds)', 'step',
                     'training loss', ylim=None)


def _runs(config: ml_collections.ConfigDict, workdir: pathlib.Path, task: Task,
          finished_only: bool) -> list[tuple[str, pathlib.Path, ml_collections.ConfigDict]]:
  """(name, directory, config) of every run of W: its points (finished ones), or W itself without a sweep."""
  if not _is_sweep(config):
    return [('', workdir, config)]
  _layout(workdir, config, task)
  runs = [(p.name, workdir / RUNS_DIR / p.name, point_config(config, p)) for p in points(config, task)]
  if finished_only:
    runs = [r for r in runs if (record := _read_record(r[1])) is not None and DIVERGED not in record]
  return runs


def report(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task) -> list[dict[str, Any]]:
  """--mode=report: collects every finished point of the sweep in W into its tables and plots."""
  workdir = pathlib.Path(workdir)
  if not _is_sweep(config):
    raise ConfigError('--mode=report collects a sweep; this config has no sweep.grid or sweep.vary axes')
  all_points = points(config, task)
  for _, run_dir, cfg in _runs(config, workdir, task, finished_only=False):
    if (run_dir / RESULT_FILE).is_file():  # A finished run made with other settings is refused, not mixed in.
      workdir_lib.check_run(run_dir, cfg, task, record=False)
  records = finished_records(workdir, all_points)
  if not records:
    raise ConfigError(f'no finished point of this sweep in {workdir / RUNS_DIR}: train first')
  context = task.prepare(config, workdir)
  write_reports(config, workdir, task, context, all_points)
  print(f'report: {len(records)} of {len(all_points)} points finished; {workdir / "sweep.md"}', flush=True)
  return records


def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task) -> dict[str, Any]:
  """--mode=eval: every trained run of W (checked against its settings) scored by its file evaluator."""
  workdir = pathlib.Path(workdir)
  runs = _runs(config, workdir, task, finished_only=True)
  if not runs:
    raise ConfigError(f'no finished run of this sweep in {workdir / RUNS_DIR}: train first with --mode=train')
  for _, run_dir, cfg in runs:  # Every run's settings before any work (pretrained weights: a run of its own).
    workdir_lib.check_run(run_dir, cfg, task, record=False, evaluating=True,
                          untrained_ok=bool(run_lib.init_from(cfg)))
  context = task.prepare(config, workdir)
  results = {name: run_lib.evaluate_run(task, cfg, run_dir, context) for name, run_dir, cfg in runs}
  if jax.process_index() == 0:
    task.report_evaluation(config, workdir, results, context)
  run_lib.print_final_lines(results)
  return results


def on_checkpoint(mode: str, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task) -> None:
  """--mode=interactive and --mode=generate: the task's method on the trained run in W (checked against its
  settings); in a sweep, the one point the grid names."""
  workdir = pathlib.Path(workdir)
  runs = _runs(config, workdir, task, finished_only=False)
  if len(runs) != 1:
    raise ConfigError(f'--mode={mode} drives one trained run, but the sweep has {len(runs)} points; '
                      "narrow --config.sweep.grid to one, e.g. 'model=looped; flops_budget=1e12; seed=0'")
  _, run_dir, cfg = runs[0]
  workdir_lib.check_run(run_dir, cfg, task, record=False, evaluating=True,
                          untrained_ok=bool(run_lib.init_from(cfg)))
  run_lib.on_checkpoint(task, mode, cfg, run_dir, task.prepare(config, workdir))
