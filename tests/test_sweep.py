"""The sweep runner: points over dotted config paths, names, one-at-a-time ablations, shards, reports."""
import json
import subprocess
import sys

import ml_collections
import pytest

from configs import mlm as mlm_configs
from configs import sudoku as sudoku_configs
from tests.conftest import REPO_ROOT
from tests.conftest import launch_env
from tests.conftest import ok
from train import sweep
from train import task as task_lib
from train.errors import ConfigError


def _names(config, task='sudoku'):
  return [p.name for p in sweep.points(config, task_lib.get_task(task))]


def _with(config, **sweep_fields):
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in sweep_fields.items():
    config.sweep[key] = value
  return config


def test_grid_is_a_product_with_seeds_innermost_and_readable_names():
  config = _with(sudoku_configs.get_config('smoke'), grid='model.name=mlp,trm; train.lr=1e-3,3e-4; seed=0,1')
  assert _names(config) == ['mlp_lr=0.001_s0', 'mlp_lr=0.001_s1', 'mlp_lr=3e-4_s0', 'mlp_lr=3e-4_s1',
                            'trm_lr=0.001_s0', 'trm_lr=0.001_s1', 'trm_lr=3e-4_s0', 'trm_lr=3e-4_s1']
  point = sweep.points(config, task_lib.get_task('sudoku'))[3]
  cfg = sweep.point_config(config, point)
  assert (cfg.model.name, cfg.train.lr, cfg.seed) == ('mlp', 3e-4, 1)
  assert config.model.name == 'bert'  # The sweep's own config is left as it was.


def test_vary_changes_one_axis_at_a_time_around_the_baseline():
  config = _with(sudoku_configs.get_config('smoke'), grid='seed=0,1',
                 vary='train.lr=1e-4,1e-3; train.grad_clip=0,0.5; model.dropout=0.1')
  points = sweep.points(config, task_lib.get_task('sudoku'))
  # lr 1e-3 is the baseline's own value (smoke): no separate point for it.
  assert [p.name for p in points] == ['s0', 's1', 'lr=1e-4_s0', 'lr=1e-4_s1', 'grad_clip=0_s0', 'grad_clip=0_s1',
                                      'grad_clip=0.5_s0', 'grad_clip=0.5_s1', 'dropout=0.1_s0', 'dropout=0.1_s1']
  assert [p.varied for p in points[:4]] == [None, None, 'train.lr', 'train.lr']
  cfg = sweep.point_config(config, points[4])
  assert (cfg.train.grad_clip, cfg.train.lr, cfg.model.dropout) == (0.0, 1e-3, 0.0)


def test_named_point_sets_fields_of_several_sections_and_vary_reads_them():
  config = _with(mlm_configs.get_config('smoke'), grid='model=bert,trm', vary='train.lr=0.01')
  points = sweep.points(config, task_lib.get_task('mlm'))
  assert [p.name for p in points] == ['bert', 'bert_lr=0.01', 'trm', 'trm_lr=0.01']
  cfg = sweep.point_config(config, points[3])
  assert cfg.model.name == 'trm' and cfg.train.lr == 0.01 and cfg.train.detach and 'models' not in cfg
  cfg = sweep.point_config(config, points[0])
  assert cfg.model.name == 'bert' and not cfg.train.detach and cfg.model.width == 32
  # An axis on the named points applies before they are merged, whatever the order it is given in; an axis on a
  # field after them.
  config.sweep.grid, config.sweep.vary = 'model.depth=3; models.bert.model.width=48; model=bert', ''
  (point,) = sweep.points(config, task_lib.get_task('mlm'))
  cfg = sweep.point_config(config, point)
  assert (cfg.model.width, cfg.model.depth) == (48, 3)
  # A named point holding a field the config lacks is refused, naming it.
  with config.unlocked():
    config.models.bert.train.lrr = 0.1
  with pytest.raises(ConfigError, match=r'models\.bert\.train\.lrr is not a field'):
    sweep.point_config(config, point)


