"""Skip-gram negative-sampling loss and its hand-derived gradients (see GRADIENTS.md).

One center position n has an output block u_out[n] = (u_o, u_n1..u_nK): the center word's
output vector and K negatives, and up to C context input vectors v[n, c] (its window).
Every valid (context c, center n) pair is one skip-gram pair with loss

  L = -log sigma(v_c . u_o) - sum_k log sigma(-v_c . u_nk),

and the K negatives of a center are shared by its context pairs (as in Ji et al. 2016,
"Parallelizing word2vec in shared and distributed memory"), so the scores of a center are a
(C x (K+1)) matrix product.
"""
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


def batch_loss_and_grads(
    v_NxCxd: np.ndarray, u_NxKp1xd: np.ndarray, pair_mask_NxC: np.ndarray,
    neg_mask_NxKp1: np.ndarray | None = None, scale: float = 1.0,
) -> tuple[float, int, np.ndarray, np.ndarray]:
  """Summed loss over the valid pairs of N centers and the gradients of `scale` * loss.

  Args:
    v_NxCxd: context input vectors of each center (any strides with unit last stride).
    u_NxKp1xd: output vectors: column 0 the center word, columns 1..K its negatives.
    pair_mask_NxC: 1 where (n, c) is a real pair, 0 for padding / outside the window.
    neg_mask_NxKp1: 0 drops a negative (word2vec skips a negative equal to the center).
    scale: gradients are of scale * loss (pass -learning_rate to get the SGD step).

  Returns:
    (loss summed over pairs, number of pairs, d/dv_NxCxd, d/du_NxKp1xd).
  """
  dtype = u_NxKp1xd.dtype
  s_NxCxKp1 = np.matmul(v_NxCxd, u_NxKp1xd.transpose(0, 2, 1))
  # Signed score: +s for the positive column, -s for negatives; loss = -log sigma(signed).
  sign_Kp1 = np.ones(u_NxKp1xd.shape[1], dtype=dtype)
  sign_Kp1[1:] = -1
  signed = s_NxCxKp1 * sign_Kp1
  z = np.exp(-np.abs(signed))
  weight_NxCxKp1 = np.broadcast_to(pair_mask_NxC.astype(dtype)[:, :, None], signed.shape)
  if neg_mask_NxKp1 is not None:
    weight_NxCxKp1 = weight_NxCxKp1 * neg_mask_NxKp1.astype(dtype)[:, None, :]
  log_sig = np.minimum(signed, 0) - np.log1p(z)
  loss = -float(np.sum(log_sig * weight_NxCxKp1, dtype=np.float64))
  # d(-log sigma(t))/dt = sigma(t) - 1 = -sigma(-t); ds/dscore = sign.
  sig_neg = np.where(signed >= 0, z, 1) / (1 + z)       # sigma(-signed)
  coef = (-scale * sign_Kp1) * sig_neg * weight_NxCxKp1   # d(scale * L)/d score
  coef = coef.astype(dtype, copy=False)
  d_v = np.matmul(coef, u_NxKp1xd)
  d_u = np.matmul(coef.transpose(0, 2, 1), v_NxCxd)
  return loss, int(pair_mask_NxC.sum()), d_v, d_u
