"""The project's own error types: launch.py prints these as one line (no traceback).

Anything else, a ValueError raised inside a library included, is a bug and keeps its traceback.
data/ and models/ know no trainer, so they define the errors they raise themselves
(data/errors.py, models/errors.py); USER_ERRORS gathers all of them.
"""
from data.errors import DataConfigError
from data.errors import InputError
from data.errors import MissingInputError
from models.errors import ModelConfigError
from models.errors import PretrainedError


class ConfigError(ValueError):
  """A config value or key that cannot work (names the key and what is allowed)."""


class WorkdirError(RuntimeError):
  """A workdir that cannot be used as asked: other settings, another task, held by another process."""


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored (corrupt, or from another model)."""


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


class Interrupted(RuntimeError):
  """SIGINT or SIGTERM stopped training after a checkpoint of the last finished step was saved."""


# What launch.py prints as one line: bad input (files, config values, checkpoints, workdirs) and
# runs that diverged or were interrupted.
USER_ERRORS = (ConfigError, DataConfigError, ModelConfigError, PretrainedError, InputError, MissingInputError,
               WorkdirError, CheckpointError, NonFiniteLossError, Interrupted)
