"""Dotted paths into a config ('train.lr'): read, write, flatten, and merge a partial config into a config."""
from typing import Any

import ml_collections

_MISSING = object()


def get(config: Any, path: str, default: Any = _MISSING) -> Any:
  """The value at `path` ('a.b.c'); `default` where a part is missing (KeyError naming the path without one)."""
  node = config
  for part in path.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      if default is _MISSING:
        raise KeyError(path)
      return default
    node = node[part]
  return node


def set_value(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  """Sets the field at `path` (its parents must exist; the config must be unlocked for a new field)."""
  *parents, leaf = path.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1} (ConfigDicts and dicts; an empty section stays as {})."""
  if isinstance(tree, ml_collections.ConfigDict):
    tree = tree.to_dict()
  if isinstance(tree, dict) and tree:
    out = {}
    for k, v in tree.items():
      out.update(flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def merge(config: ml_collections.ConfigDict, partial: Any, where: str) -> None:
  """Sets every field `partial` holds (a nested dict or ConfigDict) in `config`, which must have each one.

  A field the config lacks raises KeyError naming it as `where`.<path> (a misspelt field of a named point).
  """
  absent = object()
  for path, value in flatten(partial).items():
    if get(config, path, absent) is absent:
      raise KeyError(f'{where}.{path}')
    set_value(config, path, value)
