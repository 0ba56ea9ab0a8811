"""Tests of models/: shapes at every depth, gradient stopping, dtypes, overfitting, FLOPs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import models
from models import flops
from tests.conftest import fast_jit

SEQ_LEN, VOCAB, CLASSES = 16, 5, 4  # 4x4 Sudoku: tokens 0 (blank) .. 4, digits 1..4.
NAMES = ('mlp', 'bert', 'trm')


def tiny_cfg(name: str, **overrides) -> ml_collections.ConfigDict:
  """A tiny model config with every field the lead's configs write."""
  trm = name == 'trm'
  cfg = dict(name=name, width=32, num_layers=1, num_heads=4, mlp_ratio=4.0,
             mlp_act='swiglu' if trm else 'gelu', mixer='mlp' if trm else 'attention',
             norm='rmsnorm' if trm else 'layernorm', post_norm=trm, use_bias=not trm,
             inner_steps=1, cycles=2, depth=2, dtype='float32', tie_embeddings=False,
             mlp_state_dim=64)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def build(cfg, batch=3, seed=0):
  model = models.build(cfg, vocab_size=VOCAB, num_classes=CLASSES, seq_len=SEQ_LEN)
  tokens_BxL = np.random.default_rng(seed).integers(0, VOCAB, (batch, SEQ_LEN), np.int32)
  variables = fast_jit(model.init)(jax.random.key(seed), tokens_BxL)
  return model, variables, tokens_BxL


def relative_diff(a, b) -> float:
  """max |a - b| over all leaves, relative to max |b|."""
  a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
  scale = max(float(np.abs(y).max()) for y in b)
  return diff / max(scale, 1e-30)


def jit_unroll(model, depth, **options):
  return fast_jit(models.unroll_fn(model, depth, **options))


