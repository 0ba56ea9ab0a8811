"""The MLM study end to end at smoke scale, plus the task's readout, loss and FLOP bookkeeping."""
import json
import pathlib

import jax
import ml_collections
import numpy as np
import optax
import pytest

import models
from configs import mlm as mlm_configs
from data import mlm_batches as mlm_data
from data import paths
from data import text as text_lib
import train
from train import run as run_lib
from train import sweep
from train import task as task_lib
from train.errors import ConfigError, WorkdirError
from train.tasks.mlm import masked_lm as mlm_lib
from train.flops import steps_for_budget
from tests.conftest import launch
from tests.conftest import ok

REQUIRED_KEYS = ('model', 'flops', 'seed', 'steps', 'mlm_loss', 'masked_accuracy', 'perplexity', 'params',
                 'flops_per_step_xla', 'flops_per_step_analytic', 'train_seconds')


def _text_file(tmp_path: pathlib.Path) -> str:
  """1,500 lines of WikiText-2 valid when ../shared is there, else generated sentences."""
  source = paths.shared_data_dir() / 'text' / 'wiki.valid.tokens'
  if source.is_file():
    lines = text_lib.read_lines(source)[:1500]
  else:
    rng = np.random.default_rng(0)
    words = [f'w{i}' for i in range(300)] + ['the', 'of', 'and', 'in', 'a', 'to', 'is', 'was']
    lines = [' '.join(rng.choice(words, 60)) for _ in range(1500)]
  path = tmp_path / 'text.txt'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return str(path)


def smoke_config(files: str) -> ml_collections.ConfigDict:
  config = mlm_configs.get_config('smoke')
  with config.unlocked():
    config.data.files = files
    config.sweep.compilation_cache = False  # Leave the process-wide JAX settings alone in tests.
  config.lock()
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  """Runs the smoke study once; returns (config, workdir, records, stdout of the run)."""
  tmp = tmp_path_factory.mktemp('mlm_study')
  config = smoke_config(_text_file(tmp))
  workdir = tmp / 'w'
  records = train.train_and_evaluate(config, str(workdir))
  return config, workdir, records


def test_smoke_study_writes_results_for_every_model(study):
  config, workdir, records = study
  results = json.loads((workdir / 'results.json').read_text())
  assert len(results) == len(records) == 6  # 3 models x 2 budgets x 1 seed.
  assert {r['model'] for r in results} == {'bert', 'trm', 'looped_bert'}
  assert {r['architecture'] for r in results} == {'bert', 'trm'}
  for r in results:
    for key in REQUIRED_KEYS:
      assert key in r, key
    assert r['flops'] > 0 and r['flops_per_step_xla'] > 0 and r['steps'] >= 1
    assert 0.0 <= r['masked_accuracy'] <= 1.0
    assert np.isclose(r['perplexity'], np.exp(r['mlm_loss']), rtol=1e-6)
    # Steps come from the budget: the trained FLOPs are the budget up to one step.
    assert abs(r['flops_trained'] - r['flops']) <= r['flops_per_step_xla'] / 2 + 1
    # Depth at test time: every step up to eval.depth_multiplier x the trained depth; the score is the trained one.
    assert len(r['loss_by_depth']) == len(r['accuracy_by_depth']) == config.eval.depth_multiplier * r['depth']
    assert r['mlm_loss'] == r['loss_by_depth'][r['depth'] - 1]
  assert (workdir / 'accuracy_vs_compute.png').stat().st_size > 10_000
  assert (workdir / 'depth_vs_loss.png').stat().st_size > 10_000
  table = (workdir / 'results.md').read_text()
  assert '±' in table and '| bert |' in table and '| trm |' in table
  assert 'Without context (unigram of the eval targets): masked accuracy 0.' in table
  depth_tables = table.split('## Depth at test time')[1]
  assert '### trm (trained depth 2)' in depth_tables and '### looped_bert (trained depth 2)' in depth_tables
  assert '### bert' not in depth_tables  # One application: nothing to vary.
  # The larger budget trains more steps.
  for model in ('bert', 'trm', 'looped_bert'):
    steps = [r['steps'] for r in results if r['model'] == model]
    assert steps[0] < steps[1]


