"""Every file the core and the tasks write into a workdir, written atomically by process 0.

Shards of a sweep may write the same table or figure at once: each writes a tmp file of its own
(named with its pid), then renames it over the target, so a reader sees one whole version.
"""
import json
import pathlib
from typing import Any, Callable

import jax

from data import paths


def write_atomically(path: str | pathlib.Path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Calls write(tmp) on a tmp file beside `path`, then renames it to `path` (process 0 only)."""
  if jax.process_index() != 0:
    return pathlib.Path(path)
  return paths.write_atomically(path, write)


def write_text(path: str | pathlib.Path, text: str) -> pathlib.Path:
  return write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | pathlib.Path, obj: Any) -> pathlib.Path:
  return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str | pathlib.Path) -> Any:
  return json.loads(pathlib.Path(path).read_text())
