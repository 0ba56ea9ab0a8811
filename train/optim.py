"""Optimizer: AdamW with linear warmup, then cosine, linear or constant, and global-norm clipping; with LoRA
(train.lora_rank > 0) only the adapters train and only they have optimizer state (models/lora.py). AdamW's
moments are float32, bfloat16 (train.moments_dtype, train/adam_lowp.py) or a byte each ('adamw_8bit',
train/adam8bit.py)."""
from typing import Any

import jax
import ml_collections
import optax

from models import lora as lora_lib
from train import adam8bit
from train import adam_lowp
from train.errors import ConfigError


def make_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning-rate schedule: linear warmup to `lr`, then 'cosine' or 'linear' decay to lr * final_lr_fraction
  at the last step, or 'constant'."""
  warmup = max(int(train_cfg.warmup_steps), 0)
  peak = float(train_cfg.lr)
  if train_cfg.schedule == 'constant':
    after = optax.constant_schedule(peak)
  elif train_cfg.schedule == 'cosine':
    after = optax.cosine_decay_schedule(
        peak, decay_steps=max(int(train_cfg.steps) - warmup, 1),
        alpha=float(train_cfg.final_lr_fraction))
  elif train_cfg.schedule == 'linear':
    after = optax.linear_schedule(peak, peak * float(train_cfg.final_lr_fraction),
                                  max(int(train_cfg.steps) - warmup, 1))
  else:
    raise ConfigError(f"train.schedule must be 'cosine', 'linear' or 'constant', got {train_cfg.schedule!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


MOMENTS_DTYPES = ('float32', 'bfloat16')  # train.moments_dtype of 'adamw'.


def _matrices(params):
  """True at the weight matrices (and embedding tables), False at norm scales and biases."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (decoupled weight decay, on every parameter or on the matrices only) behind optional global-norm
  clipping."""
  schedule = make_schedule(train_cfg)
  decay_on = str(train_cfg.get('decay_on', 'all'))
  if decay_on not in ('all', 'matrices'):
    raise ConfigError(f"train.decay_on must be 'all' or 'matrices', got {decay_on!r}")
  kind = str(train_cfg.get('optimizer', 'adamw'))
  if kind not in ('adamw', 'adamw_8bit'):
    raise ConfigError(f"train.optimizer must be 'adamw' or 'adamw_8bit', got {kind!r}")
  moments = str(train_cfg.get('moments_dtype', 'float32'))
  if moments not in MOMENTS_DTYPES:
    raise ConfigError(f'train.moments_dtype must be one of {list(MOMENTS_DTYPES)}, got {moments!r}')
  if kind == 'adamw_8bit' and moments != 'float32':
    raise ConfigError(f"train.moments_dtype={moments!r} is for train.optimizer='adamw'; 'adamw_8bit' already "
                      'keeps its moments in a byte each (set moments_dtype to float32)')
  if kind == 'adamw_8bit':
    make = adam8bit.adamw_8bit  # Block-wise quantised moments.
  elif moments == 'bfloat16':
    make = adam_lowp.adamw_lowp  # Both moments stored in bfloat16, the update computed in float32.
  else:
    make = optax.adamw
  adamw = make(schedule, b1=float(train_cfg.b1), b2=float(train_cfg.b2),
               weight_decay=float(train_cfg.weight_decay), mask=_matrices if decay_on == 'matrices' else None)
  tx = adamw
  if float(train_cfg.grad_clip) > 0:
    tx = optax.chain(optax.clip_by_global_norm(float(train_cfg.grad_clip)), adamw)
  if lora_of(train_cfg) is not None:  # The base gets no update and keeps no state.
    tx = optax.multi_transform({'adapter': tx, 'frozen': optax.set_to_zero()}, lora_lib.labels)
  return tx, schedule


def fresh_moments(tx: optax.GradientTransformation, opt_state: Any, params: Any) -> Any:
  """`opt_state` with everything but the learning-rate schedule's step count restarted (`tx.init`): AdamW's
  moments and bias correction begin again, the schedule goes on where it was."""
  is_count = lambda x: isinstance(x, optax.ScaleByScheduleState)  # pylint: disable=unnecessary-lambda-assignment
  return jax.tree.map(lambda new, old: old if is_count(new) else new, tx.init(params), opt_state, is_leaf=is_count)


def lora_of(train_cfg: ml_collections.ConfigDict) -> lora_lib.LoRAConfig | None:
  """The run's LoRA settings (train.lora_rank, lora_alpha, lora_targets), None without adapters."""
  if not int(train_cfg.get('lora_rank', 0) or 0):
    return None
  return lora_lib.LoRAConfig.from_fields(train_cfg.lora_rank, train_cfg.get('lora_alpha', 16.0),
                                         train_cfg.get('lora_targets', ''))


def model_params(params: Any, train_cfg: ml_collections.ConfigDict) -> Any:
  """The model's parameters of a run's parameter tree (LoRA: the base with the adapters merged in)."""
  return lora_lib.view(params, lora_of(train_cfg))