def test_xla_flops_within_sane_factor_of_analytic(study):
  _, _, records = study
  for r in records:
    ratio = r['flops_per_step_xla'] / r['flops_per_step_analytic']
    assert 0.7 < ratio < 1.6, (r['model'], ratio)
  trm = next(r for r in records if r['model'] == 'trm')
  bert = next(r for r in records if r['model'] == 'bert')
  # TRM re-applies its network (cycles x (inner_steps + 1) x depth): dearer per step at similar size.
  assert trm['flops_per_step_xla'] > 1.5 * bert['flops_per_step_xla']


def test_rerun_skips_finished_runs(study, capsys):
  config, workdir, _ = study
  result_files = sorted((workdir / 'runs').glob('*/result.json'))
  before = {p: p.stat().st_mtime_ns for p in result_files}
  records = train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert out.count('finished earlier, skipped') == 6
  assert {p: p.stat().st_mtime_ns for p in result_files} == before
  assert len(records) == 6


def test_changed_settings_are_refused_in_the_same_workdir(study):
  config, workdir, _ = study
  changed = ml_collections.ConfigDict(config.to_dict())
  changed.models.bert.model.width = 48
  with pytest.raises(WorkdirError, match=r'model.width: 32 -> 48'):
    train.train_and_evaluate(changed, str(workdir))


def test_eval_masks_are_identical_for_both_models_and_eval_mode_reproduces_scores(study):
  config, workdir, records = study
  assert len({r['eval_tokens'] for r in records}) == 1  # Every run scored the same positions.
  data = mlm_data.prepare(config.data, workdir)
  a = mlm_lib.eval_set(data.eval_tokens_NxL, config.data, 32, data.vocab_size, data.special_ids)
  b = mlm_lib.eval_set(data.eval_tokens_NxL, config.data, 32, data.vocab_size, data.special_ids)
  for x, y in zip(a, b):
    for key in ('tokens', 'positions', 'targets', 'weights'):
      np.testing.assert_array_equal(x[key], y[key])
  assert sum(int(x['weights'].sum()) for x in a) == records[0]['eval_tokens']
  rescored = [dict(json.loads((res.run_dir / 'result.json').read_text()), **res.figures)
              for res in train.evaluate(config, str(workdir)).values()]
  by_run = {r['run']: r for r in records}
  assert len(rescored) == len(records)
  for r in rescored:
    assert r['masked_accuracy'] == pytest.approx(by_run[r['run']]['masked_accuracy'], abs=1e-6)
    assert r['mlm_loss'] == pytest.approx(by_run[r['run']]['mlm_loss'], rel=1e-5)


def test_to_positions_gathers_masked_positions_in_order():
  weights = np.array([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0]], np.float32)
  batch = dict(tokens=np.arange(10).reshape(2, 5), targets=np.arange(100, 110).reshape(2, 5), weights=weights)
  out = mlm_lib.to_positions(batch, 2)
  np.testing.assert_array_equal(out['positions'], [[1, 3], [0, 0]])
  np.testing.assert_array_equal(out['targets'], [[101, 103], [105, 105]])
  np.testing.assert_array_equal(out['weights'], [[1, 1], [0, 0]])
  np.testing.assert_array_equal(out['dropped'], [1, 0])
  with pytest.raises(ValueError, match='max_predictions'):
    mlm_lib.to_positions(batch, 6)


