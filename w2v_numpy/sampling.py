"""Random draws of word2vec: frequent-word subsampling and unigram^0.75 negatives."""
import numpy as np

from w2v_numpy import corpus


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
  """word2vec's keep probability of each word: (sqrt(c / t) + 1) * t / c, capped at 1.

  t = sample * (total count); sample <= 0 keeps every word (the formula's limit is not used).
  """
  counts = np.asarray(counts, dtype=np.float64)
  if sample <= 0:
    return np.ones(len(counts), dtype=np.float32)
  threshold = sample * counts.sum()
  keep = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
  return np.minimum(keep, 1.0).astype(np.float32)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
  """Negative-sampling distribution: counts**power, normalized (float64)."""
  weights = np.asarray(counts, dtype=np.float64) ** power
  return weights / weights.sum()


class AliasSampler:
  """Draws word ids from a fixed distribution in O(1) each (Walker/Vose alias method)."""

  def __init__(self, probs: np.ndarray):
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if n == 0 or np.any(probs < 0) or not np.isfinite(probs).all() or probs.sum() <= 0:
      raise ValueError('AliasSampler needs a non-empty, non-negative, finite distribution')
    scaled = probs * (n / probs.sum())
    accept = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int32)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    scaled_list = scaled.tolist()
    while small and large:
      s, l = small.pop(), large[-1]
      accept[s] = scaled_list[s]
      alias[s] = l
      scaled_list[l] -= 1.0 - scaled_list[s]
      if scaled_list[l] < 1.0:
        large.pop()
        small.append(l)
    self.probs = probs / probs.sum()
    self._accept = accept.astype(np.float32)
    self._alias = alias
    self._n = n

  def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """int32 ids of the given shape."""
    column = rng.integers(0, self._n, size=shape, dtype=np.int32)
    coin = rng.random(size=shape, dtype=np.float32)
    return np.where(coin < self._accept[column], column, self._alias[column])


def subsample(tokens: np.ndarray, keep_prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Boolean mask of the tokens kept this epoch.

  Drawn in blocks, so that the temporaries stay small on a large corpus; the random stream,
  hence the mask, is the same as one draw for all tokens.
  """
  keep = np.ones(len(tokens), dtype=bool)
  if np.all(keep_prob >= 1.0):
    return keep
  for b in corpus.token_blocks(len(tokens)):
    np.less(rng.random(b.stop - b.start, dtype=np.float32), keep_prob[tokens[b]], out=keep[b])
  return keep