def test_arith_study_points_set_the_data_format_and_the_looped_model():
  """The study's `model=` axis names points that set fields of `data` and of `model`, not a model section."""
  from configs import arith as arith_configs
  config = arith_configs.get_config('study')
  by_name = {p.name.split('_')[0]: sweep.point_config(config, p) for p in sweep.points(config, task_lib.get_task('arith'))
             if p.name.endswith('1e11_s0')}
  assert {k: (c.data.format, c.model.name) for k, c in by_name.items()} == {
      'plain': ('plain', 'llama'), 'reversed': ('reversed', 'llama'), 'cot': ('cot', 'llama'),
      'looped': ('reversed', 'looped')}
  assert by_name['looped'].model.loops == 4 and 'format' not in by_name['looped'].model


@pytest.mark.parametrize('grid, message', [
    ('model.name=mlp,mlp', 'twice'), ('train.lrr=1e-3', 'names no config field'), ('train.steps=1.5', 'not a int'),
    ('model=gpt', 'is a section'), ('train.lr', 'path=value1'), ('train=1', 'is a section'),
    ('model.hiden=8', 'names no config field')])
def test_bad_axes_are_config_errors_naming_the_axis(grid, message):
  config = _with(sudoku_configs.get_config('smoke'), grid=grid)
  with pytest.raises(ConfigError, match=message):
    sweep.points(config, task_lib.get_task('sudoku'))


def test_shards_split_the_points_without_overlap():
  config = _with(sudoku_configs.get_config('smoke'), grid='model.name=mlp,bert,trm; seed=0,1,2')
  names = _names(config)
  shards = []
  for i in range(4):
    config.sweep.shard = f'{i}/4'
    j, n = sweep.shard_of(config)
    shards.append([p.name for p in sweep.points(config, task_lib.get_task('sudoku'))[j::n]])
  assert sorted(sum(shards, [])) == sorted(names) and all(shards)
  for bad in ('4/4', '1', 'a/b', '-1/2'):
    config.sweep.shard = bad
    with pytest.raises(ConfigError, match='sweep.shard'):
      sweep.shard_of(config)


