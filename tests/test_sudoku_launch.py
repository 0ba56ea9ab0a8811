"""End to end through launch.py, as a user runs it: train, resume, eval, overrides, kill -9, 8 devices."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT as REPO
from tests.conftest import launch
from tests.conftest import launch_env
from tests.conftest import ok

SMOKE = 'configs/sudoku.py:smoke'


def _final_params(workdir: pathlib.Path) -> list[np.ndarray]:
  """The params of the newest checkpoint, read back with orbax."""
  import orbax.checkpoint as ocp
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(workdir / 'checkpoints' / str(steps[-1]) / 'state')
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree['params'])]


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory) -> tuple[pathlib.Path, str]:
  workdir = tmp_path_factory.mktemp('smoke')
  out = ok(launch(f'--config={SMOKE}', f'--workdir={workdir}'))
  return workdir, out


def test_smoke_train_writes_everything(smoke_run):
  workdir, out = smoke_run
  assert (workdir / 'depth_vs_accuracy.png').stat().st_size > 1000
  assert any(p.name.isdigit() for p in (workdir / 'checkpoints').iterdir())
  results = json.loads((workdir / 'results.json').read_text())
  test = results['sets']['test']
  assert len(test['exact']) == results['max_eval_depth'] == 2 * results['trained_depth']
  assert '| set |' in (workdir / 'results.md').read_text()
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert {r['kind'] for r in rows} == {'train', 'val'}
  assert 'steps/s' in out and 'ETA' in out
  assert 'exact_accuracy=' in out


def test_rerun_resumes_from_checkpoint(smoke_run):
  workdir, _ = smoke_run
  out = ok(launch(f'--config={SMOKE}', f'--workdir={workdir}'))
  assert 'restored step 20' in out


def test_eval_mode_on_puzzle_file_without_solutions(smoke_run, tmp_path):
  workdir, _ = smoke_run
  puzzles = tmp_path / 'mine.txt'
  # Two 4x4 puzzles, one per line, '.' and '0' blanks, no solutions: our solver completes them.
  puzzles.write_text('...3.32..4....1.\n2000000030010432\n')
  proc = launch(f'--config={SMOKE}', f'--workdir={workdir}', '--mode=eval', f'--config.data.eval_file={puzzles}')
  ok(proc)
  last = proc.stdout.strip().splitlines()[-1]  # The line scripts read: stdout's last.
  assert last.startswith('exact_accuracy=') and ' depth=' in last, last
  saved = json.loads((workdir / 'eval_mine.txt.json').read_text())
  assert saved['n'] == 2 and len(saved['exact']) == 2 * saved['trained_depth']


def test_eval_mode_names_bad_line(smoke_run, tmp_path):
  workdir, _ = smoke_run
  bad = tmp_path / 'bad.txt'
  bad.write_text('...3.32..4....1.\n...3.32..4....1\n')
  proc = launch(f'--config={SMOKE}', f'--workdir={workdir}', '--mode=eval', f'--config.data.eval_file={bad}')
  assert proc.returncode != 0
  assert 'bad.txt:2' in proc.stderr and 'Traceback' not in proc.stderr


def _one_line_error(proc) -> str:
  assert proc.returncode != 0
  err = proc.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), proc.stderr[-2000:]
  return err[0]


def test_bad_eval_files_are_one_line_naming_file_and_line(smoke_run, tmp_path):
  """A directory, a missing file and a non-UTF-8 file: one line each, naming them, no traceback."""
  workdir, _ = smoke_run
  latin1 = tmp_path / 'latin1.txt'
  latin1.write_bytes(b'...3.32..4....1.\n...3.32..4..\xe9.1.\n')
  for path, says in ((tmp_path, f'{tmp_path} is a directory, not a file'),
                     (tmp_path / 'nope.txt', 'nope.txt does not exist'),
                     (latin1, f'{latin1}:2: puzzle file is not UTF-8 (byte 0xe9 at column 13)')):
    err = _one_line_error(launch(f'--config={SMOKE}', f'--workdir={workdir}', '--mode=eval',
                                 f'--config.data.eval_file={path}'))
    assert says in err, err


@pytest.mark.parametrize('override, says', [
    ('--config.train.steps=-5', 'train.steps=-5 must be >= 0'),
    ('--config.train.batch_size=0', 'train.batch_size=0 must be >= 1'),
    ('--config.train.lr=-1', 'train.lr=-1.0 must be >= 0'),
    ('--config.data.size=5', 'data.size=5 must be 4 or 9'),
])
def test_values_that_cannot_work_are_refused_before_any_work(tmp_path, override, says):
  err = _one_line_error(launch(f'--config={SMOKE}', f'--workdir={tmp_path}', override))
  assert says in err, err
  assert not (tmp_path / 'checkpoints').exists() and not (tmp_path / 'results.json').exists()


def test_wrong_config_key_or_type_exits_nonzero_naming_it(tmp_path):
  proc = launch(f'--config={SMOKE}', f'--workdir={tmp_path}', '--config.model.widht=3')
  assert proc.returncode != 0 and 'widht' in proc.stderr
  proc = launch(f'--config={SMOKE}', f'--workdir={tmp_path}', '--config.train.steps=many')
  assert proc.returncode != 0 and 'steps' in proc.stderr


def test_kill_9_then_rerun_gives_bit_identical_params(tmp_path):
  """SIGKILL mid-run, rerun the same command: final params equal an uninterrupted run's."""
  args = [f'--config={SMOKE}', '--config.train.steps=40', '--config.train.checkpoint_every=5',
          '--config.evals.val.every=0']
  straight = tmp_path / 'straight'
  ok(launch(*args, f'--workdir={straight}'))

  killed = tmp_path / 'killed'
  env = launch_env()
  proc = subprocess.Popen([sys.executable, 'launch.py', *args, f'--workdir={killed}'], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  ckpt_dir = killed / 'checkpoints'
  while time.time() < deadline:
    if ckpt_dir.is_dir() and any(p.name.isdigit() and int(p.name) >= 10 for p in ckpt_dir.iterdir()):
      break
    if proc.poll() is not None:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  out = ok(launch(*args, f'--workdir={killed}'))
  assert 'restored step' in out, 'the rerun did not resume'
  for a, b in zip(_final_params(straight), _final_params(killed)):
    np.testing.assert_array_equal(a, b)


def test_eight_simulated_devices_match_one(tmp_path):
  """The same run on 8 CPU devices (batch sharded on 'data') gives the 1-device loss curve."""
  args = [f'--config={SMOKE}', '--config.train.log_every=1', '--config.evals.val.every=0']
  ok(launch(*args, f'--workdir={tmp_path / "one"}'))
  ok(launch(*args, f'--workdir={tmp_path / "eight"}',
              env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}))

  def losses(d):
    rows = [json.loads(l) for l in (d / 'metrics.jsonl').read_text().splitlines()]
    return np.array([r['loss'] for r in rows if r['kind'] == 'train'])

  one, eight = losses(tmp_path / 'one'), losses(tmp_path / 'eight')
  assert len(one) == len(eight) == 20
  np.testing.assert_allclose(eight, one, rtol=2e-4, atol=1e-5)


