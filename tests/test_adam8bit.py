"""8-bit Adam (train/adam8bit.py): the dynamic maps, block-wise quantisation error, a trajectory beside float32
AdamW, its state size, and a language-model run that trains and resumes with it."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train
from configs import lm as lm_configs
from train import adam8bit


def test_dynamic_maps_and_quantisation_error():
  for signed in (True, False):
    table = adam8bit.dynamic_map(signed)
    assert table.size == 256 == np.unique(table).size and 0.0 in table and table.max() == 1.0
    assert (table.min() < -0.99) if signed else table.min() == 0.0
  x = jax.random.normal(jax.random.PRNGKey(0), (300, 700)) * jnp.logspace(-4, 0, 700)  # Magnitudes over decades.
  back = adam8bit.dequantize(adam8bit.quantize(x, 2048, True), x.shape, True)
  blocks = np.abs(np.asarray(x)).reshape(-1)
  err = np.abs(np.asarray(back - x)).reshape(-1)
  absmax = np.repeat(np.max(np.pad(blocks, (0, (-blocks.size) % 2048)).reshape(-1, 2048), axis=1), 2048)[:blocks.size]
  assert np.max(err / absmax) < 0.008  # Within a block: under 1% of its largest value ...
  big = blocks > absmax * 1e-2
  assert np.median(err[big] / blocks[big]) < 0.03  # ... and a few percent of each value two decades below it.


def _regression(tx: optax.GradientTransformation, steps: int = 300) -> tuple[list[float], jax.Array]:
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  inputs, w_true = jax.random.normal(k1, (256, 64)), jax.random.normal(k2, (64, 96))
  targets = inputs @ w_true
  loss = lambda w: jnp.mean((inputs @ w - targets) ** 2)  # pylint: disable=unnecessary-lambda-assignment
  w, state, losses = jnp.zeros((64, 96)), None, []
  state = tx.init(w)

  @jax.jit
  def step(w, state):
    value, grad = jax.value_and_grad(loss)(w)
    updates, state = tx.update(grad, state, w)
    return optax.apply_updates(w, updates), state, value
  for _ in range(steps):
    w, state, value = step(w, state)
    losses.append(float(value))
  return losses, w


def test_trajectory_follows_float32_adamw_and_state_is_a_quarter():
  exact, w32 = _regression(optax.adamw(3e-2, weight_decay=1e-4))
  quantised, w8 = _regression(adam8bit.adamw_8bit(3e-2, weight_decay=1e-4, block_size=256, min_size=0))
  assert quantised[-1] < 0.01 * quantised[0] and exact[-1] < 0.01 * exact[0]  # Both solve it ...
  assert np.max(np.abs(np.asarray(w8 - w32))) < 0.05 * np.max(np.abs(np.asarray(w32)))  # ... to nearly the same w.
  params = {'w': jnp.zeros((1024, 1024)), 'scale': jnp.zeros((1024,))}
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # pylint: disable=unnecessary-lambda-assignment
  small = nbytes(adam8bit.adamw_8bit(1e-3).init(params))
  assert small < 0.27 * nbytes(optax.adamw(1e-3).init(params))  # 2 bytes a value + block scales, vs 8.


def test_a_language_model_trains_and_resumes_with_8bit_moments(tmp_path):
  config = lm_configs.get_config('smoke')
  with config.unlocked():
    config.sweep.grid = ''
    config.flops_budget = 0.0
  config.train.update(steps=8, checkpoint_every=4, optimizer='adamw_8bit')
  config.model.update(width=64)  # Kernels above 4096 values: quantised moments.
  full = tmp_path / 'full'
  (record,) = train.train_and_evaluate(config, str(full))
  rows = [json.loads(l) for l in (full / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]
  assert rows[-1]['loss'] < rows[0]['loss']
  import shutil  # pylint: disable=g-import-not-at-top
  part = tmp_path / 'part'
  shutil.copytree(full, part)
  shutil.rmtree(part / 'checkpoints' / '8')
  (again,) = train.train_and_evaluate(config, str(part))
  assert again['loss'] == record['loss']  # The quantised moments were saved and restored exactly.
  config.train.optimizer = 'adam9'
  with pytest.raises(train.USER_ERRORS, match="train.optimizer must be 'adamw' or 'adamw_8bit'"):
    train.train_and_evaluate(config, str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad' / 'settings.json').exists()  # Refused before any work.
