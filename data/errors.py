"""Errors that data/ raises for bad input; launch.py prints them as one line (no traceback)."""


class InputError(ValueError):
  """A bad input file or text: names the file, and the line where there is one, and what to do."""


class MissingInputError(InputError, FileNotFoundError):
  """An input file or directory that is not there (or is a directory where a file is needed)."""


class DataConfigError(ValueError):
  """A data config value that cannot work: names the key (`data.<field>`) and what is allowed."""
