"""Applies the comma-separated variants of a `configs/<name>.py:<variants>` argument."""
from typing import Callable

import ml_collections

VariantFn = Callable[[ml_collections.ConfigDict], None]


def apply_variants(config: ml_collections.ConfigDict, arg: str | None, variant_fns: dict[str, VariantFn],
                   config_file: str) -> ml_collections.ConfigDict:
  """Runs variant_fns[v](config) for each v in `arg` ('default' when empty); unknown names raise."""
  for variant in (arg or 'default').split(','):
    variant = variant.strip()
    if variant not in variant_fns:
      raise ValueError(f'unknown variant {variant!r} of {config_file}; choose from {tuple(variant_fns)}')
    variant_fns[variant](config)
  return config
