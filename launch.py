r"""Runs a study from a config file.

  python launch.py --config=configs/sudoku.py:4x4 --workdir=runs/sudoku_4x4
  python launch.py --config=configs/sudoku.py:4x4 --workdir=runs/sudoku_4x4 --mode=eval \
      --config.data.eval_file=puzzles.txt
  python launch.py --config=configs/mlm.py:quick --workdir=W --config.sweep.shard=0/2   # and 1/2
  python launch.py --config=configs/mlm.py:quick --workdir=W --mode=report

Any config field can be overridden: --config.model.name=trm --config.train.steps=2000.
Rerunning a command with the same --workdir resumes from its latest checkpoint.
Errors caused by input are reported in one line; --verbosity=1 shows their traceback.
"""
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import train
from train import host_memory
from train import progress
from train import sharding

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (path[:variant]).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, plots and tables.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'report', 'interactive', 'generate', 'export'],
                          'train (each run ends with an eval), eval only, report (collect a sweep), interactive '
                          '(type problems or prompts to a trained run), generate (write from config.generate) or '
                          'export (the model as an HF directory); the last three for tasks that have them.')
_REUSE_SCRATCH = flags.DEFINE_bool(
    'reuse_cpu_scratch', True, 'Run CPU steps inline and let glibc keep their scratch memory for the next '
    'step (train/host_memory.py): about a third faster on CPU; the process keeps its peak host memory.')
flags.mark_flags_as_required(['config', 'workdir'])
_RUN = {'train': train.train_and_evaluate, 'eval': train.evaluate, 'report': train.report,
        'interactive': train.interactive, 'generate': train.generate, 'export': train.export}


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config (unknown key or variant, wrong type) as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if 'Traceback' in str(e):  # The config file raised: its own message is the last line.
      _fail(f'{argv_flag(argv, "--config=")}: {lines[-1]}')
    _fail(' '.join(lines))
  except (AttributeError, KeyError, ValueError, TypeError) as e:  # An override of a field that is not there.
    if '--verbosity=1' in argv or '-v=1' in argv:
      raise
    text = str(e)
    key = re.search(r"'(\w+)", text)
    hint = re.search(r'Did you mean "([\w.]+)"', text)
    arg = _override_naming(argv, key.group(1)) if key else argv_flag(argv, '--config.')
    _fail(f'{arg}: no such config field' + (f' {key.group(1)!r}' if key else '')
          + (f' (did you mean {hint.group(1)!r}?)' if hint else '') + '; --verbosity=1 shows the traceback')
  return []


def _override_naming(argv: list[str], key: str) -> str:
  """The --config.<path> override whose path holds `key` deepest (the shallower ones name sections that exist)."""
  def depth(arg: str) -> int:
    parts = arg.split('=', 1)[0].split('.')[1:]
    return parts.index(key) if key in parts else -1
  candidates = [a for a in argv if a.startswith('--config.') and depth(a) >= 0]
  return max(candidates, key=depth) if candidates else argv_flag(argv, '--config.')


def argv_flag(argv: list[str], prefix: str, containing: str = '') -> str:
  """The first argument starting with `prefix` (and containing `containing`), for error lines."""
  return next((a for a in argv if a.startswith(prefix) and containing in a), prefix.rstrip('=.'))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _REUSE_SCRATCH.value:
    host_memory.reuse_cpu_scratch_memory()  # Before JAX creates its CPU client.
  progress.quiet_third_party_info()
  config = _CONFIG.value
  sharding.maybe_initialize_distributed(bool(config.distributed))
  try:
    _RUN[_MODE.value](config, _WORKDIR.value)
  except train.USER_ERRORS as e:  # Bad input: say what is wrong, without a traceback.
    if logging.level_debug():  # --verbosity=1 shows the full traceback.
      raise
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