@pytest.mark.parametrize('name', NAMES)
def test_logits_at_every_depth_from_same_params(name):
  model, variables, tokens_BxL = build(tiny_cfg(name))
  _, longest = jit_unroll(model, 5)(variables, tokens_BxL)
  carry1, first = jit_unroll(model, 1)(variables, tokens_BxL)
  _, rest = jit_unroll(model, 4)(variables, tokens_BxL, carry=carry1)
  for depth, out in ((5, longest), (1, first), (4, rest)):
    assert out['logits'].shape == (depth, 3, SEQ_LEN, CLASSES)
    assert out['halt_logit'].shape == (depth, 3)
    assert out['logits'].dtype == jnp.float32 and out['halt_logit'].dtype == jnp.float32
    assert np.isfinite(out['logits']).all()
  assert jax.tree.leaves(carry1)[0].shape[0] == 3
  # A shallower unroll is the start of a deeper one; continuing from its carry is the rest.
  np.testing.assert_allclose(first['logits'], longest['logits'][:1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(rest['logits'], longest['logits'][1:], rtol=1e-4, atol=1e-5)
  # Later steps change the prediction (the recurrence does something).
  assert np.abs(longest['logits'][0] - longest['logits'][-1]).max() > 1e-6


def test_readout_after_last_step_only():
  model, variables, tokens_BxL = build(tiny_cfg('mlp'))
  _, full = jit_unroll(model, 3)(variables, tokens_BxL)
  _, last = jit_unroll(model, 3, every_step=False)(variables, tokens_BxL)
  assert last['logits'].shape == (1, 3, SEQ_LEN, CLASSES)
  np.testing.assert_allclose(last['logits'][0], full['logits'][-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['mlp', 'bert'])
def test_detach_makes_each_step_loss_train_only_its_step(name):
  # (TRM with T >= 2 never passes gradient into its carry; see the cycle test.)
  model, variables, tokens_BxL = build(tiny_cfg(name))

  def last_step_loss(params, detach, carry=None, depth=2):
    _, out = models.unroll(model, {'params': params}, tokens_BxL, depth, detach=detach,
                           carry=carry)
    return jnp.mean(out['logits'][-1] ** 2)

  grad_fn = fast_jit(jax.grad(last_step_loss), static_argnums=(1, 3))
  grad_detached = grad_fn(variables['params'], True)
  carry1, _ = jit_unroll(model, 1)(variables, tokens_BxL)  # A constant carry.
  grad_reference = grad_fn(variables['params'], False, carry1, 1)
  assert relative_diff(grad_detached, grad_reference) < 1e-4
  grad_attached = grad_fn(variables['params'], False)
  assert relative_diff(grad_detached, grad_attached) > 1e-2


def test_trm_only_last_cycle_is_differentiated():
  cfg = tiny_cfg('trm', cycles=3, inner_steps=1)
  model, variables, tokens_BxL = build(cfg)
  cls = type(model)
  one_cycle = models.build(tiny_cfg('trm', cycles=1, inner_steps=1), vocab_size=VOCAB,
                               num_classes=CLASSES, seq_len=SEQ_LEN)
  two_cycles = models.build(tiny_cfg('trm', cycles=2, inner_steps=1), vocab_size=VOCAB,
                                num_classes=CLASSES, seq_len=SEQ_LEN)

  def loss_of(params, steps):
    variables = {'params': params}
    inputs = one_cycle.apply(variables, tokens_BxL, method=cls.encode)
    carry = one_cycle.apply(variables, inputs, method=cls.init_carry)
    for stepper, constant in steps:
      carry = stepper.apply(variables, carry, inputs, method=cls.step)
      carry = jax.lax.stop_gradient(carry) if constant else carry
    logits = one_cycle.apply(variables, carry, method=cls.readout)['logits']
    return jnp.mean(logits ** 2)

  params = variables['params']
  grad_of = lambda steps: fast_jit(jax.value_and_grad(lambda p: loss_of(p, steps)))(params)
  value, grad = grad_of([(model, False)])
  # Same computation with the first two cycles made constants by hand.
  ref_value, ref_grad = grad_of([(two_cycles, True), (one_cycle, False)])
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert relative_diff(grad, ref_grad) < 1e-4
  # Backpropagating through all three cycles gives a different gradient.
  _, full_grad = grad_of([(one_cycle, False)] * 3)
  assert relative_diff(grad, full_grad) > 1e-2
  # Hence the carry entering a step gets no gradient at all.
  inputs = model.apply(variables, tokens_BxL, method=cls.encode)
  carry = model.apply(variables, inputs, method=cls.init_carry)
  step_loss = lambda c: jnp.mean(model.apply(variables, c, inputs, method=cls.step)['y'] ** 2)
  carry_grad = fast_jit(jax.grad(step_loss))(carry)
  assert all(not np.any(g) for g in jax.tree.leaves(carry_grad))


def test_trm_grad_cycles_backpropagates_through_the_last_k_cycles():
  """grad_cycles=k differentiates the last k cycles: k = cycles is full backprop (the carry entering the step
  gets gradients), k = 2 of 3 equals one constant cycle followed by two differentiated ones."""
  model, variables, tokens_BxL = build(tiny_cfg('trm', cycles=3, inner_steps=1, grad_cycles=3))
  cls = type(model)
  one_cycle = models.build(tiny_cfg('trm', cycles=1, inner_steps=1), vocab_size=VOCAB, num_classes=CLASSES,
                        seq_len=SEQ_LEN)
  last_two = models.build(tiny_cfg('trm', cycles=3, inner_steps=1, grad_cycles=2), vocab_size=VOCAB,
                       num_classes=CLASSES, seq_len=SEQ_LEN)
  params = variables['params']
  inputs = model.apply(variables, tokens_BxL, method=cls.encode)
  carry = model.apply(variables, inputs, method=cls.init_carry)

  def loss_of(p, stepper, chain=None):
    v = {'params': p}
    c = carry
    if chain is None:
      c = stepper.apply(v, c, inputs, method=cls.step)
    else:
      for constant in chain:
        c = one_cycle.apply(v, c, inputs, method=cls.step)
        c = jax.lax.stop_gradient(c) if constant else c
    return jnp.mean(one_cycle.apply(v, c, method=cls.readout)['logits'] ** 2)

  grad = lambda *a: fast_jit(jax.grad(lambda p: loss_of(p, *a)))(params)
  assert relative_diff(grad(model), grad(None, [False, False, False])) < 1e-4
  assert relative_diff(grad(last_two), grad(None, [True, False, False])) < 1e-4
  assert relative_diff(grad(last_two), grad(model)) > 1e-2
  step_loss = lambda c: jnp.mean(model.apply(variables, c, inputs, method=cls.step)['y'] ** 2)
  assert any(np.any(g) for g in jax.tree.leaves(fast_jit(jax.grad(step_loss))(carry)))
  with pytest.raises(models.ModelConfigError, match='grad_cycles=4 must be in'):
    build(tiny_cfg('trm', cycles=3, grad_cycles=4))


def test_trm_recursion_options_change_what_they_name():
  """init_state='input' starts y at the input embedding and z at 0; inject='zy' adds x to the y update;
  embed_scale=False leaves out the sqrt(D) factor; the sown intermediates are every application's output."""
  base, variables, tokens_BxL = build(tiny_cfg('trm', inner_steps=2, cycles=2))
  cls = type(base)
  inputs = base.apply(variables, tokens_BxL, method=cls.encode)
  from_input = models.build(tiny_cfg('trm', inner_steps=2, cycles=2, init_state='input'), vocab_size=VOCAB,
                         num_classes=CLASSES, seq_len=SEQ_LEN)
  carry = from_input.apply(variables, inputs, method=cls.init_carry)
  np.testing.assert_array_equal(carry['y'], inputs['x'])
  assert not np.any(carry['z'])
  unscaled = models.build(tiny_cfg('trm', embed_scale=False), vocab_size=VOCAB, num_classes=CLASSES, seq_len=SEQ_LEN)
  x_unscaled = unscaled.apply(variables, tokens_BxL, method=cls.encode)['x']
  np.testing.assert_allclose(inputs['x'], x_unscaled * np.sqrt(32), rtol=1e-5)
  carry = base.apply(variables, inputs, method=cls.init_carry)
  out, state = base.apply(variables, carry, inputs, method=cls.step, mutable=['intermediates'])
  sown = state['intermediates']
  assert len(sown['z']) == 4 and len(sown['y']) == 2  # n x T latent updates, T answer updates.
  np.testing.assert_array_equal(sown['y'][-1], out['y'])
  np.testing.assert_array_equal(sown['z'][-1], out['z'])
  inject_zy = models.build(tiny_cfg('trm', inner_steps=2, cycles=2, inject='zy'), vocab_size=VOCAB,
                        num_classes=CLASSES, seq_len=SEQ_LEN)
  out_zy = inject_zy.apply(variables, carry, inputs, method=cls.step)
  assert relative_diff(out_zy['y'], out['y']) > 1e-3
  with pytest.raises(models.ModelConfigError, match="model.inject='x' is not one of"):
    build(tiny_cfg('trm', inject='x'))


def test_trm_without_latent_updates_is_its_network_applied_once():
  """inner_steps=0 (with inject='zy'): one cycle is y <- f(y + z + x), z untouched, nothing sown for z; with
  inject='z' the input would never reach f, so that is refused, naming the fix."""
  model, variables, tokens_BxL = build(tiny_cfg('trm', inner_steps=0, cycles=1, inject='zy', num_layers=2))
  cls = type(model)
  inputs = model.apply(variables, tokens_BxL, method=cls.encode)
  carry = model.apply(variables, inputs, method=cls.init_carry)
  out, state = model.apply(variables, carry, inputs, method=cls.step, mutable=['intermediates'])
  expected = model.apply(variables, carry['y'] + carry['z'] + inputs['x'], inputs, method=cls._net)
  np.testing.assert_allclose(out['y'], expected, rtol=1e-6)
  np.testing.assert_array_equal(out['z'], carry['z'])
  assert 'z' not in state['intermediates'] and len(state['intermediates']['y']) == 1
  with pytest.raises(models.ModelConfigError, match="inner_steps=0 needs model.inject='zy'"):
    build(tiny_cfg('trm', inner_steps=0))


@pytest.mark.parametrize('name', NAMES)
def test_bfloat16_compute_float32_params(name):
  model, variables, tokens_BxL = build(tiny_cfg(name, dtype='bfloat16'))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  carry, out = jit_unroll(model, 3, detach=True)(variables, tokens_BxL)
  assert all(c.dtype == jnp.bfloat16 for c in jax.tree.leaves(carry))
  assert out['logits'].dtype == jnp.float32
  assert np.isfinite(out['logits']).all() and np.isfinite(out['halt_logit']).all()


@pytest.mark.parametrize('name', NAMES)
def test_tiny_model_overfits_a_fixed_batch(name):
  model, variables, tokens_BxL = build(tiny_cfg(name), batch=8)
  targets_BxL = np.random.default_rng(7).integers(0, CLASSES, tokens_BxL.shape, np.int32)
  optimizer = optax.adam(3e-3)

  def loss_fn(params):
    _, out = models.unroll(model, {'params': params}, tokens_BxL, 2, detach=True)
    return optax.softmax_cross_entropy_with_integer_labels(
        out['logits'], jnp.broadcast_to(targets_BxL, out['logits'].shape[:-1])).mean()

  @fast_jit
  def train_step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  params = variables['params']
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(100):
    params, opt_state, loss = train_step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.2 * losses[0], losses[::10]


def test_bert_padding_mask_hides_padded_tokens():
  model, variables, tokens_BxL = build(tiny_cfg('bert'))
  mask_BxL = np.arange(SEQ_LEN)[None, :].repeat(3, 0) < 10
  changed_BxL = tokens_BxL.copy()
  changed_BxL[:, 10:] = (tokens_BxL[:, 10:] + 1) % VOCAB
  masked_fn = jit_unroll(model, 2)
  _, out = masked_fn(variables, tokens_BxL, mask_BxL=mask_BxL)
  _, out_changed = masked_fn(variables, changed_BxL, mask_BxL=mask_BxL)
  np.testing.assert_allclose(out['logits'][:, :, :10], out_changed['logits'][:, :, :10],
                             rtol=1e-5, atol=1e-6)
  _, unmasked = masked_fn(variables, changed_BxL)
  assert not np.allclose(out['logits'][:, :, :10], unmasked['logits'][:, :, :10], atol=1e-4)


@pytest.mark.parametrize('name', ['bert', 'trm'])
def test_readout_positions_and_tied_head(name):
  cfg = tiny_cfg(name, tie_embeddings=name == 'bert', prefix_len=2 if name == 'trm' else 0)
  model = models.build(cfg, vocab_size=VOCAB, num_classes=VOCAB, seq_len=SEQ_LEN)
  tokens_BxL = np.random.default_rng(1).integers(0, VOCAB, (3, SEQ_LEN), np.int32)
  variables = fast_jit(model.init)(jax.random.key(0), tokens_BxL)
  if name == 'bert':
    assert 'head' not in variables['params'] and 'head_bias' in variables['params']
  positions_GxM = np.array([[0, 5, 15]] * 3)
  unroll_2 = jit_unroll(model, 2)
  _, full = unroll_2(variables, tokens_BxL)
  _, picked = unroll_2(variables, tokens_BxL, positions_GxM=positions_GxM)
  assert picked['logits'].shape == (2, 3, 3, VOCAB)
  np.testing.assert_allclose(picked['logits'], full['logits'][:, :, [0, 5, 15]],
                             rtol=1e-5, atol=1e-6)
  # One row for all 3 sequences laid end to end: sequence 2, position 4 is index 2 * L + 4.
  _, pooled = unroll_2(variables, tokens_BxL, positions_GxM=np.array([[2 * SEQ_LEN + 4, 5, SEQ_LEN]]))
  assert pooled['logits'].shape == (2, 1, 3, VOCAB)
  np.testing.assert_allclose(pooled['logits'][:, 0], full['logits'][:, [2, 0, 1], [4, 5, 0]],
                             rtol=1e-5, atol=1e-6)


def test_tied_head_needs_matching_classes():
  model = models.build(tiny_cfg('bert', tie_embeddings=True), vocab_size=VOCAB,
                           num_classes=CLASSES, seq_len=SEQ_LEN)
  with pytest.raises(ValueError, match='tie_embeddings'):
    model.init(jax.random.key(0), jnp.zeros((1, SEQ_LEN), jnp.int32))


def test_reset_carry_picks_fresh_rows():
  model, variables, tokens_BxL = build(tiny_cfg('trm'))
  carry, _ = jit_unroll(model, 1)(variables, tokens_BxL)
  fresh_fn = lambda v, t: model.apply(v, model.apply(v, t, method=type(model).encode),
                                      method=type(model).init_carry)
  fresh = fast_jit(fresh_fn)(variables, tokens_BxL)
  mixed = fast_jit(models.reset_carry)(carry, fresh, np.array([True, False, True]))
  np.testing.assert_array_equal(mixed['y'][0], fresh['y'][0])
  np.testing.assert_array_equal(mixed['z'][1], carry['z'][1])
  np.testing.assert_array_equal(mixed['z'][2], fresh['z'][2])


def test_published_trm_size_is_about_5m_params():
  cfg = tiny_cfg('trm', width=512, num_layers=2, inner_steps=6, cycles=3, dtype='bfloat16',
                 prefix_len=16, pos_emb='none', norm_scale=False, mlp_multiple_of=256)
  model = models.build(cfg, vocab_size=11, num_classes=11, seq_len=81)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 81), jnp.int32))
  count = sum(x.size for x in jax.tree.leaves(shapes))
  assert 4.9e6 < count < 5.1e6, count  # Paper: 5M; this config gives 5,036,545.


