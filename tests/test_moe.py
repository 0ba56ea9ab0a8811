"""Tests of models/moe.py: routing, the sorted grouped dispatch against a dense reference, the router's
auxiliary losses and statistics, capacity, config errors, generation with the KV cache, active FLOPs,
and 8 simulated devices against 1."""
import functools
import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import aux as aux_lib
from models import generate as generate_lib
from models import moe
from models.errors import ModelConfigError
from tests.conftest import REPO_ROOT, fast_jit, launch_env

VOCAB, SEQ = 64, 16
fast_generate = fast_jit(generate_lib.generate.__wrapped__, static_argnames=(
    'model', 'max_new_tokens', 'end_id', 'sampling', 'digit_positions', 'prefill_kwargs', 'return_logits'))


def tiny(**overrides) -> moe.MoeConfig:
  fields = dict(width=32, num_layers=2, num_heads=4, num_experts=4, top_k=2, expert_hidden=16)
  fields.update(overrides)
  return moe.MoeConfig(**fields)


def mlp_params(cfg: moe.MoeConfig, seed: int = 0):
  """Params of one MoeMlp on [2, SEQ, width] (init, eval-shaped first: cheap)."""
  return fast_jit(moe.MoeMlp(cfg).init)(jax.random.key(seed), jnp.zeros((2, SEQ, cfg.width)))['params']


def apply_mlp(cfg: moe.MoeConfig, params, x_BxLxD):
  """(output, {sown name: value}) of one MoeMlp."""
  y, state = moe.MoeMlp(cfg).apply({'params': params}, x_BxLxD, mutable=[aux_lib.LOSSES, aux_lib.STATS])
  sown = {k: v[0] for col in state.values() for k, v in col.items()}
  return y, sown


@functools.lru_cache(maxsize=None)
def jit_apply_mlp(cfg: moe.MoeConfig):
  return fast_jit(functools.partial(apply_mlp, cfg))


def dense_reference(cfg: moe.MoeConfig, params, x_BxLxD):
  """Every expert on every token, masked by the router's choice (and the shared expert)."""
  x_TxD = x_BxLxD.reshape(-1, cfg.width)
  logits_TxE = x_TxD @ params['router']['kernel']
  weight_TxK, expert_TxK = moe.route(logits_TxE, cfg.top_k)
  combine_TxE = jnp.sum(jax.nn.one_hot(expert_TxK, cfg.num_experts) * weight_TxK[..., None], axis=1)
  gate_up_TxExH = jnp.einsum('td,edh->teh', x_TxD, params['expert_gate_up'])
  gate, up = jnp.split(gate_up_TxExH, 2, axis=-1)
  y_TxExD = jnp.einsum('teh,ehd->ted', jax.nn.silu(gate) * up, params['expert_down'])
  y_TxD = jnp.einsum('te,ted->td', combine_TxE, y_TxExD)
  if cfg.shared_expert:
    s = params['shared']
    gate, up = jnp.split(x_TxD @ s['gate_up']['kernel'], 2, axis=-1)
    y_TxD = y_TxD + (jax.nn.silu(gate) * up) @ s['down']['kernel']
  return y_TxD.reshape(x_BxLxD.shape)


def test_routing_picks_top_k_and_weights_sum_to_one():
  logits_TxE = jax.random.normal(jax.random.key(0), (32, 6))
  weight_TxK, expert_TxK = moe.route(logits_TxE, 3)
  want_TxK = np.argsort(-np.asarray(logits_TxE), axis=1)[:, :3]
  np.testing.assert_array_equal(np.sort(expert_TxK, 1), np.sort(want_TxK, 1))
  np.testing.assert_allclose(np.sum(weight_TxK, 1), 1.0, rtol=1e-6)
  chosen_TxK = np.take_along_axis(np.asarray(logits_TxE), np.asarray(expert_TxK), 1)
  np.testing.assert_allclose(weight_TxK, jax.nn.softmax(chosen_TxK, -1), rtol=1e-6)
  assert np.all(np.diff(np.asarray(weight_TxK), axis=1) <= 0)  # The largest logit first.


