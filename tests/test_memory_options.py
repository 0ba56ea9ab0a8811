"""Memory options of small-GPU training: remat of the decoder's blocks (models/remat.py), AdamW with bfloat16
moments (train/adam_lowp.py, train.moments_dtype), bfloat16 compute in training, and bench/lm_memory.py."""
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import models
from configs import common
from train import adam_lowp
from train import loop
from train import optim
from train.errors import ConfigError
from train.state import create_train_state
from train.tasks.lm import objective as lm_objective

_TINY = dict(width=32, num_layers=1, num_heads=4, num_kv_heads=2, loops=2, prelude_layers=0, coda_layers=1)
_POLICIES = ('none', 'full', 'dots', 'dots_no_batch')


@pytest.mark.parametrize('name, policies', [('llama', _POLICIES), ('looped', _POLICIES[:2])])
def test_remat_keeps_the_loss_gradients_and_parameter_tree(name, policies):
  tokens_BxW = jax.random.randint(jax.random.PRNGKey(0), (2, 9), 0, 64)
  batch = {'tokens': tokens_BxW}
  built = {p: models.build(dict(_TINY, name=name, remat=p), vocab_size=64) for p in policies}
  trees = {p: jax.tree_util.tree_flatten_with_path(jax.tree.map(jnp.shape, jax.eval_shape(
      m.init, jax.random.PRNGKey(1), tokens_BxW[:, :-1])['params']))[0] for p, m in built.items()}
  assert all(tree == trees['none'] for tree in trees.values())  # Names and shapes: checkpoints load either way.
  params = jax.jit(built['none'].init)(jax.random.PRNGKey(1), tokens_BxW[:, :-1])['params']

  @jax.jit  # One program for every policy: one compile.
  def losses_and_grads(params):
    return {p: jax.value_and_grad(functools.partial(lm_objective.next_token_loss, model=m), has_aux=True)(
        params, batch, jax.random.PRNGKey(0)) for p, m in built.items()}

  results = losses_and_grads(params)
  (loss, _), grads = results['none']
  for policy in policies[1:]:
    (loss_r, _), grads_r = results[policy]
    np.testing.assert_allclose(float(loss_r), float(loss), atol=1e-5)
    for g_r, g in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
      np.testing.assert_allclose(np.asarray(g_r), np.asarray(g), atol=1e-5)


def test_an_unknown_remat_is_one_line_naming_model_remat():
  for name in ('llama', 'bert'):
    with pytest.raises(models.ModelConfigError, match=r"model\.remat='x' is not one of \['none', 'full'") as e:
      models.config_of({'name': name, 'remat': 'x'})
    assert '\n' not in str(e.value)
  assert models.config_of(common.decoder_model()).remat == 'none'  # The config's field, and its default.


def _train(**values) -> ml_collections.ConfigDict:
  return common.train(**dict(dict(steps=100, warmup_steps=0, schedule='constant', lr=3e-2, weight_decay=1e-4,
                                   grad_clip=0.0, b2=0.999), **values))


def _regression(tx: optax.GradientTransformation, steps: int = 300) -> tuple[list[float], jax.Array]:
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  inputs, w_true = jax.random.normal(k1, (256, 64)), jax.random.normal(k2, (64, 96))
  targets = inputs @ w_true
  loss = lambda w: jnp.mean((inputs @ w - targets) ** 2)  # pylint: disable=unnecessary-lambda-assignment

  def step(carry, _):
    w, state = carry
    value, grad = jax.value_and_grad(loss)(w)
    updates, state = tx.update(grad, state, w)
    return (optax.apply_updates(w, updates), state), value

  w = jnp.zeros((64, 96))
  (w, _), losses = jax.jit(lambda w: jax.lax.scan(step, (w, tx.init(w)), length=steps))(w)
  return np.asarray(losses).tolist(), w


def test_bfloat16_moments_are_stored_so_and_track_float32_adamw():
  tx, _ = optim.make_optimizer(_train(moments_dtype='bfloat16'))
  state = tx.init({'w': jnp.zeros((8, 4)), 'b': jnp.zeros((4,))})
  (adam,) = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
  assert {x.dtype for x in jax.tree.leaves((adam.mu, adam.nu))} == {jnp.dtype(jnp.bfloat16)}
  exact, w32 = _regression(optim.make_optimizer(_train())[0])
  low, w16 = _regression(tx)
  assert low[-1] < 0.01 * low[0] and exact[-1] < 0.01 * exact[0]  # Both solve it ...
  assert np.max(np.abs(np.asarray(w16 - w32))) < 0.02 * np.max(np.abs(np.asarray(w32)))  # ... to nearly the same w.
  assert np.max(np.abs(np.array(low[:20]) - np.array(exact[:20])) / np.array(exact[:20])) < 0.02


def test_the_second_moment_decays_in_bfloat16_with_b2_near_one():
  """Rounded to nearest, 0.999 nu would round back to nu for ever; stochastic rounding keeps its mean."""
  tx = adam_lowp.scale_by_adam_lowp(b2=0.999)
  g = jnp.ones((4096,))
  _, state = tx.update(g, tx.init(g))
  state = jax.jit(lambda s: jax.lax.fori_loop(0, 1000, lambda _, s: tx.update(jnp.zeros_like(g), s)[1], s))(state)
  mean = float(jnp.mean(state.nu.astype(jnp.float32)))
  assert abs(mean - 1e-3 * 0.999 ** 1000) < 0.02 * 1e-3 * 0.999 ** 1000, mean


def test_bad_moments_dtype_and_8bit_with_bfloat16_are_refused_in_one_line():
  with pytest.raises(ConfigError, match=r"train\.moments_dtype must be one of \['float32', 'bfloat16'\], got "
                                        r"'float16'") as e:
    optim.make_optimizer(_train(moments_dtype='float16'))
  assert '\n' not in str(e.value)
  with pytest.raises(ConfigError, match=r"train\.moments_dtype='bfloat16' is for train\.optimizer='adamw'") as e:
    config = _train(moments_dtype='bfloat16')
    config.optimizer = 'adamw_8bit'
    optim.make_optimizer(config)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('name', ['llama'])  # The looped decoder's bf16 forward: tests/test_decoder.py.
def test_bfloat16_compute_trains_with_float32_params(name):
  model = models.build(dict(_TINY, name=name, dtype='bfloat16'), vocab_size=64)
  tokens_BxW = jax.random.randint(jax.random.PRNGKey(0), (4, 17), 0, 64)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), tokens_BxW[:, :-1])['params']
  tx, schedule = optim.make_optimizer(_train(lr=1e-2))
  step = jax.jit(loop.make_train_step(functools.partial(lm_objective.next_token_loss, model=model), tx, schedule,
                                      0.0))
  state, losses = create_train_state(params, tx, 0, use_ema=False), []
  for _ in range(4):
    state, metrics = step(state, {'tokens': tokens_BxW})
    losses.append(float(metrics['loss']))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_the_bench_quick_table_shows_8bit_state_under_a_third(capsys):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'bench'))
  import lm_memory  # pylint: disable=g-import-not-at-top
  rows = lm_memory.main(['--quick', '--options=baseline,adamw_8bit', '--steps=1'])
  printed = capsys.readouterr().out
  assert '| option | peak (MiB) | x | optimizer state (MiB) |' in printed and 'CPU: ' in printed
  assert '| 8-bit AdamW |' in printed and '| float32 AdamW, no remat (baseline) | ' in printed
  base, eight = rows
  assert eight.opt_state_bytes <= 0.30 * base.opt_state_bytes
  assert all(r.peak_bytes > 0 and r.step_seconds > 0 for r in rows)