@pytest.mark.parametrize('name', NAMES)
def test_flops_estimate_is_linear_in_depth_and_matches_xla(name):
  cfg = tiny_cfg(name, width=64, mlp_state_dim=128)
  est = flops.estimate(cfg, vocab_size=VOCAB, num_classes=CLASSES, seq_len=SEQ_LEN)
  assert est.step > 0 and est.readout > 0 and est.step_grad <= est.step
  per_step = est.step + est.readout
  assert est.forward(6) - est.forward(3) == 3 * per_step
  assert est.forward(1) < est.train(1)
  model, variables, tokens_BxL = build(cfg, batch=1)
  logits_fn = lambda v, t: models.unroll(model, v, t, 2, scan_unroll=True)[1]['logits']
  cost = fast_jit(logits_fn).lower(variables, tokens_BxL).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  # XLA also counts elementwise work, which the analytic estimate leaves out.
  assert 0.95 < cost['flops'] / est.forward(2) < 1.35, (cost['flops'], est.forward(2))


def test_registry_and_config_errors():
  with pytest.raises(ValueError, match='valid names: bert, llama, looped, mlp, moe, rwkv7, trm'):
    models.build(tiny_cfg('cnn'), vocab_size=VOCAB, num_classes=CLASSES, seq_len=SEQ_LEN)
  with pytest.raises(ValueError, match='model.mixer'):
    models.build(tiny_cfg('trm', mixer='conv'), vocab_size=VOCAB, num_classes=CLASSES,
                     seq_len=SEQ_LEN)
  with pytest.raises(ValueError, match='model.width'):
    models.build(tiny_cfg('bert', width=30), vocab_size=VOCAB, num_classes=CLASSES,
                     seq_len=SEQ_LEN)
  with pytest.raises(ValueError, match='depth'):
    model, variables, tokens_BxL = build(tiny_cfg('mlp'))
    models.unroll(model, variables, tokens_BxL, 0)
  model, variables, _ = build(tiny_cfg('mlp'))
  with pytest.raises(ValueError, match=r'shape \[B, 16\]'):
    model.apply(variables, jnp.zeros((2, 9), jnp.int32))


