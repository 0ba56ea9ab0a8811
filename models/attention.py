"""Softmax attention, the one implementation every model uses: grouped-query heads, masks, bias, dropout.

  out = softmax(c q k^T + bias, masked) v,   c = 1/sqrt(head_dim)

Queries have N heads, keys and values G (N % G == 0): query heads g*R .. g*R+R-1 (R = N/G) read
key/value head g (G = N is plain multi-head attention). Logits, softmax and the gradient of the
logits are float32 whatever the compute dtype.

How the softmax is differentiated (`grad`), the same gradient up to float rounding:
  'flash'     (default) the short form flash attention uses, written by hand:
                dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = dS K c,  dK = dS^T Q c
              Autodiff of the softmax sums P * dP over the [B, N, L, S] scores and keeps more of them
              alive; on CPU this form made the MLM bench's BERT step about 10% faster.
  'autodiff'  JAX's own rule for `jax.nn.softmax` (the arithmetic study's decoder was measured with it).
With dropout on the probabilities (BERT's attention dropout, only when an rng is given), JAX
differentiates the probabilities as written.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

GRADS = ('flash', 'autodiff')


@functools.lru_cache(maxsize=None)
def _subscripts(grouped: bool) -> dict[str, str]:
  """einsum subscripts of queries, keys, scores and the per-row reduction, per head layout."""
  heads = 'gr' if grouped else 'n'
  kv = 'g' if grouped else 'n'
  return dict(q=f'bl{heads}k', k=f'bs{kv}k', s=f'b{heads}ls', row=f'b{heads}l')


def _split_heads(q_BxLxNxK: jax.Array, groups: int) -> tuple[jax.Array, dict[str, str]]:
  """Queries as [B, L, G, R, K] when G < N (else as given), with the subscripts of that layout."""
  batch, length, heads, head_dim = q_BxLxNxK.shape
  if groups == heads:
    return q_BxLxNxK, _subscripts(False)
  if heads % groups:
    raise ValueError(f'attention: {groups} key/value heads do not divide {heads} query heads')
  return q_BxLxNxK.reshape(batch, length, groups, heads // groups, head_dim), _subscripts(True)


def _logits(q, k_BxSxGxK, bias_NxLxS, mask_BxLxS, ix) -> jax.Array:
  """float32 scores [B, heads..., L, S]: c q k^T + bias, masked keys at the float32 minimum."""
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
  logits = jnp.einsum(f'{ix["q"]},{ix["k"]}->{ix["s"]}', q, k_BxSxGxK, preferred_element_type=jnp.float32) * scale
  head_axes = logits.ndim - 3
  if bias_NxLxS is not None:  # [N or 1, ...]: over the query heads, in the layout of `logits`.
    heads = int(np.prod(logits.shape[1:1 + head_axes]))
    bias = jnp.broadcast_to(bias_NxLxS, (heads,) + bias_NxLxS.shape[1:])
    logits = logits + bias.reshape(logits.shape[1:1 + head_axes] + bias_NxLxS.shape[1:]).astype(jnp.float32)
  if mask_BxLxS is not None:
    mask = mask_BxLxS.reshape(mask_BxLxS.shape[:1] + (1,) * head_axes + mask_BxLxS.shape[1:])
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return logits


def _softmax(logits: jax.Array) -> jax.Array:
  exp = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return exp / jnp.sum(exp, axis=-1, keepdims=True)


def _attend(probs: jax.Array, v_BxSxGxK: jax.Array, ix) -> jax.Array:
  return jnp.einsum(f'{ix["s"]},{ix["k"]}->{ix["q"]}', probs.astype(v_BxSxGxK.dtype), v_BxSxGxK)


def attention(q_BxLxNxK: jax.Array, k_BxSxGxK: jax.Array, v_BxSxGxK: jax.Array, *,
              mask_BxLxS: jax.Array | None = None, bias_NxLxS: jax.Array | None = None, grad: str = 'flash',
              dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None) -> jax.Array:
  """[B, L, N, K] attention output.

  Args:
    q_BxLxNxK, k_BxSxGxK, v_BxSxGxK: queries, keys and values (G divides N).
    mask_BxLxS: optional bool, False hides key s from query l; a [B, 1, S] mask hides keys from every query.
    bias_NxLxS: optional bias added to the logits (broadcast over the batch; [N or 1, L or 1, S]).
    grad: how the softmax is differentiated, 'flash' or 'autodiff' (module docstring).
    dropout_rate, dropout_rng: dropout on the probabilities, applied when both are given.
  """
  if grad not in GRADS:
    raise ValueError(f'attention: grad={grad!r} is not one of {GRADS}')
  groups = k_BxSxGxK.shape[2]
  q, ix = _split_heads(q_BxLxNxK, groups)
  if dropout_rate > 0 and dropout_rng is not None:
    probs = _softmax(_logits(q, k_BxSxGxK, bias_NxLxS, mask_BxLxS, ix))
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    out = _attend(jnp.where(keep, probs / (1.0 - dropout_rate), 0.0), v_BxSxGxK, ix)
  elif grad == 'autodiff':
    out = _attend(jax.nn.softmax(_logits(q, k_BxSxGxK, bias_NxLxS, mask_BxLxS, ix), axis=-1), v_BxSxGxK, ix)
  else:
    out = _flash_grad(q, k_BxSxGxK, v_BxSxGxK, bias_NxLxS, mask_BxLxS)
  return out.reshape(q_BxLxNxK.shape)


@jax.custom_vjp
def _flash_grad(q, k_BxSxGxK, v_BxSxGxK, bias_NxLxS, mask_BxLxS):
  ix = _subscripts(q.ndim == 5)
  return _attend(_softmax(_logits(q, k_BxSxGxK, bias_NxLxS, mask_BxLxS, ix)), v_BxSxGxK, ix)


def _forward(q, k_BxSxGxK, v_BxSxGxK, bias_NxLxS, mask_BxLxS):
  ix = _subscripts(q.ndim == 5)
  probs = _softmax(_logits(q, k_BxSxGxK, bias_NxLxS, mask_BxLxS, ix))
  out = _attend(probs, v_BxSxGxK, ix)
  return out, (q, k_BxSxGxK, v_BxSxGxK, probs, out, bias_NxLxS, mask_BxLxS)


def _backward(residuals, dout):
  q, k_BxSxGxK, v_BxSxGxK, probs, out, bias_NxLxS, mask_BxLxS = residuals
  ix = _subscripts(q.ndim == 5)
  dtype = q.dtype
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
  dv = jnp.einsum(f'{ix["s"]},{ix["q"]}->{ix["k"]}', probs.astype(dtype), dout)
  dprobs = jnp.einsum(f'{ix["q"]},{ix["k"]}->{ix["s"]}', dout, v_BxSxGxK, preferred_element_type=jnp.float32)
  # rowsum(P * dP) = rowsum(dO * O): one [B, heads, L] reduction instead of one over the scores.
  row = jnp.einsum(f'{ix["q"]},{ix["q"]}->{ix["row"]}', dout.astype(jnp.float32), out.astype(jnp.float32))
  dlogits = probs * (dprobs - row[..., None])
  dq = (jnp.einsum(f'{ix["s"]},{ix["k"]}->{ix["q"]}', dlogits.astype(dtype), k_BxSxGxK) * scale).astype(dtype)
  dk = (jnp.einsum(f'{ix["s"]},{ix["q"]}->{ix["k"]}', dlogits.astype(dtype), q) * scale).astype(dtype)
  dbias = None
  if bias_NxLxS is not None:  # Sum over the axes the bias was broadcast along.
    heads_first = dlogits.reshape((dlogits.shape[0], -1) + dlogits.shape[-2:])
    dbias = _sum_to_shape(heads_first, bias_NxLxS.shape).astype(bias_NxLxS.dtype)
  dmask = None if mask_BxLxS is None else np.zeros(mask_BxLxS.shape, jax.dtypes.float0)
  return dq, dk, dv.astype(v_BxSxGxK.dtype), dbias, dmask


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums x over leading axes it has beyond `shape` and over axes where `shape` is 1."""
  x = jnp.sum(x, axis=tuple(range(x.ndim - len(shape))))
  axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


_flash_grad.defvjp(_forward, _backward)
