"""Recurrent-depth models (MLP baseline, BERT-style encoder, TRM) and their registry."""
from typing import Any

import flax.linen as nn

from models.layers import ArchConfig
from models.layers import MODEL_NAMES
from models.recurrent import MODELS
from models.unroll import reset_carry
from models.unroll import unroll
from models.unroll import unroll_fn
from models.errors import ModelConfigError


def get_model(cfg: Any, *, vocab_size: int, num_classes: int, seq_len: int,
              task_keys: tuple[str, ...] = ()) -> nn.Module:
  """Builds the model named by `cfg.name` ('mlp' | 'bert' | 'trm') from a model config.

  Every key of `cfg` must be an ArchConfig field or one of `task_keys` (fields the task reads
  itself, such as `depth`): a misspelt key is an error, not a silent default.
  """
  name = cfg['name'] if 'name' in cfg else None
  if name not in MODELS:
    raise ModelConfigError(f'unknown model.name={name!r}; valid names: {", ".join(MODEL_NAMES)}')
  for key, value in (('vocab_size', vocab_size), ('num_classes', num_classes),
                     ('seq_len', seq_len)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'get_model: {key}={value!r} must be a positive int')
  return MODELS[name](ArchConfig.from_config(cfg, allowed_extra=task_keys), vocab_size, num_classes, seq_len)


__all__ = ['ArchConfig', 'MODEL_NAMES', 'MODELS', 'get_model', 'reset_carry', 'unroll',
           'unroll_fn']
