r"""Runs a study from a config file.

  python launch.py --config=configs/sudoku.py:4x4 --workdir=runs/sudoku_4x4
  python launch.py --config=configs/sudoku.py:4x4 --workdir=runs/sudoku_4x4 --mode=eval \
      --config.data.eval_file=puzzles.txt

Any config field can be overridden: --config.model.name=trm --config.train.steps=2000.
Rerunning a command with the same --workdir resumes from its latest checkpoint.
Errors caused by input are reported in one line; --verbosity=1 shows their traceback.
"""
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
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (ends with an eval) or eval only.')
_REUSE_SCRATCH = flags.DEFINE_bool(
    'reuse_cpu_scratch', True, 'Run CPU steps inline and let glibc keep their scratch memory for the next '
    'step (train/host_memory.py): about a third faster on CPU; the process keeps its peak host memory.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _REUSE_SCRATCH.value:
    host_memory.reuse_cpu_scratch_memory()  # Before JAX creates its CPU client.
  progress.quiet_third_party_info()
  config = _CONFIG.value
  sharding.maybe_initialize_distributed(bool(config.distributed))
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(config, _WORKDIR.value)
    else:
      train.evaluate(config, _WORKDIR.value)
  except train.USER_ERRORS as e:  # Bad input: say what is wrong, without a traceback.
    if logging.level_debug():  # --verbosity=1 shows the full traceback.
      raise
    logging.error('%s: %s', type(e).__name__, e)
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