def test_grid_relations_mark_sudoku_peers():
  from models.recurrent_blocks import grid_relations
  rel = grid_relations(81)
  row, col, box = rel
  assert row[0, 8] == 1 and col[0, 8] == 0 and box[0, 8] == 0
  assert col[0, 72] == 1 and row[0, 72] == 0
  assert box[0, 20] == 1 and row[0, 20] == 0 and col[0, 20] == 0
  assert rel[:, 0, 40].sum() == 0
  assert int((rel.max(0)[0] > 0).sum()) == 21  # 20 peers and the cell itself.
  assert grid_relations(16, prefix_len=2).shape == (3, 18, 18)
  with pytest.raises(ValueError, match='grid'):
    grid_relations(50)


@pytest.mark.parametrize('name,bias', [('bert', 'grid'), ('trm', 'grid'), ('bert', 'grid_heads')])
def test_grid_attention_bias_is_learned(name, bias):
  import ml_collections
  import models
  cfg = ml_collections.ConfigDict(dict(name=name, width=16, num_layers=1, num_heads=2, mlp_ratio=2.0,
                                       mlp_act='gelu', mixer='attention', norm='layernorm', post_norm=False,
                                       use_bias=True, inner_steps=1, cycles=1, dtype='float32',
                                       tie_embeddings=False, mlp_state_dim=16, attention_bias=bias))
  model = models.build(cfg, vocab_size=5, num_classes=4, seq_len=16)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 5, (2, 16)), jnp.int32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
  weight = np.asarray(variables['params']['grid_bias']['weight'])
  assert weight.shape == (3, 2)
  if bias == 'grid_heads':  # Head 0 starts on rows, head 1 on columns.
    np.testing.assert_array_equal(weight, [[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]])

  def loss(params):
    _, out = models.unroll(model, {'params': params}, tokens, 2)
    return jnp.mean(out['logits'] ** 2)

  grads = jax.grad(loss)(variables['params'])
  assert float(jnp.abs(grads['grid_bias']['weight']).sum()) > 0