@pytest.mark.parametrize('impl, shared', [('ragged', False), ('blocks', True)])
def test_sorted_dispatch_equals_dense_reference(impl, shared):
  cfg = tiny(grouped_matmul=impl, shared_expert=shared)
  params = mlp_params(cfg)
  x_BxLxD = jax.random.normal(jax.random.key(1), (2, SEQ, cfg.width))
  y, _ = jit_apply_mlp(cfg)(params, x_BxLxD)
  np.testing.assert_allclose(y, fast_jit(functools.partial(dense_reference, cfg))(params, x_BxLxD), atol=1e-5)
  probe_BxLxD = jax.random.normal(jax.random.key(2), x_BxLxD.shape)
  loss = lambda f: lambda p, x: jnp.sum(f(p, x) * probe_BxLxD)  # pylint: disable=unnecessary-lambda-assignment
  got = fast_jit(jax.grad(loss(lambda p, x: apply_mlp(cfg, p, x)[0]), (0, 1)))(params, x_BxLxD)
  want = fast_jit(jax.grad(loss(functools.partial(dense_reference, cfg)), (0, 1)))(params, x_BxLxD)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=1e-5)


def test_grouped_matmul_blocks_equals_ragged_dot_with_empty_groups():
  rng = np.random.default_rng(0)
  x_NxD = jnp.asarray(rng.normal(size=(100, 8)), jnp.float32)
  w_ExDxH = jnp.asarray(rng.normal(size=(5, 8, 12)), jnp.float32)
  group_E = jnp.asarray([0, 61, 0, 38, 1], jnp.int32)
  np.testing.assert_allclose(moe.grouped_matmul(x_NxD, w_ExDxH, group_E, 'blocks'),
                             jax.lax.ragged_dot(x_NxD, w_ExDxH, group_E), atol=1e-5)


def test_aux_losses_and_load_statistics_by_hand():
  cfg = tiny(load_balance_weight=0.5, router_z_weight=0.25)
  params = mlp_params(cfg)
  x_BxLxD = jax.random.normal(jax.random.key(3), (2, SEQ, cfg.width))
  _, sown = jit_apply_mlp(cfg)(params, x_BxLxD)
  logits_TxE = np.asarray(x_BxLxD.reshape(-1, cfg.width) @ params['router']['kernel'], np.float64)
  top_TxK = np.argsort(-logits_TxE, axis=1)[:, :cfg.top_k]
  f_E = np.bincount(top_TxK.ravel(), minlength=cfg.num_experts) / top_TxK.size
  probs_TxE = np.exp(logits_TxE - logits_TxE.max(1, keepdims=True))
  probs_TxE /= probs_TxE.sum(1, keepdims=True)
  lse_T = np.log(np.exp(logits_TxE).sum(1))
  assert float(sown['load_balance']) == pytest.approx(0.5 * 4 * np.sum(f_E * probs_TxE.mean(0)), rel=1e-5)
  assert float(sown['router_z']) == pytest.approx(0.25 * np.mean(lse_T ** 2), rel=1e-5)
  assert float(sown['expert_load_min']) == pytest.approx(f_E.min())
  assert float(sown['expert_load_max']) == pytest.approx(f_E.max())
  assert float(sown['dropped_fraction']) == 0.0
  # A uniform router (all logits equal): P_e = 1/E, so E * sum_e f_e P_e = 1, its minimum, times the weight.
  uniform = dict(params, router={'kernel': jnp.zeros_like(params['router']['kernel'])})
  _, sown = jit_apply_mlp(cfg)(uniform, x_BxLxD)
  assert float(sown['load_balance']) == pytest.approx(0.5, rel=1e-6)
  assert float(sown['router_z']) == pytest.approx(0.25 * np.log(4) ** 2, rel=1e-6)


def test_capacity_drops_and_counts():
  x_BxLxD = jax.random.normal(jax.random.key(4), (2, SEQ, 32))
  params = mlp_params(tiny())
  y_free, sown = jit_apply_mlp(tiny())(params, x_BxLxD)
  assert float(sown['dropped_fraction']) == 0.0
  y_roomy, sown = jit_apply_mlp(tiny(capacity_factor=2.0))(params, x_BxLxD)  # Capacity 32 = every assignment.
  assert float(sown['dropped_fraction']) == 0.0
  np.testing.assert_allclose(y_roomy, y_free, atol=1e-6)
  y_tight, sown = jit_apply_mlp(tiny(capacity_factor=0.25))(params, x_BxLxD)  # Capacity ceil(0.25 * 64 / 4) = 4.
  group_E = np.bincount(np.asarray(moe.route(x_BxLxD.reshape(-1, 32) @ params['router']['kernel'], 2)[1]).ravel(),
                        minlength=4)
  assert float(sown['dropped_fraction']) == pytest.approx(1 - np.minimum(group_E, 4).sum() / 64)
  assert float(sown['dropped_fraction']) > 0.5
  assert not np.allclose(y_tight, y_free)
  # The first tokens (in order) keep their places: token 0's assignments are never dropped.
  np.testing.assert_allclose(y_tight[0, 0], y_free[0, 0], atol=1e-6)


