"""Where the shared real-data folder lives (never copied into the repo)."""
import os
import pathlib

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV_VAR = 'REASON_SHARED_DATA'


def shared_data_dir(override: str = '') -> pathlib.Path:
  """Returns the folder with real data: `override`, else $REASON_SHARED_DATA, else <repo>/../shared/data."""
  if override:
    return pathlib.Path(override).expanduser()
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  return _REPO_ROOT.parent / 'shared' / 'data'
