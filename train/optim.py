"""Optimizer: AdamW with linear warmup, then cosine or constant, and global-norm clipping."""
import ml_collections
import optax

from train.errors import ConfigError


def make_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning-rate schedule: linear warmup to `lr`, then 'cosine' decay or 'constant'."""
  warmup = max(int(train_cfg.warmup_steps), 0)
  peak = float(train_cfg.lr)
  if train_cfg.schedule == 'constant':
    after = optax.constant_schedule(peak)
  elif train_cfg.schedule == 'cosine':
    after = optax.cosine_decay_schedule(
        peak, decay_steps=max(int(train_cfg.steps) - warmup, 1),
        alpha=float(train_cfg.final_lr_fraction))
  else:
    raise ConfigError(f"train.schedule must be 'cosine' or 'constant', got {train_cfg.schedule!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (decoupled weight decay) behind optional global-norm clipping."""
  schedule = make_schedule(train_cfg)
  adamw = optax.adamw(schedule, b1=float(train_cfg.b1), b2=float(train_cfg.b2),
                      weight_decay=float(train_cfg.weight_decay))
  if float(train_cfg.grad_clip) > 0:
    return optax.chain(optax.clip_by_global_norm(float(train_cfg.grad_clip)), adamw), schedule
  return adamw, schedule