def test_gelu_is_the_exact_gelu():
  from models import layers  # pylint: disable=g-import-not-at-top
  x = jnp.linspace(-12.0, 12.0, 4001)
  exact = lambda y: jax.nn.gelu(y, approximate=False)
  np.testing.assert_allclose(layers.gelu(x), exact(x), atol=2e-6, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(layers.gelu))(x), jax.vmap(jax.grad(exact))(x), atol=1e-6)
  assert float(jnp.max(jnp.abs(layers.gelu(x) - jax.nn.gelu(x, approximate=True)))) > 1e-4  # Not tanh's.
  assert layers.gelu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_dropout_acts_only_with_a_dropout_rng():
  """Evaluation (no rng) gives the dropout-free model's output; a training rng changes it."""
  model, variables, tokens_BxL = build(tiny_cfg('bert', dropout=0.5))
  plain, _, _ = build(tiny_cfg('bert'))
  eval_logits = models.unroll(model, variables, tokens_BxL, 2)[1]['logits']
  np.testing.assert_allclose(eval_logits, models.unroll(plain, variables, tokens_BxL, 2)[1]['logits'], rtol=1e-6)
  train_logits = models.unroll(model, variables, tokens_BxL, 2, dropout_rng=jax.random.key(3))[1]['logits']
  assert not np.allclose(train_logits, eval_logits)


