"""Training and evaluation entry points; launch.py calls these."""
import ml_collections

TASKS = ('sudoku', 'mlm')

from train.checkpoint import CheckpointError

# Errors caused by input (files, config values, checkpoints, diverging runs) that launch.py reports
# in one line, without a traceback. SudokuFormatError is a ValueError, NonFiniteLossError a FloatingPointError.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, CheckpointError)


def _runner(config: ml_collections.ConfigDict):
  if config.task == 'sudoku':
    from train import sudoku_run  # pylint: disable=g-import-not-at-top
    return sudoku_run
  if config.task == 'mlm':
    from train import mlm_run  # pylint: disable=g-import-not-at-top
    return mlm_run
  raise ValueError(f'config.task={config.task!r} is not one of {TASKS}')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains (resuming from workdir when it holds a checkpoint), then evaluates."""
  return _runner(config).train_and_evaluate(config, workdir)


def evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Evaluates the trained run in workdir (--mode=eval)."""
  return _runner(config).evaluate(config, workdir)