@pytest.mark.parametrize('fields, match', [
    (dict(num_experts=2, top_k=3), r'^model\.top_k=3 is larger than model\.num_experts=2$'),
    (dict(num_experts=0, top_k=1), r'^model\.num_experts=0 must be an int >= 1$'),
    (dict(top_k=0), r'^model\.top_k=0 must be an int >= 1$'),
    (dict(capacity_factor=-1.0), r'^model\.capacity_factor=-1\.0 must be >= 0$'),
    (dict(load_balance_weight=-0.1), r'^model\.load_balance_weight=-0\.1 must be >= 0$'),
    (dict(router_z_weight=-1e-3), r'^model\.router_z_weight=-0\.001 must be >= 0$'),
])
def test_bad_config_is_one_line(fields, match):
  with pytest.raises(ModelConfigError, match=match):
    models.config_of(dict(dict(name='moe'), **fields))


def test_registered_and_names_kept_apart():
  assert 'moe' in models.names()
  assert isinstance(models.config_of({'name': 'moe', 'num_experts': 4}), moe.MoeConfig)
  with pytest.raises(ModelConfigError, match=r"model\.name='moe' is not one of \['llama', 'looped'\]"):
    models.DecoderConfig(name='moe')
  with pytest.raises(ModelConfigError, match=r"^model\.name='llama' is not one of \['moe'\]$"):
    moe.MoeConfig(name='llama')
  with pytest.raises(ModelConfigError, match='model.top_kk'):
    models.config_of({'name': 'moe', 'top_kk': 2})


def test_expert_partition_specs_name_the_expert_axis():
  model = models.build(tiny(shared_expert=True), vocab_size=VOCAB)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32))['params']
  specs = moe.expert_partition_specs(shapes)
  mlp = specs['block_0']['mlp']
  assert mlp['expert_gate_up'] == jax.sharding.PartitionSpec('expert', None, None) == mlp['expert_down']
  assert mlp['router']['kernel'] == jax.sharding.PartitionSpec() == mlp['shared']['gate_up']['kernel']
  assert all(not hasattr(x, 'names') for x in jax.tree.leaves(shapes))  # Plain arrays: no Partitioned boxes.


def test_generation_matches_full_forward_greedy():
  model = models.build(tiny(shared_expert=True), vocab_size=VOCAB)
  rng = np.random.default_rng(0)
  prompt = rng.integers(0, VOCAB, (3, 6)).astype(np.int32)
  mask = np.arange(6)[None] >= np.asarray([[1], [3], [5]])  # Left-padded: 5, 3 and 1 real tokens.
  params = fast_jit(model.init)(jax.random.key(0), jnp.asarray(prompt))['params']
  params = jax.tree.map(lambda p: p * 3.0 if p.ndim > 1 else p, params)  # Well separated greedy choices.
  forward = fast_jit(lambda p, t, m: model.apply({'params': p}, t, mask_BxL=m))
  steps = 4
  tokens = np.concatenate([prompt, np.zeros((3, steps), np.int32)], axis=1)
  full_mask = np.concatenate([mask, np.ones((3, steps), bool)], axis=1)
  ref_logits = []
  for t in range(steps):
    ref_logits.append(np.asarray(forward(params, tokens, full_mask))[:, 5 + t])
    tokens[:, 6 + t] = ref_logits[-1].argmax(-1)
  generated, logits = fast_generate(model, params, prompt, mask, max_new_tokens=steps, end_id=VOCAB,
                                    return_logits=True)
  for t in range(steps):
    np.testing.assert_allclose(logits[:, t], ref_logits[t], atol=1e-4, err_msg=f'step {t}')
  np.testing.assert_array_equal(generated, tokens[:, 6:])


def _xla_forward_flops(model) -> float:
  tokens = jnp.zeros((1, SEQ), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tokens)
  cost = fast_jit(lambda v, t: model.apply(v, t)).lower(params, tokens).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)['flops'])


