"""Shared pytest fixtures."""
import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

from data.paths import shared_data_dir  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """The ../shared/data folder; skips the test with a reason when it is absent."""
  path = shared_data_dir()
  if not path.is_dir():
    pytest.skip(f'real data folder {path} is absent (set REASON_SHARED_DATA to use another)')
  return path
