"""Where the shared real-data folder lives (never copied into the repo); reading input text files; atomic writes."""
import os
import pathlib
from typing import Callable

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


SHARED = '{shared}'  # A path starting with this names a file of the shared data folder (configs say '{shared}/text/x').


CACHE = '{cache}'  # A path starting with this names a file fetched into the cache (data/fetch.py).


def cache_dir() -> pathlib.Path:
  """Where fetched files (pretrained checkpoints) go: $REASON_CACHE, else ~/.cache/reason-small."""
  return pathlib.Path(os.environ.get('REASON_CACHE') or pathlib.Path.home() / '.cache' / 'reason-small').expanduser()


def expand(path: str) -> str:
  """`path` with a leading '{shared}' (the shared data folder) or '{cache}' (cache_dir) replaced."""
  for mark, folder in ((SHARED, shared_data_dir), (CACHE, cache_dir)):
    if path == mark or path.startswith(mark + '/'):
      return str(folder()) + path[len(mark):]
  return path


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


def write_atomically(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Calls write(tmp) on a tmp file of this process beside `path`, then renames it to `path`: a reader (or
  another process writing the same file) sees one whole version."""
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  write(tmp)
  tmp.replace(path)
  return path