def test_to_positions_pools_a_group_of_sequences():
  weights = np.array([[0, 1, 0, 1, 1], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32)
  batch = dict(tokens=np.arange(20).reshape(4, 5), targets=np.arange(100, 120).reshape(4, 5), weights=weights)
  out = mlm_lib.to_positions(batch, 4, group=2)  # Rows: sequences 0-1 and 2-3, 10 tokens each.
  np.testing.assert_array_equal(out['positions'], [[1, 3, 4, 7], [0, 0, 0, 0]])
  np.testing.assert_array_equal(out['targets'], [[101, 103, 104, 107], [110, 110, 110, 110]])
  np.testing.assert_array_equal(out['weights'], [[1, 1, 1, 1], [1, 0, 0, 0]])
  np.testing.assert_array_equal(out['dropped'], [0, 0])
  np.testing.assert_array_equal(mlm_lib.to_positions(batch, 3, group=4)['dropped'], [2])
  with pytest.raises(ValueError, match='readout_group=3'):
    mlm_lib.to_positions(batch, 2, group=3)
  # Pooling needs fewer slots: 32 sequences of 64 at 15% take 389 together, 25 each alone.
  assert mlm_lib.auto_max_predictions(64, 0.15) == 25
  assert mlm_lib.auto_max_predictions(64, 0.15, group=32) == 389


def test_readout_group_and_slots_from_config():
  config = mlm_configs.get_config('smoke')  # Batch 16 on one device.
  assert mlm_lib.readout_group(config, 16) == 16
  with config.unlocked():
    config.train.readout_group = 4
  assert mlm_lib.readout_group(config, 16) == 4
  assert mlm_lib.max_predictions(config, 4) == mlm_lib.auto_max_predictions(32, 0.15, 4)
  with config.unlocked():
    config.train.readout_group = 5
  with pytest.raises(ValueError, match='train.readout_group=5'):
    mlm_lib.readout_group(config, 16)
  with config.unlocked():
    config.train.max_predictions = 200
  with pytest.raises(ValueError, match='train.max_predictions=200'):
    mlm_lib.max_predictions(config, 4)


def test_masked_readout_loss_equals_full_sequence_loss():
  """Reading out only the masked positions gives BERT's loss over the whole sequence."""
  cfg = mlm_configs.get_config('smoke')
  model_cfg = cfg.models.bert.model
  seq_len, vocab = 12, 40
  model = models.build(model_cfg, vocab_size=vocab, num_classes=vocab, seq_len=seq_len)
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, vocab, (3, seq_len)).astype(np.int32)
  weights = (rng.random((3, seq_len)) < 0.3).astype(np.float32)
  weights[0, 0] = 1.0
  params = model.init(jax.random.key(0), tokens)['params']
  logits = model.apply({'params': params}, tokens)['logits']
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
  expected = float((ce * weights).sum() / weights.sum())
  accuracy = float(((np.argmax(logits, -1) == tokens) * weights).sum() / weights.sum())
  for group, slots in ((1, seq_len), (3, int(weights.sum()))):  # One row per sequence, or one for all.
    batch = mlm_lib.to_positions(dict(tokens=tokens, targets=tokens, weights=weights), slots, group)
    assert batch['positions'].shape == (3 // group, slots) and batch['dropped'].sum() == 0
    loss, metrics = mlm_lib.mlm_loss(params, batch, jax.random.key(1), model=model, depth=1,
                                     deep_supervision=True, detach=True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics['ce']) == pytest.approx(expected, rel=1e-5)
    assert float(metrics['acc']) == pytest.approx(accuracy, abs=1e-6)


def test_unigram_baseline_scores_a_model_without_context():
  batch = dict(targets=np.array([[7, 7, 9, 3], [7, 9, 1, 1]]),
               weights=np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32))
  baseline = mlm_lib.unigram_baseline([batch])  # Targets 7, 7, 9, 7, 9: the weight-0 slots do not count.
  assert baseline['accuracy'] == pytest.approx(0.6)
  assert baseline['mlm_loss'] == pytest.approx(-(0.6 * np.log(0.6) + 0.4 * np.log(0.4)))
  with pytest.raises(ValueError, match='no masked position'):
    mlm_lib.unigram_baseline([dict(batch, weights=np.zeros((2, 4), np.float32))])


def test_top_class_is_argmax_with_ties_to_the_first_index():
  logits = np.random.default_rng(0).normal(size=(4, 7, 300)).astype(np.float32)
  logits[0, 0, [5, 9, 200]] = 50.0  # A three-way tie for the top: the first index wins.
  logits[1, 2, :] = 0.0  # All equal: index 0.
  top = np.asarray(jax.jit(mlm_lib.top_class)(logits))
  np.testing.assert_array_equal(top, np.argmax(logits, -1))
  assert top[0, 0] == 5 and top[1, 2] == 0


def test_sweep_points_names_and_steps():
  config = mlm_configs.get_config('smoke')
  task = task_lib.get_task('mlm')
  assert [p.name for p in sweep.points(config, task)] == ['bert_2e9_s0', 'bert_6e9_s0', 'trm_2e9_s0', 'trm_6e9_s0',
                                                           'looped_bert_2e9_s0', 'looped_bert_6e9_s0']
  assert steps_for_budget(10.0, 100.0) == 1
  assert steps_for_budget(1e12, 3e9) == 333
  with config.unlocked():
    config.sweep.grid = 'model=bert,gpt'
  with pytest.raises(ConfigError, match='gpt'):
    sweep.points(config, task)
  with pytest.raises(ValueError, match='unknown variant'):
    mlm_configs.get_config('huge')
  for variant in mlm_configs.VARIANTS:
    cfg = mlm_configs.get_config(variant)
    for point in sweep.points(cfg, task):  # Every point's config passes every check that needs no data.
      run_lib.check(task, sweep.point_config(cfg, point))


