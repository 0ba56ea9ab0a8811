"""models/attention.py, the one attention: output and both gradients match jax.nn.dot_product_attention, with plain
and grouped-query heads, key-padding and causal masks, bias and dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import attention

B, L, N, K = 3, 10, 4, 8


def _inputs(groups: int = N, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  q, cotangent = (jax.random.normal(keys[i], (B, L, N, K)).astype(dtype) for i in range(2))
  k, v = (jax.random.normal(keys[i], (B, L, groups, K)).astype(dtype) for i in range(2, 4))
  bias = jax.random.normal(keys[4], (N, L, L))
  mask = jax.random.uniform(keys[5], (B, 1, L)) > 0.3  # Key padding: hides keys from every query.
  return q, k, v, cotangent, bias, mask


def _reference(q, k, v, bias, mask):
  """jax.nn.dot_product_attention (it repeats grouped key/value heads itself)."""
  return jax.nn.dot_product_attention(
      q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
      bias=None if bias is None else bias[None], mask=None if mask is None else mask[:, None])


@pytest.mark.parametrize('grad, groups, with_bias, with_mask', [
    ('flash', N, False, False), ('flash', N, True, False), ('flash', N, False, True), ('flash', N, True, True),
    ('flash', 2, False, False), ('flash', 2, True, True), ('autodiff', N, True, True), ('autodiff', 2, False, True)])
def test_matches_xla_attention_and_its_autodiff(grad, groups, with_bias, with_mask):
  q, k, v, cotangent, bias, mask = _inputs(groups)
  bias = bias if with_bias else None
  mask = mask if with_mask else None

  def ours(q, k, v, b):
    return jnp.sum(attention(q, k, v, mask_BxLxS=mask, bias_NxLxS=b if with_bias else None, grad=grad) * cotangent)

  def ref(q, k, v, b):
    return jnp.sum(_reference(q, k, v, b if with_bias else None, mask) * cotangent)

  argnums = (0, 1, 2, 3) if with_bias else (0, 1, 2)
  args = (q, k, v, bias if with_bias else jnp.zeros(()))
  np.testing.assert_allclose(attention(q, k, v, mask_BxLxS=mask, bias_NxLxS=bias, grad=grad),
                             _reference(q, k, v, bias, mask), atol=1e-6)
  grads = jax.jit(jax.grad(ours, argnums))(*args)
  ref_grads = jax.grad(ref, argnums)(*args)
  for name, got, want in zip('qkvb', grads, ref_grads):
    assert float(jnp.max(jnp.abs(want))) > 1e-3, name  # Every gradient is exercised.
    np.testing.assert_allclose(got, want, atol=3e-6, err_msg=name)


def test_causal_mask_per_query():
  """A [B, L, S] mask (the decoder's causal one): query l reads keys <= l only."""
  q, k, v, _, _, _ = _inputs(2)
  causal = jnp.broadcast_to(jnp.tril(jnp.ones((L, L), bool)), (B, L, L))
  out = attention(q, k, v, mask_BxLxS=causal)
  np.testing.assert_allclose(out, _reference(q, k, v, None, causal), atol=1e-6)
  changed = attention(q, k.at[:, -1].set(50.0), v.at[:, -1].set(50.0), mask_BxLxS=causal)
  np.testing.assert_array_equal(out[:, :-1], changed[:, :-1])  # The last key is seen by the last query only.


def test_masked_keys_get_no_weight_and_no_gradient():
  q, k, v, cotangent, _, mask = _inputs()
  dk, dv = jax.grad(lambda k, v: jnp.sum(attention(q, k, v, mask_BxLxS=mask) * cotangent), (0, 1))(k, v)
  hidden = ~mask[:, 0]
  assert hidden.any()
  assert float(jnp.max(jnp.abs(dk[hidden]))) == 0.0
  assert float(jnp.max(jnp.abs(dv[hidden]))) == 0.0
  v_changed = jnp.where(hidden[:, :, None, None], 100.0, v)  # Values of hidden keys do not matter.
  np.testing.assert_allclose(attention(q, k, v_changed, mask_BxLxS=mask), attention(q, k, v, mask_BxLxS=mask),
                             atol=1e-6)


def test_dropout_keeps_the_expectation_and_is_off_without_an_rng():
  q, k, v, _, _, _ = _inputs(2)
  plain = attention(q, k, v)
  np.testing.assert_array_equal(attention(q, k, v, dropout_rate=0.5), plain)  # No rng: no dropout.
  draws = jnp.stack([attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.PRNGKey(i)) for i in range(200)])
  assert float(jnp.max(jnp.abs(draws[0] - plain))) > 0.1
  np.testing.assert_allclose(jnp.mean(draws, 0), plain, atol=0.25)


def test_bfloat16_inputs_keep_their_dtype_and_stay_close():
  q, k, v, cotangent, bias, _ = _inputs(dtype=jnp.bfloat16)
  out = attention(q, k, v, bias_NxLxS=bias)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), _reference(q, k, v, bias, None), atol=3e-2)
  grads = jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v, bias_NxLxS=bias) * cotangent), (0, 1, 2))(q, k, v)
  ref = jax.grad(lambda q, k, v: jnp.sum(_reference(q, k, v, bias, None) * cotangent.astype(jnp.float32)),
                 (0, 1, 2))(q, k, v)
  for got, want in zip(grads, ref):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=0.1, rtol=0.05)