def test_compare_trains_three_models_into_one_plot(tmp_path):
  out = ok(launch('--config=configs/sudoku.py:smoke,compare', f'--workdir={tmp_path}',
                    '--config.train.steps=6', '--config.evals.val.every=0'))
  results = json.loads((tmp_path / 'results.json').read_text())
  assert sorted(results) == ['bert', 'mlp', 'trm']
  for name in ('mlp', 'bert', 'trm'):
    assert (tmp_path / 'runs' / name / 'depth_vs_accuracy.png').is_file()
    assert any(p.name.isdigit() for p in (tmp_path / 'runs' / name / 'checkpoints').iterdir())
  assert (tmp_path / 'depth_vs_accuracy.png').stat().st_size > 1000
  table = (tmp_path / 'results.md').read_text()
  assert all(f'| {name} |' in table for name in ('mlp', 'bert', 'trm'))
  assert 'exact_accuracy=' in out


def test_act_training_resumes_and_evaluates(tmp_path):
  """TRM-style training keeps puzzles in flight in the train state; a rerun resumes it, eval restores it."""
  args = ['--config=configs/sudoku.py:smoke', '--config.model.name=trm', '--config.train.act=True',
          '--config.train.halt_loss_weight=0.5', '--config.train.steps=12', '--config.evals.val.every=0',
          '--config.train.checkpoint_every=6']
  out = ok(launch(*args, f'--workdir={tmp_path}'))
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]
  assert all('steps_at_halt' in r and 'halt_loss' in r for r in rows)
  assert 'exact_accuracy=' in out
  out = ok(launch(*args[:-3], '--config.train.steps=18', f'--workdir={tmp_path}'))
  assert 'restored step 12' in out
  puzzles = tmp_path / 'p.txt'
  puzzles.write_text('...3.32..4....1.\n')
  proc = launch(*args, f'--workdir={tmp_path}', '--mode=eval', f'--config.data.eval_file={puzzles}')
  ok(proc)
  assert proc.stdout.strip().splitlines()[-1].startswith('exact_accuracy=')


