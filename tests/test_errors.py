"""Which errors print as one line (the project's own, about input) and which keep their traceback (bugs)."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT as REPO
from tests.conftest import launch
from train import errors

# Runs launch.main with the train mode replaced by a function raising the given exception.
_RAISING_LAUNCH = '''
import sys
sys.argv = ['launch.py', '--config=configs/sudoku.py:smoke', '--workdir={workdir}']
import launch, train
from data import errors as data_errors
def fail(config, workdir):
  raise {error}
launch._RUN['train'] = fail
from absl import app
app.run(launch.main, flags_parser=launch.parse_flags)
'''


def _run_raising(tmp_path, error: str) -> subprocess.CompletedProcess:
  code = _RAISING_LAUNCH.format(workdir=tmp_path, error=error)
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_only_the_projects_own_errors_are_reported_without_a_traceback():
  assert not any(issubclass(ValueError, e) or issubclass(FileNotFoundError, e) for e in errors.USER_ERRORS)


@pytest.mark.parametrize('error, one_line', [
    ("data_errors.InputError('puzzles.txt:3: bad row')", True),
    ("ValueError('a bug inside a library')", False),
])
def test_a_library_value_error_keeps_its_traceback_and_bad_input_is_one_line(tmp_path, error, one_line):
  proc = _run_raising(tmp_path, error)
  assert proc.returncode != 0
  err = proc.stderr.strip().splitlines()
  if one_line:
    assert err == ['error: puzzles.txt:3: bad row'], proc.stderr[-2000:]
  else:
    assert 'Traceback' in proc.stderr and 'ValueError: a bug inside a library' in proc.stderr


def test_a_corpus_smaller_than_one_batch_is_refused_naming_it(tmp_path, shared_data):
  lines = [l for l in (shared_data / 'text' / 'wiki.valid.tokens').read_text('utf-8').splitlines() if l.strip()]
  tiny = tmp_path / 'tiny.txt'
  tiny.write_text('\n'.join(lines[:3]) + '\n')
  evals = tmp_path / 'eval.txt'
  evals.write_text('\n'.join(lines[3:40]) + '\n')
  proc = launch('--config=configs/mlm.py:smoke', f'--workdir={tmp_path / "w"}', f'--config.data.files={tiny}',
                f'--config.data.eval_files={evals}')
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert f'{tiny}: the training text makes' in last and 'fewer than one batch (train.batch_size=16)' in last, last
  # An eval part too short for one sequence names where it comes from.
  proc = launch('--config=configs/mlm.py:smoke', f'--workdir={tmp_path / "w2"}', f'--config.data.files={tiny}')
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode != 0 and f'the last 0.05 of the lines of {tiny} (data.eval_fraction)' in last, last


def test_a_workdir_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path):
  a_file = tmp_path / 'taken'
  a_file.write_text('x')
  for workdir, says in ((a_file, 'is a file, not a directory'), (a_file / 'sub', 'is not writable')):
    proc = launch('--config=configs/sudoku.py:smoke', f'--workdir={workdir}')
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and err == [f'error: --workdir={workdir} {says}' + (': Not a directory' if 'sub' in
                                                                                   str(workdir) else '')], err
