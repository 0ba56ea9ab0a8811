"""Where the shared real-data folder lives (never copied into the repo), and reading input text files."""
import os
import pathlib

from data.errors import InputError, MissingInputError

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV_VAR = 'REASON_SHARED_DATA'


def shared_data_dir(override: str = '') -> pathlib.Path:
  """Returns the folder with real data: `override`, else $REASON_SHARED_DATA, else <repo>/../shared/data."""
  if override:
    return pathlib.Path(override).expanduser()
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  return _REPO_ROOT.parent / 'shared' / 'data'


def read_text(path: str | os.PathLike, what: str) -> str:
  """The whole of a UTF-8 text file; errors name the file (and line) and say what is wrong.

  `what` says what the file is for in messages ('puzzle file', 'text file (data.files)').
  """
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    raise MissingInputError(f'{what} {path} is a directory, not a file')
  if not path.is_file():
    raise MissingInputError(f'{what} {path} does not exist')
  raw = path.read_bytes()
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    line = raw.count(b'\n', 0, e.start) + 1
    column = e.start - (raw.rfind(b'\n', 0, e.start) + 1) + 1
    raise InputError(f'{path}:{line}: {what} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); '
                     'save it as UTF-8') from None