def test_active_flops_analytic_count_by_hand():
  cfg = tiny()  # D 32, N = G = 4 heads of 8, 2 layers, E 4, k 2, H 16; L 16, V 64.
  length, dim, heads, head, experts, k, hidden = 16, 32, 4, 8, 4, 2, 16
  attention = 2 * length * dim * 3 * heads * head + 2 * length * heads * head * dim + 4 * length * length * heads * head
  router = 2 * length * dim * experts
  expert = 2 * length * dim * 2 * hidden + 2 * length * hidden * dim
  head_out = 2 * length * dim * VOCAB
  est = models.estimate(cfg, vocab_size=VOCAB, seq_len=SEQ)
  assert est.forward() == 2 * (attention + router + k * expert) + head_out == 598016
  shared = models.estimate(tiny(shared_expert=True), vocab_size=VOCAB, seq_len=SEQ)
  assert shared.forward() - est.forward() == 2 * expert
  assert est.train() == 3 * est.forward()


def test_active_flops_proxy_matches_analytic_and_is_below_dense_masked():
  # Wide enough that XLA's elementwise work (norms, softmax, SiLU) is under 2% of the matmuls.
  cfg = moe.MoeConfig(width=128, num_layers=2, num_heads=2, num_experts=4, top_k=2, expert_hidden=128,
                      shared_expert=True)
  model = models.build(cfg, vocab_size=VOCAB)
  proxy = models.flops_proxy(model)
  n_params = [models.count_params(jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32)))
              for m in (proxy, model)]
  assert n_params[0] < n_params[1]  # The run's parameter count is the MoE's own (train/run.py).
  counted = _xla_forward_flops(proxy)
  analytic = models.estimate(cfg, vocab_size=VOCAB, seq_len=SEQ).forward()
  assert counted == pytest.approx(analytic, rel=0.02)
  # Every expert on every token (a dense SwiGLU of width E H, plus the shared expert): E / k times the experts.
  masked = models.build(dict(name='llama', width=128, num_layers=2, num_heads=2, mlp_hidden=5 * 128),
                        vocab_size=VOCAB)
  assert counted < 0.8 * _xla_forward_flops(masked)
  assert models.flops_proxy(masked) is masked  # Every other model counts itself.


_DEVICES_SCRIPT = textwrap.dedent('''
    import functools, json, jax, jax.numpy as jnp, ml_collections, numpy as np
    import models
    from train import loop, optim, sharding
    from train.tasks.lm.objective import next_token_loss
    model = models.build(dict(name='moe', width=32, num_layers=1, num_heads=4, num_experts=4, top_k=2,
                              capacity_factor=1.0), vocab_size=64)
    config = ml_collections.ConfigDict(dict(seed=0, train=dict(
        batch_size=8, steps=10, warmup_steps=0, lr=1e-2, schedule='constant', final_lr_fraction=0.0, b1=0.9,
        b2=0.95, weight_decay=0.0, grad_clip=1.0, ema_decay=0.0)))
    rows = np.random.default_rng(0).integers(0, 64, (8, 17)).astype(np.int32)
    objective = loop.Objective(loss_fn=functools.partial(next_token_loss, model=model),
                               train_batch=lambda *a: {'tokens': rows}, example_inputs=rows[:2, :-1])
    tx, schedule = optim.make_optimizer(config.train)
    out = {}
    for n in (1, 8):
      mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:n]), (sharding.DATA_AXIS,))
      state = loop.init_state(model, objective, config, tx, mesh)
      step = loop.jit_train_step(objective, tx, schedule, config, mesh)
      curve = []
      for _ in range(2):
        state, metrics = step(state, sharding.put_batch({'tokens': rows}, mesh))
        curve.append({k: float(v) for k, v in metrics.items()})
      out[n] = curve
    print(json.dumps(out))
''')


def test_eight_simulated_devices_match_one():
  """Two train steps (loop.init_state, the jitted train step, batch sharded on 'data') on 8 CPU devices
  give the 1-device losses and router statistics (capacity counts the global batch's tokens)."""
  proc = subprocess.run([sys.executable, '-c', _DEVICES_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=120, env=launch_env({'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}))
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  curves = json.loads(proc.stdout.strip().splitlines()[-1])
  one, eight = curves['1'], curves['8']
  for a, b in zip(one, eight):
    assert {'load_balance', 'router_z', 'expert_load_min', 'expert_load_max', 'dropped_fraction'} <= set(a)
    for key in a:
      assert b[key] == pytest.approx(a[key], rel=2e-4, abs=1e-5), key
  assert one[-1]['loss'] < one[0]['loss']
