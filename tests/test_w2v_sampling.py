"""Subsampling keep-probabilities and unigram^0.75 negative draws."""
import numpy as np

from w2v_numpy import corpus
from w2v_numpy import sampling


def test_keep_probabilities_match_word2vec_formula():
  counts = np.array([50_000, 5_000, 400, 20, 1])
  sample = 1e-3
  t = sample * counts.sum()
  expected = np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0)
  np.testing.assert_allclose(sampling.keep_probabilities(counts, sample), expected, rtol=1e-6)
  assert expected[0] < 0.5 and expected[-1] == 1.0
  assert np.all(sampling.keep_probabilities(counts, 0.0) == 1.0)


def test_subsample_keeps_each_word_at_its_probability():
  rng = np.random.default_rng(0)
  keep = np.array([0.1, 0.5, 1.0], dtype=np.float32)
  tokens = np.repeat(np.arange(3, dtype=np.int32), 40_000)
  mask = sampling.subsample(tokens, keep, rng)
  rates = [mask[tokens == w].mean() for w in range(3)]
  np.testing.assert_allclose(rates, keep, atol=0.01)


def test_subsample_in_blocks_draws_the_mask_of_one_draw(monkeypatch):
  keep = np.array([0.1, 0.5, 0.9], dtype=np.float32)
  tokens = np.random.default_rng(1).integers(0, 3, 10_007).astype(np.int32)
  whole = np.random.default_rng(2).random(len(tokens), dtype=np.float32) < keep[tokens]
  monkeypatch.setattr(corpus, 'TOKEN_BLOCK', 1000)
  np.testing.assert_array_equal(sampling.subsample(tokens, keep, np.random.default_rng(2)), whole)


def test_negative_draws_follow_unigram_to_the_075():
  counts = np.array([1000, 500, 200, 100, 50, 10, 5, 1])
  probs = sampling.noise_distribution(counts)
  np.testing.assert_allclose(probs, counts ** 0.75 / np.sum(counts ** 0.75))
  draws = sampling.AliasSampler(probs).draw(np.random.default_rng(0), (200_000,))
  observed = np.bincount(draws, minlength=len(counts))
  expected = probs * len(draws)
  chi2 = float(np.sum((observed - expected) ** 2 / expected))
  # 7 degrees of freedom: P(chi2 > 24.3) = 0.001.
  assert chi2 < 24.3, (chi2, observed, expected)
  # And it is not the plain unigram distribution.
  plain = counts / counts.sum() * len(draws)
  assert float(np.sum((observed - plain) ** 2 / plain)) > 1000


def test_alias_sampler_handles_zero_and_dominant_probabilities():
  sampler = sampling.AliasSampler(np.array([0.0, 0.97, 0.03, 0.0]))
  draws = sampler.draw(np.random.default_rng(1), (50_000,))
  assert set(np.unique(draws)) == {1, 2}
  assert abs(np.mean(draws == 2) - 0.03) < 0.005
  assert draws.dtype == np.int32 and draws.shape == (50_000,)
