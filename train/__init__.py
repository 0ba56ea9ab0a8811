"""Training, evaluation and reports for every task; launch.py calls these.

The core (this package) knows no task: `config.task` names a package of train/tasks/, which
registers its Task (train/task.py). Every config is run by the sweep runner (train/sweep.py): one
run in the workdir, or one run per point of `config.sweep`, each from start to finish by train/run.py.
"""
import ml_collections

from train import sweep
from train.task import get_task
from train.errors import USER_ERRORS  # pylint: disable=unused-import (launch.py reads train.USER_ERRORS)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains every run of the config (resuming from what workdir holds), evaluating each."""
  return sweep.run(config, workdir, get_task(config.task))


def evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Evaluates the trained runs in workdir (--mode=eval)."""
  return sweep.evaluate(config, workdir, get_task(config.task))


def report(config: ml_collections.ConfigDict, workdir: str):
  """Collects every finished run of the sweep in workdir into its tables and plots (--mode=report)."""
  return sweep.report(config, workdir, get_task(config.task))


def interactive(config: ml_collections.ConfigDict, workdir: str):
  """Reads problems or prompts from standard input and answers each with the trained run in workdir
  (--mode=interactive)."""
  return sweep.on_checkpoint('interactive', config, workdir, get_task(config.task))


def generate(config: ml_collections.ConfigDict, workdir: str):
  """Writes what the trained run in workdir makes of config.generate (--mode=generate)."""
  return sweep.on_checkpoint('generate', config, workdir, get_task(config.task))


def export(config: ml_collections.ConfigDict, workdir: str):
  """Writes the run in workdir in a format other tools read (--mode=export; the LM task: an HF directory)."""
  return sweep.on_checkpoint('export', config, workdir, get_task(config.task))
