"""Every model by name: `build(config.model, vocab_size=..., ...)` is the one way a task makes a model.

A model module registers each name it answers to with its config class and a builder:

  @registry.register('bert', RecurrentConfig, needs=('num_classes', 'seq_len'))
  def _bert(config, dims): return BertModel(config, dims.vocab_size, dims.num_classes, dims.seq_len)

`config.model.name` picks the entry; the rest of the section must be fields of its config class, or of a config
class of the same `family` (the causal language models: one `model` section holds the fields of 'llama',
'looped', 'moe' and 'rwkv7', so a sweep's `model=` axis can name any of them; each reads its own and leaves the
others' unread: `model.dropout` set for a mixed sweep applies to the decoders, not to RWKV-7).
"""
import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn

from models.config import ModelConfig
from models.errors import ModelConfigError


@dataclasses.dataclass(frozen=True)
class Dims:
  """What the task knows and the architecture does not: token vocabulary, output classes, sequence length."""
  vocab_size: int
  num_classes: int | None = None  # None: the vocabulary (a language model).
  seq_len: int | None = None  # None: any length (models with positions computed on the fly).

  @property
  def classes(self) -> int:
    return self.vocab_size if self.num_classes is None else self.num_classes


@dataclasses.dataclass(frozen=True)
class Entry:
  config_cls: type[ModelConfig]
  build: Callable[[Any, Dims], nn.Module]
  needs: tuple[str, ...]  # Dims fields the builder needs besides vocab_size.
  family: str  # Models whose configs may share one section ('' = none).


_MODELS: dict[str, Entry] = {}


def register(name: str, config_cls: type[ModelConfig], needs: tuple[str, ...] = (), family: str = '') -> Callable:
  """Decorator: registers `build(config, dims) -> nn.Module` under `name` (the value of config.model.name)."""
  def wrap(build: Callable[[Any, Dims], nn.Module]) -> Callable[[Any, Dims], nn.Module]:
    _MODELS[name] = Entry(config_cls, build, needs, family)
    return build
  return wrap


def names() -> list[str]:
  _import_models()
  return sorted(_MODELS)


def _entry(cfg: Any) -> Entry:
  _import_models()
  name = cfg.get('name') if hasattr(cfg, 'get') else getattr(cfg, 'name', None)
  if name not in _MODELS:
    raise ModelConfigError(f'unknown model.name={name!r}; valid names: {", ".join(sorted(_MODELS))}')
  return _MODELS[name]


def config_of(cfg: Any) -> ModelConfig:
  """The checked config dataclass of a model section (ConfigDict, mapping or a config instance)."""
  if isinstance(cfg, ModelConfig):
    return cfg
  entry = _entry(cfg)
  return entry.config_cls.from_config(_own_fields(cfg, entry))


def _own_fields(cfg: Any, entry: Entry) -> Any:
  """The section less the fields that only other models of the entry's family have (a misspelt field stays, to be
  refused by from_config)."""
  if not entry.family:
    return cfg
  items = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg) if isinstance(cfg, Mapping) else vars(cfg)
  own = {f.name for f in dataclasses.fields(entry.config_cls)}
  siblings = {f.name for e in _MODELS.values() if e.family == entry.family for f in dataclasses.fields(e.config_cls)}
  return {k: v for k, v in items.items() if k in own or k not in siblings}


def build(cfg: Any, *, vocab_size: int, num_classes: int | None = None, seq_len: int | None = None) -> nn.Module:
  """The model named by `cfg.name`, built from its section with the task's dimensions."""
  entry = _entry(cfg)
  config = config_of(cfg)
  dims = Dims(vocab_size, num_classes, seq_len)
  for key in ('vocab_size',) + entry.needs:
    value = getattr(dims, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ModelConfigError(f'models.build: {key}={value!r} must be a positive int for model.name={config.name!r}')
  return entry.build(config, dims)


def _import_models() -> None:
  """The model modules register themselves on import."""
  from models import decoder, moe, recurrent, rwkv7  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
