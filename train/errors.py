"""The project's own error types: launch.py prints these as one line (no traceback).

The aim is that anything else, a ValueError raised inside a library included, is a bug and keeps
its traceback. Until every input check in models/ and data/ raises one of these, launch.py also
prints ValueError and FileNotFoundError as one line (train.USER_ERRORS).
"""


class ConfigError(ValueError):
  """A config value or key that cannot work (names the key and what is allowed)."""


class InputError(ValueError):
  """A bad input file (names the file, and the line where there is one)."""


class WorkdirError(RuntimeError):
  """A workdir that cannot be used as asked: other settings, another task, held by another process."""


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored (corrupt, or from another model)."""


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


class Interrupted(RuntimeError):
  """SIGINT or SIGTERM stopped training after a checkpoint of the last finished step was saved."""
