"""The arithmetic task through launch.py, as a user runs it: train, eval files, interactive, a study sweep."""
import json
import re
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from data import arith_batches
from data import arith_tokenizer
from data.arith_problems import Problem
from models.decoder import Decoder, DecoderConfig
from tests.conftest import REPO_ROOT as REPO
from tests.conftest import launch
from tests.conftest import launch_env
from tests.conftest import ok
from train import task as task_lib
from train.errors import ConfigError
from train.tasks.arith import generation
from train.tasks.arith import objective

SMOKE = 'configs/arith.py:smoke'


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp('arith')
  ok(launch(f'--config={SMOKE}', f'--workdir={workdir}'))
  return workdir


def test_smoke_train_writes_results_table_and_length_plot(smoke_run):
  results = json.loads((smoke_run / 'results.json').read_text())
  assert results['train_steps'] == 20 and results['test_problems'] > 0
  assert set(results['exact_by_length']) == {'1', '2', '3', '4'}  # Trained to 3 digits, scored to 4.
  assert results['train_flops'] == 20 * results['flops_per_step'] > 0
  assert results['inference_flops'] > 0
  assert '| 4 |' in (smoke_run / 'results.md').read_text()
  assert (smoke_run / 'accuracy_vs_length.png').read_bytes()[:4] == b'\x89PNG'