def test_mlm_ablation_smoke_in_two_shards_then_report(tmp_path, shared_data):
  """Two processes split the ablation (a job array into one workdir); the report collects every point."""
  text = shared_data / 'text' / 'wiki.valid.tokens'
  workdir = tmp_path / 'w'
  args = [sys.executable, 'launch.py', '--config=configs/mlm.py:ablation,smoke', f'--workdir={workdir}',
          f'--config.data.files={text}', '--config.sweep.vary=train.lr=5e-4,6e-3;model.dropout=0.1;train.grad_clip=0']
  env = launch_env({'PATH': '/usr/bin:/bin'})
  procs = [subprocess.Popen(args + [f'--config.sweep.shard={i}/2'], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert 'shard 0/2: 3 of them' in outs[0] and 'shard 1/2: 2 of them' in outs[1]
  proc = subprocess.run(args + ['--mode=report'], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  ok(proc)
  assert 'report: 5 of 5 points finished' in proc.stdout
  table = (workdir / 'ablation.md').read_text()
  settings = ['baseline', 'train.lr=5e-4', 'train.lr=0.006', 'model.dropout=0.1', 'train.grad_clip=0']
  assert all(f'| {s} |' in table for s in settings), table
  ranks = [line.split('|')[1].strip() for line in table.splitlines() if line.startswith('| ') and 'rank' not in line]
  assert ranks == ['1', '2', '3', '4', '5']
  losses = [float(line.split('|')[3].split('±')[0]) for line in table.splitlines()
            if line.startswith('| ') and 'rank' not in line]
  assert losses == sorted(losses)  # Ranked by eval MLM loss, lowest first.
  assert (workdir / 'ablation.png').stat().st_size > 10_000
  assert (workdir / 'train_loss.png').stat().st_size > 10_000  # Every point's training loss, mean over seeds.
  assert 'Not finished' not in (workdir / 'sweep.md').read_text()
  records = json.loads((workdir / 'results.json').read_text())
  assert len(records) == 5
  events = sorted(workdir.glob('runs/*/events.out.tfevents.*'))
  assert len(events) == 5  # One TensorBoard run per point, all under one --logdir=W.
  by_run = {r['run']: r for r in records}
  # Dropout acts in training: its run ends elsewhere than the baseline's (eval runs without it: test_models).
  assert by_run['bert_dropout=0.1_s0']['mlm_loss'] != by_run['bert_s0']['mlm_loss']


@pytest.mark.parametrize('key, value', [('train.steps', -5), ('train.batch_size', 0), ('train.lr', -1.0),
                                        ('train.b2', 1.0), ('eval.batch_size', 0)])
def test_shared_fields_out_of_range_are_refused_naming_key_and_range(key, value):
  from train import validation
  config = sudoku_configs.get_config('smoke')
  section, leaf = key.split('.')
  with config.unlocked():
    config[section][leaf] = value
  with pytest.raises(ConfigError, match=rf'{key}={value!r} must be'):
    validation.check_shared_fields(config)
  validation.check_shared_fields(sudoku_configs.get_config('smoke'))  # The variants themselves pass.
  for variant in mlm_configs.VARIANTS:
    validation.check_shared_fields(mlm_configs.get_config(variant))


def test_ablation_table_ranks_settings_and_keeps_diverged_ones_apart(tmp_path):
  from train import tables

  def rec(varied, value, seed, loss):
    point = {'model': 'bert', **({varied: value} if varied else {}), 'seed': seed}
    return dict(point=point, varied=varied, run=f'{varied}{value}{seed}', **(
        {'mlm_loss': loss, 'masked_accuracy': 0.1} if loss is not None else {'diverged': 'loss is nan'}))

  records = [rec(None, None, s, 6.0 + 0.01 * s) for s in range(3)]
  records += [rec('model.lr', 1e-4, s, 6.5) for s in range(3)]
  records += [rec('model.lr', 1e-2, s, 5.5 if s else None) for s in range(3)]  # One seed diverged.
  records += [rec('train.grad_clip', 0.0, s, None) for s in range(3)]  # Every seed diverged.
  (rows,) = tables.ablation_rows(records, ('mlm_loss', 'min')).values()
  assert [r['setting'] for r in rows] == ['model.lr=0.01 (1 of 3 diverged)', 'baseline', 'model.lr=1e-4',
                                          'train.grad_clip=0 (3 of 3 diverged)']
  assert rows[0]['delta'] == pytest.approx(5.5 - 6.01)
  text = tables.ablation_markdown(tables.ablation_rows(records, ('mlm_loss', 'min')),
                                 (('mlm_loss', 'min'), ('masked_accuracy', 'max')))
  assert '| 1 | model.lr=0.01 (1 of 3 diverged) | 5.5000 ± 0.0000 | -0.5100 |' in text
  from train import plots
  plots.plot_ablation(tables.ablation_rows(records, ('mlm_loss', 'min')), 'mlm_loss', tmp_path / 'ablation.png')
  assert (tmp_path / 'ablation.png').stat().st_size > 5_000


def test_sweep_table_writes_values_the_way_run_names_do():
  from train import sweep, tables

  records = [dict(point={'flops_budget': 1e12, 'model': 'plain', 'seed': s}, test_exact=0.5 + 0.1 * s) for s in (0, 1)]
  text = tables.sweep_markdown(records, points=[None] * 3, missing=['plain_flops_budget=1e12_s2'],
                               metrics=(('test_exact', 'max'),))
  assert '| flops_budget=1e12, model=plain | 2 | 0.5500 ± 0.0707 |' in text
  assert '1000000000000.0' not in text
  assert 'Not finished yet: plain_flops_budget=1e12_s2' in text
  assert sweep.default_name_part('flops_budget', 1e12) == 'flops_budget=1e12'