@pytest.mark.parametrize('config', ['configs/sudoku.py:smoke', 'configs/mlm.py:smoke'])
def test_misspelt_model_field_exits_nonzero_naming_it(tmp_path, config):
  proc = launch(f'--config={config}', f'--workdir={tmp_path}', '--config.model.hiddn=8')
  assert proc.returncode != 0
  err = proc.stderr.strip().splitlines()
  assert len(err) == 1 and '--config.model.hiddn=8' in err[0], proc.stderr[-2000:]
  assert not any(tmp_path.iterdir())  # Refused before any work.


def test_rerun_with_other_settings_or_task_is_refused_before_any_work(smoke_run, tmp_path):
  workdir, _ = smoke_run
  before = sorted(p.name for p in workdir.iterdir())
  proc = launch(f'--config={SMOKE}', f'--workdir={workdir}', '--config.train.lr=0.05', '--config.data.seed=7')
  assert proc.returncode != 0
  assert 'data.seed: 0 -> 7' in proc.stderr and 'train.lr: 0.001 -> 0.05' in proc.stderr, proc.stderr[-2000:]
  proc = launch('--config=configs/mlm.py:smoke', f'--workdir={workdir}')
  assert proc.returncode != 0 and "belongs to task 'sudoku'" in proc.stderr, proc.stderr[-2000:]
  assert sorted(p.name for p in workdir.iterdir()) == before


def test_sigint_mid_run_saves_the_last_step_and_a_rerun_matches_an_uninterrupted_run(tmp_path):
  """Ctrl-C at a random moment of training: a checkpoint of the last finished step, exit != 0, and the
  rerun ends with the uninterrupted run's params, bit for bit."""
  args = [f'--config={SMOKE}', '--config.train.steps=200', '--config.train.checkpoint_every=10000',
          '--config.evals.val.every=0', '--config.train.log_every=1']
  ok(launch(*args, f'--workdir={tmp_path / "full"}'))
  env = launch_env()
  workdir = tmp_path / 'cut'
  rng = np.random.default_rng(0)
  for attempt in range(2):
    # The loop installs its own SIGINT/SIGTERM handlers, also where the parent ignores SIGINT.
    proc = subprocess.Popen([sys.executable, 'launch.py', *args, f'--workdir={workdir}'], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    metrics = workdir / 'metrics.jsonl'
    start_rows = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < start_rows + 5):
      time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be interrupted'
    time.sleep(float(rng.uniform(0.0, 0.3)))
    proc.send_signal(signal.SIGINT if attempt == 0 else signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert 'saved step' in err and 'rerun the same command to resume' in err, err[-2000:]
  out = ok(launch(*args, f'--workdir={workdir}'))
  assert 'restored step' in out
  for a, b in zip(_final_params(tmp_path / 'full'), _final_params(workdir)):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(l)['step'] for l in (workdir / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]
  assert steps == list(range(1, 201))  # Each step once, after two interruptions.