@pytest.mark.parametrize('cfg, match', [
    ({'name': 'bert', 'width': 32, 'num_layrs': 2}, r"unknown model field model\.num_layrs \(did you mean 'num_layers'\?\)"),
    ({'name': 'bert', 'hidden': 32}, r"unknown model field model\.hidden"),
    ({'name': 'bert', 'width': 32.0}, r'model\.width=32\.0 should be of type int'),
    ({'name': 'bert', 'width': 32, 'post_norm': 1}, r'model\.post_norm=1 should be of type bool'),
    ({'name': 'llama', 'width': 32, 'looped': True}, r'unknown model field model\.looped'),
    ({'name': 'gpt', 'width': 32}, r"unknown model.name='gpt'"),
])
def test_model_config_refuses_unknown_and_mistyped_fields(cfg, match):
  with pytest.raises(models.ModelConfigError, match=match):
    models.config_of(ml_collections.ConfigDict(cfg))


def test_model_config_takes_an_int_for_a_float():
  config = models.config_of({'name': 'trm', 'width': 32, 'mlp_ratio': 2, 'depth': 8})
  assert isinstance(config, models.RecurrentConfig)
  assert config.mlp_ratio == 2.0 and isinstance(config.mlp_ratio, float) and config.width == 32 and config.depth == 8


