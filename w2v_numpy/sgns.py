"""Skip-gram negative-sampling loss and its hand-derived gradients (see GRADIENTS.md).

One center position n has an output block u_out[n] = (u_o, u_n1..u_nK): the center word's
output vector and K negatives, and up to C context input vectors v[n, c] (its window).
Every valid (context c, center n) pair is one skip-gram pair with loss

  L = -log sigma(v_c . u_o) - sum_k log sigma(-v_c . u_nk),

and the K negatives of a center are shared by its context pairs (as in Ji et al. 2016,
"Parallelizing word2vec in shared and distributed memory"), so the scores of a center are a
(C x (K+1)) matrix product.
"""
import functools

import numpy as np


def log_sigmoid(x: np.ndarray) -> np.ndarray:
  """log(1 / (1 + exp(-x))) without overflow: min(x, 0) - log1p(exp(-|x|))."""
  return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
  """1 / (1 + exp(-x)) without overflow."""
  z = np.exp(-np.abs(x))
  return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def pair_loss(v_c: np.ndarray, u_o: np.ndarray, u_neg_Kxd: np.ndarray) -> float:
  """Loss of one (context, center) pair with its K negatives."""
  return float(-log_sigmoid(v_c @ u_o) - np.sum(log_sigmoid(-(u_neg_Kxd @ v_c))))


def pair_grads(v_c: np.ndarray, u_o: np.ndarray,
               u_neg_Kxd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(dL/dv_c, dL/du_o, dL/du_nk) of `pair_loss`, straight from GRADIENTS.md."""
  g_pos = sigmoid(v_c @ u_o) - 1          # dL/ds_pos
  g_neg_K = sigmoid(u_neg_Kxd @ v_c)      # dL/ds_neg_k
  d_v = g_pos * u_o + g_neg_K @ u_neg_Kxd
  d_u_o = g_pos * v_c
  d_u_neg_Kxd = g_neg_K[:, None] * v_c[None, :]
  return d_v, d_u_o, d_u_neg_Kxd


def band_pair_mask(pair_mask_NxC: np.ndarray, chunk: int) -> np.ndarray:
  """The (G, R, chunk) band form of an (N, C) pair mask: entry (g, r, i) is pair_mask[g * chunk + i,
  r - i] where 0 <= r - i < C, else False (R = chunk + C - 1, G = N / chunk)."""
  n, c = pair_mask_NxC.shape
  band = np.zeros((n // chunk, chunk + c - 1, chunk), dtype=bool)
  s_g, s_r, s_i = band.strides
  np.lib.stride_tricks.as_strided(band, shape=(n // chunk, chunk, c),
                                  strides=(s_g, s_r + s_i, s_r))[...] = (
                                      pair_mask_NxC.reshape(n // chunk, chunk, c))
  return band


@functools.lru_cache(maxsize=8)
def _output_signs(chunk: int, outputs: int, dtype: str) -> np.ndarray:
  """+1 for each center's positive column, -1 for its negatives, over a chunk's M (K+1) outputs."""
  signs = np.tile(np.array([1] + [-1] * (outputs - 1), dtype=dtype), chunk)
  signs.flags.writeable = False
  return signs


def banded_loss_and_grads(
    v_GxRxd: np.ndarray, u_NxKp1xd: np.ndarray, pair_band_GxRxM: np.ndarray,
    neg_mask_NxKp1: np.ndarray, scale: float = 1.0,
) -> tuple[float, int, np.ndarray, np.ndarray]:
  """Summed loss over the valid pairs of N = G x M centers and the gradients of `scale` * loss.

  The centers come in G groups of M consecutive corpus positions; group g holds the input rows
  of its R = M + C - 1 positions (C = 2W + 1), so center i of the group has the window rows
  i .. i + C - 1. A group's scores are one product, R rows by its M (K+1) outputs: a band of it
  holds every (context, output) score of the group's centers, the rest is computed and masked
  out (R / C times the needed products, in 3 G BLAS calls instead of 3 N tiny ones).

  Args:
    v_GxRxd: input vectors of each group's R positions (unit last stride).
    u_NxKp1xd: output vectors, center n = g * M + i: column 0 the center word, 1..K its negatives.
    pair_band_GxRxM: True where (row r, center i) of group g is a real pair (same sentence,
      inside the reduced window, not the center itself); `band_pair_mask` makes it from (N, C).
    neg_mask_NxKp1: 0 drops a negative (word2vec skips a negative equal to the center).
    scale: gradients are of scale * loss (pass -learning_rate to get the SGD step).

  Returns:
    (loss summed over pairs, number of pairs, d/dv_GxRxd, d/du_NxKp1xd).
  """
  n, k1, d = u_NxKp1xd.shape
  groups, rows, chunk = pair_band_GxRxM.shape
  if groups * chunk != n or v_GxRxd.shape[:2] != (groups, rows):
    raise ValueError(f'need N = G x M centers ({n} vs {groups} x {chunk}) and G x R input rows '
                     f'({v_GxRxd.shape[:2]} vs {(groups, rows)})')
  dtype = u_NxKp1xd.dtype
  u_GxQxd = u_NxKp1xd.reshape(groups, chunk * k1, d)
  weight_GxRxQ = (pair_band_GxRxM[..., None] & neg_mask_NxKp1.reshape(groups, 1, chunk, k1)
                  ).astype(dtype).reshape(groups, rows, chunk * k1)
  # Signed score t: +s for the positive column, -s for negatives, so L = -sum log sigma(t).
  sign_Q = _output_signs(chunk, k1, dtype.str)
  t = np.matmul(v_GxRxd, u_GxQxd.transpose(0, 2, 1))
  t *= sign_Q
  z = np.abs(t)
  np.negative(z, out=z)
  np.exp(z, out=z)                            # exp(-|t|) never overflows
  one_plus_z = z + 1
  # -log sigma(t) = log(1 + exp(-|t|)) - min(t, 0); log on (1, 2] is exact enough for a loss.
  loss_terms = np.log(one_plus_z)
  loss_terms -= np.minimum(t, 0)
  loss = float(np.dot(loss_terms.reshape(-1), weight_GxRxQ.reshape(-1)))
  # d(-log sigma(t))/dt = -sigma(-t) and dt/ds = sign: coef = d(scale * L)/ds.
  coef = np.where(t >= 0, z, 1)
  coef /= one_plus_z
  coef *= weight_GxRxQ
  coef *= -scale * sign_Q
  d_v = np.matmul(coef, u_GxQxd)
  d_u = np.matmul(coef.transpose(0, 2, 1), v_GxRxd).reshape(n, k1, d)
  return loss, int(np.count_nonzero(pair_band_GxRxM)), d_v, d_u