def test_eight_simulated_devices_match_one(tmp_path):
  """The same run on 8 CPU devices (batch and readout rows sharded on 'data') trains the same steps, the
  same loss curve and the same eval loss as on 1: FLOPs are counted for the whole batch, not one device's share."""
  args = ['--config=configs/mlm.py:smoke', f'--config.data.files={_text_file(tmp_path)}',
          '--config.sweep.grid=model=bert;flops_budget=2e9;seed=0', '--config.train.log_every=1',
          '--config.sweep.compilation_cache=False', '--config.train.readout_group=2']
  ok(launch(*args, f'--workdir={tmp_path / "one"}'))
  ok(launch(*args, f'--workdir={tmp_path / "eight"}', env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}))

  def run(workdir):
    record = json.loads((workdir / 'results.json').read_text())[0]
    metrics = next((workdir / 'runs').iterdir()) / 'metrics.jsonl'
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    return record, np.array([r['loss'] for r in rows if r['kind'] == 'train'])

  (one, losses_one), (eight, losses_eight) = run(tmp_path / 'one'), run(tmp_path / 'eight')
  assert one['steps'] == eight['steps'] > 10
  assert one['flops_per_step_xla'] == eight['flops_per_step_xla']
  np.testing.assert_allclose(losses_eight, losses_one, rtol=2e-4, atol=1e-5)
  assert eight['mlm_loss'] == pytest.approx(one['mlm_loss'], rel=1e-4)


def test_diagnostics_measure_gradients_and_state_change_per_application():
  """grad_norm per parameter group, the relative change of every application (TRM: n x T latent updates and T
  answer updates per step; looped BERT: its carry per step) and the loss after each supervision step."""
  from train.tasks.mlm import diagnostics
  cfg = mlm_configs.get_config('smoke')
  seq_len, vocab = 12, 40
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, vocab, (4, seq_len)).astype(np.int32)
  weights = (rng.random((4, seq_len)) < 0.3).astype(np.float32)
  weights[:, 0] = 1.0
  batch = mlm_lib.to_positions(dict(tokens=tokens, targets=tokens, weights=weights), seq_len, 1)
  for name, states in (('trm', {'z': 2, 'y': 2}), ('looped_bert', {'h': 1})):
    model_cfg = ml_collections.ConfigDict(cfg.models[name].model.to_dict())
    model_cfg.inner_steps = 1 if name == 'trm' else model_cfg.inner_steps
    detach = cfg.models[name].train.detach
    model = models.build(model_cfg, vocab_size=vocab, num_classes=vocab, seq_len=seq_len)
    params = model.init(jax.random.key(0), tokens)['params']
    loss_fn = lambda p, b, r: mlm_lib.mlm_loss(p, b, r, model=model, depth=2, deep_supervision=True,  # pylint: disable=cell-var-from-loop
                                               detach=detach)
    step_losses = lambda p, b: (lambda s: s['ce'] / s['count'])(mlm_lib.eval_sums(p, b, model=model, depth=2))  # pylint: disable=cell-var-from-loop
    diag = diagnostics.diagnose(model, params, batch, loss_fn, 2, step_losses)
    assert {'embed', 'block_0'} <= set(diag['grad_norm'])
    assert all(v > 0 for k, v in diag['grad_norm'].items() if k != 'halt_head')  # MLM trains no halting head.
    assert len(diag['change']) == 2 and {k: len(v) for k, v in diag['change'][0].items()} == states
    loss, _ = loss_fn(params, {k: jax.numpy.asarray(v) for k, v in batch.items()}, None)
    assert np.mean(diag['loss_by_step']) == pytest.approx(float(loss), rel=1e-5)
    if name == 'trm':  # The first latent update, by hand: ||z1 - z0|| / ||z0||.
      cls = type(model)
      inputs = model.apply({'params': params}, tokens, method=cls.encode)
      carry = model.apply({'params': params}, inputs, method=cls.init_carry)
      _, state = model.apply({'params': params}, carry, inputs, method=cls.step, mutable=['intermediates'])
      z0, z1 = np.asarray(carry['z']), np.asarray(state['intermediates']['z'][0])
      assert diag['change'][0]['z'][0] == pytest.approx(np.linalg.norm(z1 - z0) / np.linalg.norm(z0), rel=1e-4)
    assert 'd' in diagnostics.summary_line(diag) and '|g| embed' in diagnostics.summary_line(diag)