def test_one_vocabulary_for_the_shared_fields():
  """Every model config is a ModelConfig: the same names mean the same thing in both families."""
  shared = {'width': 48, 'num_layers': 3, 'num_heads': 4, 'mlp_hidden': 40, 'norm_eps': 1e-4, 'dtype': 'bfloat16'}
  for name in models.names():
    config = models.config_of(dict(shared, name=name))
    assert isinstance(config, models.ModelConfig)
    assert {k: getattr(config, k) for k in shared} == shared, name
    assert config.mlp_width('swiglu') == 40  # An explicit width wins over the ratio in every family.
  # Derived from the ratio: SwiGLU keeps a GELU MLP's parameters (2/3), rounded up to mlp_multiple_of.
  assert models.config_of({'name': 'llama', 'width': 64}).mlp_width('swiglu') == 176  # 8/3 x 64 -> 176 (x8).
  assert models.config_of({'name': 'bert', 'width': 64}).mlp_width('gelu') == 256


@pytest.mark.parametrize('name, extra', [('llama', {}), ('looped', {'loops': 3, 'injection': 'concat'})])
def test_decoder_flops_per_token_match_xla(name, extra):
  """The analytic count of every model (models/flops.py) against XLA's on the decoder, loops unrolled."""
  cfg = dict(name=name, width=64, num_heads=4, num_kv_heads=2, num_layers=2, position='rope', **extra)
  length, vocab = 32, 48
  per_token = models.forward_flops_per_token(cfg, vocab_size=vocab, seq_len=length)
  model = models.build(cfg, vocab_size=vocab)
  tokens = jnp.zeros((1, length), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tokens)
  cost = fast_jit(lambda v, t: model.apply(v, t, scan_unroll=True)).lower(params, tokens).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert 1.0 < cost['flops'] / (per_token * length) < 1.35, (cost['flops'], per_token * length)
  assert models.count_params(params) > 0


def test_decoder_gpt_init_scales_the_residual_projections():
  """init='gpt': matrices ~ N(0, 0.02), the projections into the residual stream 0.02 / sqrt(2 x blocks run);
  'lecun' (the default, the arithmetic study's) keeps 1 / fan_in."""
  for name, blocks in (('llama', 4), ('looped', 1 + 3 + 1)):
    cfg = dict(name=name, width=256, num_heads=4, num_layers=4, loops=3, init='gpt', position='rope')
    model = models.build(cfg, vocab_size=64)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
    flat = {'/'.join(str(k.key) for k in path): np.asarray(v) for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    outs = [v for k, v in flat.items() if k.endswith('attention/out/kernel') or k.endswith('mlp/down/kernel')]
    mats = [v for k, v in flat.items() if k.endswith('query/kernel') or k.endswith('gate_up/kernel')]
    assert outs and mats
    np.testing.assert_allclose(np.std(np.concatenate([o.ravel() for o in outs])), 0.02 / np.sqrt(2 * blocks), rtol=0.05)
    np.testing.assert_allclose(np.std(np.concatenate([m.ravel() for m in mats])), 0.02, rtol=0.05)
  lecun = models.build(dict(name='llama', width=256, num_heads=4, num_layers=1), vocab_size=64)
  params = jax.jit(lecun.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  np.testing.assert_allclose(np.std(params['block_0']['mlp']['gate_up']['kernel']), 1 / np.sqrt(256), rtol=0.05)