def test_eval_file_scores_every_line_and_ends_with_the_line_scripts_read(smoke_run, tmp_path):
  problems = tmp_path / 'mine.txt'
  problems.write_text('# a comment\n12+34\n5 + 7 =\n99+1=5\n\n123+4=127\n')
  proc = launch(f'--config={SMOKE}', f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={problems}')
  out = ok(proc)
  assert '1 of 4 lines' in out and 'wrong answer' in out  # 99+1=5 is scored against 100, with a warning.
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith('exact_accuracy=') and last.endswith(' loops=1'), last
  saved = json.loads((smoke_run / 'eval_mine.txt.json').read_text())
  assert saved['problems'] == 4 and saved['wrong_given'] == 1 and set(saved['exact_by_length']) == {'1', '2', '3'}


def test_eval_file_at_an_abacus_offset_and_one_line_past_the_table(smoke_run, tmp_path):
  problems = tmp_path / 'offset.txt'
  problems.write_text('12+34\n5+7\n')
  out = ok(launch(f'--config={SMOKE}', f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={problems}',
                  '--config.eval.abacus_offset=2'))
  assert 'Abacus offset 2' in out
  saved = json.loads((smoke_run / 'eval_offset.txt.json').read_text())
  assert saved['abacus_offset'] == 2 and saved['abacus_equals_row'] is False and saved['problems'] == 2
  proc = launch(f'--config={SMOKE}', f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={problems}',
                '--config.eval.abacus_offset=30')  # The smoke model's table has 32 rows; 5-digit answers need 35.
  err = proc.stderr.strip().splitlines()
  assert proc.returncode != 0 and len(err) == 1 and 'model.max_digit_pos=32 is too small' in err[0], proc.stderr[-2000:]
  long = tmp_path / 'long.txt'
  long.write_text('1+2\n' + '9' * 31 + '+1\n')  # 32-digit answer: fits at offset 0, not at offset 1.
  ok(launch(f'--config={SMOKE}', f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={long}'))
  proc = launch(f'--config={SMOKE}', f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={long}',
                '--config.eval.abacus_offset=1')
  err = proc.stderr.strip().splitlines()
  assert proc.returncode != 0 and len(err) == 1 and f'too small for {long}' in err[0], proc.stderr[-2000:]


@pytest.mark.parametrize('text, says', [('12+34\n12+\n', ':2: '), ('1+1\n\n3-4\n', ':3: '), ('7*8=56\n1+2+3\n', ':2: ')])
def test_malformed_eval_line_is_one_error_naming_file_and_line(smoke_run, tmp_path, text, says):
  bad = tmp_path / 'bad.txt'
  bad.write_text(text)
  proc = launch(f'--config={SMOKE}', f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={bad}')
  err = proc.stderr.strip().splitlines()
  assert proc.returncode != 0 and len(err) == 1 and f'{bad}{says}' in err[0], proc.stderr[-2000:]


def test_interactive_answers_piped_problems_and_rejects_other_input(smoke_run):
  for ending in ('quit\n', ''):  # `quit`, and end of input (Ctrl-D).
    proc = subprocess.run([sys.executable, 'launch.py', f'--config={SMOKE}', f'--workdir={smoke_run}',
                           '--mode=interactive'], input='12+34=\nhello\n\n7+8\n12*3\n1234+5\n' + ending, cwd=REPO,
                          text=True, capture_output=True, timeout=300, env=launch_env())
    out = ok(proc)
    assert out.count('answer: ') == 3 and '12+34=' in out and '7+8=' in out, out[-2000:]
    assert "not a problem: unexpected character 'h'" in out
    assert 'not a problem this model learned: it was trained on + only, never on *' in out  # 12*3: no answer.
    assert 'note: a 4-digit operand lies outside training (operands of 1-3 digits)' in out and '1234+5=' in out
    assert 'answered without a chain of thought' in out  # The smoke model writes reversed answers.
    assert proc.stdout.count('> ') == 7  # The prompt after each line, blank included, and before the end.


def test_study_sweep_at_matched_flops_reports_compute_loops_and_inference_plots(tmp_path):
  """Two models at one FLOP budget: steps follow the XLA-counted FLOPs; the looped model (trained at random
  depths 1-6, Huginn-style) gets a loops curve."""
  out = ok(launch('--config=configs/arith.py:smoke,study', f'--workdir={tmp_path}', '--config.train.batch_size=16',
                  '--config.eval.num_val=2', '--config.eval.num_test=2', '--config.eval.num_per_length=3',
                  '--config.eval.max_digits=5', "--config.sweep.grid=model=reversed,looped; flops_budget=1e9; seed=0", '--config.models.looped.train.random_loops=6'))
  assert 'sweep done' in out
  results = json.loads((tmp_path / 'results.json').read_text())
  assert len(results) == 2
  for record in results.values():
    assert abs(record['train_flops'] - record['point']['flops_budget']) <= record['flops_per_step']
  looped = [r for r in results.values() if r['looped']]
  assert looped and all(len(r['exact_by_loops']) >= 3 for r in looped)
  for r in looped:  # Every test-time depth is also scored by length, the trained depth as the length table itself.
    assert set(r['exact_by_length_by_loops']) == set(r['exact_by_loops'])
    assert all(set(by_n) == {'1', '2', '3', '4', '5'} for by_n in r['exact_by_length_by_loops'].values())
    assert r['exact_by_length_by_loops'][str(r['trained_loops'])] == r['exact_by_length']
  for name in ('accuracy_vs_compute.png', 'accuracy_vs_inference_flops.png', 'accuracy_vs_length.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  assert any((p / 'accuracy_vs_loops.png').is_file() for p in (tmp_path / 'runs').iterdir())
  assert (tmp_path / 'accuracy_vs_length_by_loops.png').stat().st_size > 0
  table = (tmp_path / 'results.md').read_text()
  assert 'reversed, looped x4 (trained at 1-6)' in table and '| reversed |' in table
  by_loops = table.split('## Exact accuracy by operand length', 1)[1]
  assert '| 4 | 5 (beyond) |' in by_loops and '| reversed, looped x4 (trained at 1-6) | 8 |' in by_loops
  # Interactive mode drives one point of the sweep, named by a one-point grid.
  point = ['--config=configs/arith.py:smoke,study', f'--workdir={tmp_path}', '--config.train.batch_size=16',
           '--mode=interactive', '--config.models.looped.train.random_loops=6']
  proc = subprocess.run([sys.executable, 'launch.py', *point, '--config.sweep.grid=model=looped; flops_budget=1e9; seed=0'],
                        input='3+4\n', cwd=REPO, text=True, capture_output=True, timeout=300,
                        env=launch_env())
  assert 'reversed, looped x4 (trained at 1-6), best checkpoint' in ok(proc) and 'answer: ' in proc.stdout
  proc = launch(*point, '--config.sweep.grid=model=reversed,looped; flops_budget=1e9; seed=0')
  assert proc.returncode != 0 and 'the sweep has 2 points' in proc.stderr.strip().splitlines()[-1]


def test_every_variant_and_model_choice_passes_the_config_checks():
  """Each variant of configs/arith.py, at each point of its sweep, is a valid run config."""
  from configs import arith as arith_configs
  from train import run as run_lib
  from train import sweep
  task = task_lib.get_task('arith')
  for variant in arith_configs.VARIANTS:
    config = arith_configs.get_config(variant)
    points = sweep.points(config, task) if config.sweep.grid else [sweep.Point('', ())]
    for point in points:
      run_lib.check(task, sweep.point_config(config, point))


@pytest.mark.parametrize('section, field, value, says', [
    ('eval', 'abacus_offset', -2, 'eval.abacus_offset=-2 must be >= 0'),
    ('eval', 'abacus_offset', 8, 'model.max_digit_pos=24 is too small: evaluation writes numbers of 17 digits'),
    ('data', 'abacus_max_offset', 18, 'model.max_digit_pos=24 is too small: training writes numbers of 7 digits'),
    ('data', 'abacus_equals_row', True, 'evaluation writes numbers of 17 digits (eval.max_digits=16) at '
     'eval.abacus_offset=7, positions up to 25 with data.abacus_equals_row; set model.max_digit_pos >= 25'),
])
def test_abacus_positions_beyond_the_table_are_refused_naming_the_keys(section, field, value, says):
  """Offsets that would push digit positions past model.max_digit_pos (where they would be clipped) stop the
  run before any work, in one line; so does an evaluation offset for a model without Abacus positions."""
  from configs import arith as arith_configs
  from train.tasks.arith import settings
  config = arith_configs.get_config('length_gen')  # Table 24; 7-digit training answers, 17-digit evaluation ones.
  if field == 'abacus_equals_row':  # At offset 7, 17-digit answers fit the table only without the '=' row.
    config.eval.abacus_offset = 7
    settings.check(config)
  config[section][field] = value
  with pytest.raises(ConfigError, match=re.escape(says)):
    settings.check(config)
  config = arith_configs.get_config('add_cpu')
  config.model.position = 'rope'
  config.eval.abacus_offset = 1
  with pytest.raises(ConfigError, match=re.escape("eval.abacus_offset=1 needs Abacus positions (model.position='rope')")):
    settings.check(config)
  config.eval.abacus_offset = 0
  config.data.abacus_equals_row = True
  with pytest.raises(ConfigError, match=re.escape("data.abacus_equals_row=True needs Abacus positions (model.position='rope')")):
    settings.check(config)


@pytest.mark.parametrize('field, value, says', [
    ('format', 'rev', "data.format must be one of plain, reversed, cot, cot_rev; got 'rev'"),
    ('abacus_equals_row', None, 'data.abacus_equals_row must be True or False'),
])
def test_data_format_fields_are_checked_before_any_work(field, value, says):
  """data.format and data.abacus_equals_row shape the batches: a bad value is named as the data field."""
  from configs import arith as arith_configs
  from train.tasks.arith import settings
  config = arith_configs.get_config('add_cpu')
  config.data[field] = value
  with pytest.raises(Exception, match=re.escape(says)):
    settings.check(config)


@pytest.mark.parametrize('looped, offset, equals_row', [(False, 0, False), (True, 0, False), (False, 3, False),
                                                      (True, 2, True)])
def test_greedy_generation_is_what_teacher_forcing_scores_as_exact(looped, offset, equals_row):
  """Validation's premise: greedy decoding (KV cache, left-padded prompts, incremental Abacus positions)
  writes exactly the tokens that are the argmax after the true prefix under teacher forcing (right-padded,
  data-side positions), also with an Abacus offset added to every digit position on both sides, and with
  the '=' given its own row (model.abacus_equals_row). Checked
  on a random model's own completions, which are its argmax by construction."""
  cfg = DecoderConfig(name='looped' if looped else 'llama', width=32, num_heads=4, num_kv_heads=2, num_layers=2,
                      loops=3, position='rope_abacus', max_digit_pos=16)
  model = Decoder(cfg, arith_tokenizer.VOCAB_SIZE)
  tokens = np.zeros((1, 8), np.int32)
  params = model.init(jax.random.key(3), tokens, digit_pos_BxL=tokens)['params']
  problems = [Problem(7, 5, '+'), Problem(123, 45, '+'), Problem(98765, 4321, '+'), Problem(12, 34, '*')]
  answers = generation.generate(model, params, problems, 'reversed', batch_size=3, extra_tokens=3,
                                abacus_offset=offset, equals_row=equals_row)
  texts = [f'{p.a}{p.op}{p.b}=' + c for p, c in zip(problems, answers.completions)]
  tokens_BxL, length_B = arith_tokenizer.encode_padded(texts)
  prompt_B = np.array([len(f'{p.a}{p.op}{p.b}=') for p in problems])
  columns = np.arange(tokens_BxL.shape[1])
  digit_pos_BxL = arith_batches._digit_positions(tokens_BxL, prompt_B, equals_row)  # pylint: disable=protected-access
  batch = dict(tokens=tokens_BxL, digit_pos=np.where(digit_pos_BxL > 0, digit_pos_BxL + offset, 0),
               loss_mask=((columns >= prompt_B[:, None]) & (columns < length_B[:, None])).astype(np.float32))
  scores = jax.device_get(objective.token_scores(params, batch, model=model))
  assert scores['tokens'] == sum(length_B - prompt_B) > 0
  assert scores['correct'] == scores['tokens'] and scores['exact'] == len(problems)


def _first_loss(run_dir: pathlib.Path) -> float:
  rows = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  return next(row['loss'] for row in rows if 'loss' in row)


def test_internalisation_starts_from_a_cot_run_and_scores_answers_without_a_chain_of_thought(tmp_path):
  """A units-first CoT run, then a run that starts from its weights (train.init_from=the run directory) and
  removes the chain of thought one token every 2 steps; a bad train.init_from is one line before any work."""
  mul = [f'--config={SMOKE}', '--config.data.ops=*', '--config.data.format=cot_rev', '--config.data.max_digits=2',
         '--config.eval.max_digits=2', '--config.train.steps=60', '--config.train.lr=3e-3']
  ok(launch(*mul, f'--workdir={tmp_path / "cot"}'))
  cot = json.loads((tmp_path / 'cot' / 'results.json').read_text())
  assert cot['thought_tokens'] > 0 and cot['generated_tokens'] > cot['thought_tokens']
  icot = [*mul, f'--config.train.init_from={tmp_path / "cot"}', '--config.data.internalize_every=2',
          '--config.train.steps=20']
  out = ok(launch(*icot, f'--workdir={tmp_path / "icot"}'))
  assert f'train.init_from: {tmp_path / "cot"}' in out
  assert _first_loss(tmp_path / 'icot') < 0.8 * _first_loss(tmp_path / 'cot')  # It starts from the trained weights.
  config = json.loads((tmp_path / 'icot' / 'config.json').read_text())
  assert config['data']['internalize_every'] == 2 and config['train']['reset_on_removal'] is True
  # A run directory without a checkpoint, or none at all, is one line before any work.
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'settings.json').write_text('{}')
  for where, says in ((tmp_path / 'empty', 'has no checkpoint yet'), (tmp_path / 'none', 'does not exist')):
    proc = launch(*mul, f'--config.train.init_from={where}', f'--workdir={tmp_path / "other"}')
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1 and says in err[0], proc.stderr[-2000:]


def test_running_sum_probe_adds_its_weighted_mse_to_the_loss_and_leaves_the_logits_alone():
  """Bai et al.'s auxiliary loss: the probe (model.probe_outputs) regresses the running sums; the loss grows by
  exactly weight x MSE, and the logits are those of the same model without the probe."""
  problems = [Problem(37, 49, '*'), Problem(123, 45, '*'), Problem(5, 5, '+')]
  batch = {k: jax.numpy.asarray(v) for k, v in arith_batches.encode_examples(problems, 'reversed', 16,
                                                                               running_sums=True).items()}
  with_probe = Decoder(DecoderConfig(width=32, num_layers=1, num_heads=2, position='rope_abacus', probe_outputs=1),
                       arith_tokenizer.VOCAB_SIZE)
  plain = Decoder(DecoderConfig(width=32, num_layers=1, num_heads=2, position='rope_abacus'), arith_tokenizer.VOCAB_SIZE)
  params = with_probe.init(jax.random.key(0), batch['tokens'][:, :-1], digit_pos_BxL=batch['digit_pos'][:, :-1])['params']
  plain_params = plain.init(jax.random.key(0), batch['tokens'][:, :-1], digit_pos_BxL=batch['digit_pos'][:, :-1])['params']
  assert set(params) - set(plain_params) == {'probe_head'}
  rng = jax.random.key(1)
  base, metrics = objective.next_token_loss(params, batch, rng, model=with_probe)
  weighted, metrics2 = objective.next_token_loss(params, batch, rng, model=with_probe, running_sum_weight=2.0)
  assert 'running_sum_mse' not in metrics and float(metrics2['running_sum_mse']) > 0
  np.testing.assert_allclose(float(weighted), float(base) + 2.0 * float(metrics2['running_sum_mse']), rtol=1e-5)
  logits = with_probe.apply({'params': params}, batch['tokens'], digit_pos_BxL=batch['digit_pos'])[0]
  without = plain.apply({'params': {k: v for k, v in params.items() if k != 'probe_head'}}, batch['tokens'],
                        digit_pos_BxL=batch['digit_pos'])[0]
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(without))


@pytest.mark.parametrize('changes, says', [
    (dict(data=dict(format='cot_rev')), "needs data.format='reversed', not 'cot_rev'"),
    (dict(model=dict(probe_outputs=0)), 'set model.probe_outputs=1'),
    (dict(train=dict(running_sum_weight=-1.0)), 'must be a number >= 0')])
def test_running_sum_loss_fields_are_checked(changes, says):
  from configs import arith as arith_configs
  from train.tasks.arith import settings
  config = arith_configs.get_config('mul_aux_cpu')
  for section, values in changes.items():
    config[section].update(values)
  with pytest.raises(ConfigError, match=re.escape(says)):
    settings.check(config)


def test_layout_follows_the_format_and_survives_a_malformed_chain_of_thought():
  from train.tasks.arith import report
  steps = report.layout(Problem(12, 34, '*'), '<think>840+0630</think>8040<end>', 408, 'cot_rev').splitlines()
  assert 'partial product 48' in steps[1] and 'partial product 360' in steps[2] and steps[-1] == 'answer: 408 (correct)'
  # A one-step `cot` addition has the shape of a units-first sum; it is laid out as written.
  assert report.layout(Problem(0, 0, '+'), '<think>0+0+0=0</think>0<end>', 0, 'cot').splitlines()[1] == '  0+0+0=0'
  garbled = report.layout(Problem(12, 34, '*'), '<think>12=+=</think>9<end>', None, 'cot_rev')
  assert 'running sum ?' in garbled and 'malformed answer' in garbled
