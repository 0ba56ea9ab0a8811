"""Checks of the config fields every task shares, before any work (one line naming the key and the range)."""
import math

import ml_collections

from train import config_tree
from train.errors import ConfigError

# path -> (lowest, highest, whether the highest is allowed); None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    'train.steps': (0, None, True),
    'train.batch_size': (1, None, True),
    'train.lr': (0, None, True),
    'train.warmup_steps': (0, None, True),
    'train.warmup_fraction': (0, 1, True),
    'train.final_lr_fraction': (0, 1, True),
    'train.weight_decay': (0, None, True),
    'train.b1': (0, 1, False),
    'train.b2': (0, 1, False),
    'train.grad_clip': (0, None, True),
    'train.ema_decay': (0, 1, False),
    'train.log_every': (1, None, True),
    'train.checkpoint_every': (0, None, True),
    'train.keep_checkpoints': (1, None, True),
    'eval.batch_size': (1, None, True),
    'flops_budget': (0, None, True),
}


def check_shared_fields(config: ml_collections.ConfigDict, where: str = '') -> None:
  """Raises ConfigError for a shared field outside its range (a field the config lacks is skipped)."""
  for path, (low, high, high_ok) in _RANGES.items():
    value = config_tree.get(config, path, None)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    bad = not math.isfinite(value) or (low is not None and value < low) or (
        high is not None and (value > high or (value == high and not high_ok)))
    if bad:
      allowed = (f'>= {low}' if high is None else f'in [{low}, {high}{"]" if high_ok else ")"}')
      raise ConfigError(f'{path}={value!r}{where} must be {allowed}')
