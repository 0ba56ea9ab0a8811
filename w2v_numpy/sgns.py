"""Skip-gram negative-sampling loss and its hand-derived gradients (see GRADIENTS.md).

One center position n has an output block u_out[n] = (u_o, u_n1..u_nK): the center word's
output vector and K negatives, and up to C context input vectors v[n, c] (its window).
Every valid (context c, center n) pair is one skip-gram pair with loss

  L = -log sigma(v_c . u_o) - sum_k log sigma(-v_c . u_nk),

and K negatives are shared by the pairs of a few consecutive centers (as Ji et al. 2016,
"Parallelizing word2vec in shared and distributed memory", share them within one center's
window), so the scores of a group of centers are one small matrix product.
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
def _output_signs(chunk: int, negatives: int, dtype: str) -> np.ndarray:
  """+1 for a group's `chunk` center columns, -1 for its shared negatives."""
  signs = np.array([1] * chunk + [-1] * negatives, dtype=dtype)
  signs.flags.writeable = False
  return signs


def banded_loss_and_grads(
    v_GxRxd: np.ndarray, u_GxQxd: np.ndarray, pair_band_GxRxM: np.ndarray,
    neg_ok_GxMxK: np.ndarray, scale: float = 1.0,
) -> tuple[float, int, np.ndarray, np.ndarray]:
  """Summed loss over the valid pairs of G groups of M consecutive centers, and the gradients
  of `scale` * loss.

  Group g holds the input rows of its R = M + C - 1 positions (C = 2W + 1), so center i of the
  group has the window rows i .. i + C - 1, and Q = M + K output rows: its M centers' output
  vectors, then the group's K negatives; `neg_ok` says which centers use which (the trainer draws
  K per few consecutive centers, so each pair still sees K unigram draws). A group's scores are
  one product, R rows by Q outputs: the center columns hold the positive scores (valid on the
  band `pair_band`), the negative columns the scores of every row against every negative,
  counted once per pair of the group that uses them. So a group costs 3 small BLAS calls, not 3
  per center; the entries outside the band (and of negatives a row's centers do not use) are
  computed and dropped.

  Args:
    v_GxRxd: input vectors of each group's R positions (unit last stride).
    u_GxQxd: output vectors: columns 0..M-1 the group's center words, M..M+K-1 its negatives.
    pair_band_GxRxM: True where (row r, center i) of group g is a real pair (same sentence,
      inside the reduced window, not the center itself); `band_pair_mask` makes it from (N, C).
    neg_ok_GxMxK: False drops negative k for center i (a negative of another center's draw, or
      one equal to the center word, which word2vec skips).
    scale: gradients are of scale * loss (pass -learning_rate to get the SGD step).

  Returns:
    (loss summed over pairs, number of pairs, d/dv_GxRxd, d/du_GxQxd).
  """
  groups, rows, chunk = pair_band_GxRxM.shape
  k = neg_ok_GxMxK.shape[2]
  if (v_GxRxd.shape[:2] != (groups, rows) or u_GxQxd.shape[:2] != (groups, chunk + k)
      or neg_ok_GxMxK.shape[:2] != (groups, chunk)):
    raise ValueError(f'need G x R input rows, G x (M + K) outputs and G x M x K negative masks for '
                     f'a G x R x M band {pair_band_GxRxM.shape}; got {v_GxRxd.shape[:2]}, '
                     f'{u_GxQxd.shape[:2]}, {neg_ok_GxMxK.shape}')
  dtype = u_GxQxd.dtype
  # Pairs per score: a center column counts its band; a negative column, for each row, the
  # group's centers that have the row as a context and keep that negative.
  band_GxRxM = pair_band_GxRxM.astype(dtype)
  weight_GxRxQ = np.empty((groups, rows, chunk + k), dtype=dtype)
  weight_GxRxQ[:, :, :chunk] = band_GxRxM
  np.matmul(band_GxRxM, neg_ok_GxMxK.astype(dtype), out=weight_GxRxQ[:, :, chunk:])
  # Signed score t: +s for a center column, -s for negatives, so L = -sum weight * log sigma(t).
  sign_Q = _output_signs(chunk, k, dtype.str)
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
  d_u = np.matmul(coef.transpose(0, 2, 1), v_GxRxd)
  return loss, int(np.count_nonzero(pair_band_GxRxM)), d_v, d_u
