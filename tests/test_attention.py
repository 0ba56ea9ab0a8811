"""models/attention.py: output and hand-written gradients match jax.nn.dot_product_attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import attention

B, L, N, K = 3, 10, 2, 8


def _inputs(dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  q, k, v, cotangent = (jax.random.normal(keys[i], (B, L, N, K)).astype(dtype) for i in range(4))
  bias = jax.random.normal(keys[4], (N, L, L))
  mask = jax.random.uniform(keys[5], (B, L)) > 0.3
  return q, k, v, cotangent, bias, mask


def _reference(q, k, v, bias, mask):
  return jax.nn.dot_product_attention(
      q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
      bias=None if bias is None else bias[None], mask=None if mask is None else mask[:, None, None, :])


@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('with_mask', [False, True])
def test_matches_xla_attention_and_its_autodiff(with_bias, with_mask):
  q, k, v, cotangent, bias, mask = _inputs()
  bias = bias if with_bias else None
  mask = mask if with_mask else None
  ours = lambda *a: jnp.sum(attention(*a[:3], a[3] if with_bias else None, mask) * cotangent)
  ref = lambda *a: jnp.sum(_reference(*a[:3], a[3] if with_bias else None, mask) * cotangent)
  argnums = (0, 1, 2, 3) if with_bias else (0, 1, 2)
  args = (q, k, v, bias if with_bias else jnp.zeros(()))
  np.testing.assert_allclose(attention(q, k, v, bias, mask), _reference(q, k, v, bias, mask), atol=1e-6)
  grads = jax.jit(jax.grad(ours, argnums))(*args)
  ref_grads = jax.grad(ref, argnums)(*args)
  for name, got, want in zip('qkvb', grads, ref_grads):
    assert float(jnp.max(jnp.abs(want))) > 1e-3, name  # Every gradient is exercised.
    np.testing.assert_allclose(got, want, atol=2e-6, err_msg=name)


def test_masked_keys_get_no_weight_and_no_gradient():
  q, k, v, cotangent, _, mask = _inputs()
  dk, dv = jax.grad(lambda k, v: jnp.sum(attention(q, k, v, None, mask) * cotangent), (0, 1))(k, v)
  hidden = ~mask
  assert hidden.any()
  assert float(jnp.max(jnp.abs(dk[hidden]))) == 0.0
  assert float(jnp.max(jnp.abs(dv[hidden]))) == 0.0
  v_changed = jnp.where(hidden[:, :, None, None], 100.0, v)  # Values of hidden keys do not matter.
  np.testing.assert_allclose(attention(q, k, v_changed, None, mask), attention(q, k, v, None, mask), atol=1e-6)


def test_bfloat16_inputs_keep_their_dtype_and_stay_close():
  q, k, v, cotangent, bias, _ = _inputs(jnp.bfloat16)
  out = attention(q, k, v, bias)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), _reference(q, k, v, bias, None), atol=3e-2)
  grads = jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v, bias) * cotangent), (0, 1, 2))(q, k, v)
  ref = jax.grad(lambda q, k, v: jnp.sum(_reference(q, k, v, bias, None) * cotangent.astype(jnp.float32)),
                 (0, 1, 2))(q, k, v)
  for got, want in zip(grads, ref):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=0.1, rtol=0.05)
