"""The core's ownership of the run lifecycle changed no figure (issue: the core owns a run from start to finish).

The smoke configs of Sudoku, MLM and arithmetic, run by the last release before that change and by this tree
on the same machine with the same compile settings, give bit-identical losses and metrics (every row of every
run's metrics.jsonl, every figure of its results); this tree resumes the old release's workdirs (their
settings under the old field names) and refuses other settings there, naming them.
"""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import launch_env
from tests.conftest import ok

RELEASE = '2f43d5e'  # The last commit whose tasks ran their own lifecycle.
TIMING = ('steps_per_sec', 'train_seconds')  # Wall-clock figures: the only ones allowed to differ.


@pytest.fixture(scope='module')
def release(tmp_path_factory) -> pathlib.Path:
  """The release's tree, from this checkout's history (skips where the history is not there)."""
  if shutil.which('git') is None:
    pytest.skip('git is not installed')
  probe = subprocess.run(['git', 'cat-file', '-e', f'{RELEASE}^{{commit}}'], cwd=REPO_ROOT, capture_output=True)
  if probe.returncode:
    pytest.skip(f'commit {RELEASE} is not in this checkout (a shallow clone); the comparison needs it')
  tree = tmp_path_factory.mktemp('release')
  archive = subprocess.run(['git', 'archive', RELEASE], cwd=REPO_ROOT, capture_output=True, check=True).stdout
  subprocess.run(['tar', '-x', '-C', str(tree)], input=archive, check=True)
  return tree


def _launch(tree: pathlib.Path, *args: str) -> str:
  """`python launch.py` in `tree` (its own packages come first on the path), with the suite's compile settings."""
  return ok(subprocess.run([sys.executable, 'launch.py', *args], cwd=tree, env=launch_env(), capture_output=True,
                           text=True, timeout=600))


def _rows(path: pathlib.Path) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def _shared_figures(old, new, where: str) -> None:
  """Every figure the old record has is in the new one, equal (the new record may hold more)."""
  if isinstance(old, dict):
    assert isinstance(new, dict), where
    for key, value in old.items():
      if key in TIMING or key == 'varied':
        continue
      assert key in new, f'{where}.{key} is missing'
      _shared_figures(value, new[key], f'{where}.{key}')
  elif isinstance(old, list) and old and isinstance(old[0], dict):
    assert len(old) == len(new), where
    for i, (a, b) in enumerate(zip(old, new)):
      _shared_figures(a, b, f'{where}[{i}]')
  else:
    assert old == new, f'{where}: {old!r} != {new!r}'


def _text(shared_data: pathlib.Path) -> str:
  return str(shared_data / 'text' / 'wiki.valid.tokens')


STUDIES = {
    'sudoku': lambda text: ['--config=configs/sudoku.py:smoke'],
    'arith': lambda text: ['--config=configs/arith.py:smoke'],
    'mlm': lambda text: ['--config=configs/mlm.py:smoke', f'--config.data.files={text}',
                         '--config.sweep.grid=model=bert,trm; flops_budget=2e9; seed=0'],  # looped_bert: bert's code.
}


@pytest.mark.parametrize('study', list(STUDIES))
def test_smoke_figures_are_bit_identical_and_old_workdirs_resume(study, release, shared_data, tmp_path):
  args = STUDIES[study](_text(shared_data))
  old, new = tmp_path / 'old', tmp_path / 'new'
  _launch(release, *args, f'--workdir={old}')
  _launch(REPO_ROOT, *args, f'--workdir={new}')
  logs = sorted(old.rglob('metrics.jsonl'))
  assert logs
  for log in logs:
    rows_old, rows_new = _rows(log), _rows(new / log.relative_to(old))
    assert rows_old == rows_new, f'{log.relative_to(old)}: the logged losses and metrics differ'
  records = sorted(old.rglob('result.json')) + sorted(old.rglob('results.json'))
  assert records
  for path in records:
    _shared_figures(json.loads(path.read_text()), json.loads((new / path.relative_to(old)).read_text()),
                    str(path.relative_to(old)))
  # This tree resumes the release's workdir: a finished run is taken as it stands, not refused.
  out = _launch(REPO_ROOT, *args, f'--workdir={old}')
  assert 'made with other settings' not in out
  assert ('finished earlier, skipped' in out) if study == 'mlm' else ('restored step 20 ' in out)
  if study == 'mlm':  # It evaluates them, and still refuses other settings there, under today's field names.
    out = _launch(REPO_ROOT, *args, f'--workdir={old}', '--mode=eval')
    figures = json.loads((old / 'runs' / 'bert_2e9_s0' / 'result.json').read_text())
    assert f'masked_accuracy={figures["masked_accuracy"]:.4f}' in out
    proc = subprocess.run([sys.executable, 'launch.py', *args, f'--workdir={old}', '--config.models.bert.model.width=48'],
                          cwd=REPO_ROOT, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and 'model.width: 32 -> 48' in proc.stderr
