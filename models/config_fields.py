"""A model's config dataclass built from a ConfigDict or mapping, every key and type checked."""

import dataclasses
import difflib
from typing import Any, Mapping, TypeVar

from models.errors import ModelConfigError

ConfigT = TypeVar('ConfigT')


def _field_type(field: dataclasses.Field) -> type:
  """The type a value must have: the default's, else the annotated type (str where that is not a class)."""
  if field.default is not dataclasses.MISSING:
    return type(field.default)
  return field.type if isinstance(field.type, type) else str


def from_config(cls: type[ConfigT], cfg: Any, allowed_extra: tuple[str, ...] = ()) -> ConfigT:
  """`cls` (a dataclass) from a ConfigDict, mapping or object; an `cls` instance passes through.

  A key that is neither a field nor in `allowed_extra` (keys the caller reads itself), a missing required
  field, or a value of the wrong type raises ModelConfigError naming `model.<key>`; an int is taken as a float.
  """
  if isinstance(cfg, cls):
    return cfg
  if not isinstance(cfg, Mapping):
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else vars(cfg)
  fields = dataclasses.fields(cls)
  names = [f.name for f in fields]
  unknown = sorted(set(cfg) - set(names) - set(allowed_extra))
  if unknown:
    hints = [f'model.{k}' + (f' (did you mean {close[0]!r}?)' if (close := difflib.get_close_matches(
        k, names + list(allowed_extra), 1)) else '') for k in unknown]
    raise ModelConfigError(f'unknown model field {", ".join(hints)}; allowed: {", ".join(names)}')
  kwargs = {}
  for field in fields:
    if field.name not in cfg:
      if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        raise ModelConfigError(f'model config lacks the required field {field.name!r}')
      continue
    value, kind = cfg[field.name], _field_type(field)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
      raise ModelConfigError(f'model.{field.name}={value!r} should be of type {kind.__name__}')
    kwargs[field.name] = value
  return cls(**kwargs)
