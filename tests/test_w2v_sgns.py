"""Loss and hand-derived gradients of SGNS against finite differences; loss goes down."""
import warnings

import numpy as np
import pytest

from w2v_numpy import corpus as corpus_lib
from w2v_numpy import sampling
from w2v_numpy import sgns
from w2v_numpy import trainer


def _finite_diff(f, x, eps=1e-6):
  grad = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    old = x[i]
    x[i] = old + eps
    up = f()
    x[i] = old - eps
    down = f()
    x[i] = old
    grad[i] = (up - down) / (2 * eps)
  return grad


def test_log_sigmoid_is_stable_and_exact():
  x = np.array([-1e4, -50.0, -1.0, 0.0, 2.0, 50.0, 1e4])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    got = sgns.log_sigmoid(x)
    sig = sgns.sigmoid(x)
  np.testing.assert_allclose(got[2:5], np.log(1 / (1 + np.exp(-x[2:5]))), rtol=1e-12)
  assert got[0] == pytest.approx(-1e4) and got[-1] == 0.0
  assert np.all(np.isfinite(got)) and sig[0] == 0.0 and sig[-1] == 1.0


def test_pair_grads_match_finite_differences():
  rng = np.random.default_rng(0)
  d, k = 6, 3
  v, u_o, u_neg = rng.normal(size=d), rng.normal(size=d), rng.normal(size=(k, d))
  d_v, d_u_o, d_u_neg = sgns.pair_grads(v, u_o, u_neg)
  loss = lambda: sgns.pair_loss(v, u_o, u_neg)
  np.testing.assert_allclose(d_v, _finite_diff(loss, v), atol=1e-7)
  np.testing.assert_allclose(d_u_o, _finite_diff(loss, u_o), atol=1e-7)
  np.testing.assert_allclose(d_u_neg, _finite_diff(loss, u_neg), atol=1e-7)


@pytest.mark.parametrize('chunk', [1, 2, 3])
def test_banded_grads_match_finite_differences_with_masks(chunk):
  rng = np.random.default_rng(1)
  n, c, k, d = 6, 5, 2, 4
  groups = n // chunk
  v = rng.normal(size=(groups, chunk + c - 1, d))   # group g's rows; center g*M+i: rows i..i+c-1
  u = rng.normal(size=(groups, chunk + k, d))        # the group's M centers, then its K negatives
  pair_mask = rng.random((n, c)) < 0.6
  pair_mask[0, 0] = True
  neg_ok = np.ones((groups, chunk, k), bool)
  neg_ok[1 // chunk, 1 % chunk, 1] = False           # center 1 skips its group's 2nd negative
  band = sgns.band_pair_mask(pair_mask, chunk)
  scale = 0.7
  loss, pairs, d_v, d_u = sgns.banded_loss_and_grads(v, u, band, neg_ok, scale=scale)
  f = lambda: scale * sgns.banded_loss_and_grads(v, u, band, neg_ok)[0]
  np.testing.assert_allclose(d_v, _finite_diff(f, v), atol=1e-7)
  np.testing.assert_allclose(d_u, _finite_diff(f, u), atol=1e-7)
  assert pairs == pair_mask.sum()
  # The banded loss is the sum of per-pair losses, each pair with its group's kept negatives.
  expected = 0.0
  for i, j in zip(*np.nonzero(pair_mask)):
    g, m = divmod(i, chunk)
    keep = [chunk + q for q in range(k) if neg_ok[g, m, q]]
    expected += sgns.pair_loss(v[g, m + j], u[g, m], u[g, keep])
  assert loss == pytest.approx(expected, rel=1e-12)


def test_banded_loss_names_shapes_that_do_not_fit():
  band = np.ones((2, 6, 2), bool)
  with pytest.raises(ValueError, match='G x .M . K. outputs'):
    sgns.banded_loss_and_grads(np.zeros((2, 6, 3)), np.zeros((2, 5, 3)), band, np.ones((2, 2, 2), bool))


def test_band_pair_mask_places_each_pair_on_its_row():
  pair_mask = np.random.default_rng(0).random((8, 5)) < 0.5
  band = sgns.band_pair_mask(pair_mask, 4)
  assert band.shape == (2, 8, 4) and band.sum() == pair_mask.sum()
  for n, c in zip(*np.nonzero(pair_mask)):
    assert band[n // 4, n % 4 + c, n % 4]


@pytest.mark.parametrize('chunk,share,centers', [
    (8, 4, 8), (8, 4, 11), (8, 4, 6), (8, 4, 3),   # not a multiple of CHUNK; one draw left unused
    (4, 4, 5), (4, 2, 7), (4, 8, 4)])               # SHARE > CHUNK: one draw per group
def test_one_minibatch_step_equals_explicit_pair_updates(monkeypatch, chunk, share, centers):
  """trainer.step applies exactly -lr * (sum of pair gradients) to every row it touches, each
  center's pairs using the draw of K negatives of its SHARE consecutive centers."""
  monkeypatch.setattr(trainer, 'CHUNK', chunk)
  monkeypatch.setattr(trainer, 'SHARE', share)
  rng = np.random.default_rng(2)
  vocab, dim, w, k = 7, 5, 2, 2
  cfg = trainer.TrainConfig(dim=dim, window=w, negative=k, batch=chunk)
  params = trainer.init_params(vocab, dim, rng)
  params[vocab:, :dim] = rng.normal(size=(vocab, dim)) * 0.1
  before = params.copy()

  class FixedNegatives:
    def draw(self, rng, shape):
      return (np.arange(np.prod(shape)).reshape(shape) + 2) % vocab   # center words among them

  step = trainer._BatchTrainer(params, vocab, cfg, FixedNegatives())
  ctx = np.array([0, 1, 2, 3, 4, 5, 6, 2, 5, 1, 3, 6, 0, 4, 2], dtype=np.int32)[:centers + 2 * w]
  sid = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], dtype=np.int32)[:centers + 2 * w]
  # Groups of CHUNK consecutive centers with their W neighbours, the last one padded.
  groups = -(-centers // chunk)
  rows = chunk + 2 * w
  padded = groups * chunk + 2 * w
  ids_p = np.concatenate([ctx, np.zeros(padded - len(ctx), np.int32)])
  sid_p = np.concatenate([sid, np.full(padded - len(sid), -5, np.int32)])
  starts = chunk * np.arange(groups)[:, None] + np.arange(rows)
  lr = np.float32(0.05)
  step.step(ids_p[starts], sid_p[starts], centers, lr, np.random.default_rng(3))
  # Replay the same random reduced windows and do every pair by hand in float64.
  reduced = np.random.default_rng(3).integers(1, w + 1, size=centers, dtype=np.int32)
  syn0, syn1 = before[:vocab, :dim].astype(float), before[vocab:, :dim].astype(float)
  grad0, grad1 = np.zeros_like(syn0), np.zeros_like(syn1)
  share = min(share, chunk)
  negs = FixedNegatives().draw(None, (groups, chunk // share, k))   # a draw per SHARE centers
  for n in range(centers):
    pos = n + w
    for p in range(pos - reduced[n], pos + reduced[n] + 1):
      if p == pos or sid[p] != sid[pos]:
        continue
      keep = [x for x in negs[n // chunk, n % chunk // share] if x != ctx[pos]]
      d_v, d_uo, d_un = sgns.pair_grads(syn0[ctx[p]], syn1[ctx[pos]], syn1[keep])
      grad0[ctx[p]] += d_v
      grad1[ctx[pos]] += d_uo
      for x, g in zip(keep, d_un):
        grad1[x] += g
  np.testing.assert_allclose(params[:vocab, :dim], syn0 - lr * grad0, atol=1e-6)
  np.testing.assert_allclose(params[vocab:, :dim], syn1 - lr * grad1, atol=1e-6)
  assert np.all(params[:, dim:] == 0)   # padding column of odd dim stays zero


@pytest.mark.parametrize('block', [1 << 20, 7])   # one block, and blocks that cut sentences
def test_lanes_cut_the_kept_stream_into_equal_parts_with_their_neighbours(monkeypatch, block):
  monkeypatch.setattr(corpus_lib, 'TOKEN_BLOCK', block)
  tokens = np.arange(1, 31, dtype=np.int32)
  starts = np.array([0, 5, 9, 12, 20, 30])   # sentences [0,5) [5,9) [9,12) [12,20) [20,30)
  keep = np.ones(30, dtype=bool)
  keep[[1, 6, 7, 8, 9, 10, 11, 25]] = False   # sentence [9,12) loses every token
  ids = tokens[keep]
  sentence = np.searchsorted(starts, np.flatnonzero(keep), side='right')
  ids_LxS, sid_LxS, length, n = trainer.lanes(tokens, starts, keep, count=3, window=2)
  assert n == 22 and length % trainer.CHUNK == 0 and 3 * length >= 22
  for lane in range(3):
    for j in range(length + 4):   # kept-stream position lane * length + j - 2
      pos = lane * length + j - 2
      inside = 0 <= pos < 22
      assert ids_LxS[lane, j] == (ids[pos] if inside else 0)
      assert (sid_LxS[lane, j] >= 0) == inside
  flat = lambda a: np.concatenate([a[0, :2]] + [a[l, 2:2 + length] for l in range(3)])[2:2 + n]
  sids = flat(sid_LxS)
  np.testing.assert_array_equal(flat(ids_LxS), ids)
  # Two kept positions share a sentence number exactly when they share a sentence.
  np.testing.assert_array_equal(sids[:, None] == sids[None, :], sentence[:, None] == sentence[None, :])


def test_every_kept_position_is_trained_once_per_epoch():
  """The lanes cover the subsampled stream exactly: one center per position, none twice."""
  # Every position its own word, so the ids trained name the positions.
  corpus = corpus_lib.corpus_from_sentences([[f'a{i}' for i in range(21)], [f'b{i}' for i in range(18)]],
                                            min_count=1)
  cfg = trainer.TrainConfig(dim=4, window=2, epochs=1, batch=8, sample=0)
  seen = []

  class Recorder(trainer._BatchTrainer):
    def step(self, ids_GxR, sid_GxR, n_valid, lr, rng):
      centers = ids_GxR[:, 2:2 + trainer.CHUNK].reshape(-1)[:n_valid]
      seen.append(centers.copy())
      return 0.0, 0

  rng = np.random.default_rng(0)
  params = trainer.init_params(corpus.vocab_size, 4, rng)
  sampler = sampling.AliasSampler(np.ones(corpus.vocab_size) / corpus.vocab_size)
  rec = Recorder(params, corpus.vocab_size, cfg, sampler)
  trainer._run_epochs(rec, corpus.tokens, corpus.sentence_starts, np.ones(corpus.vocab_size),
                      cfg, rng, (0, len(corpus.tokens)), lambda *a: None)
  trained = np.concatenate(seen)
  assert len(trained) == len(corpus.tokens)
  assert len(set(corpus.tokens.tolist())) == len(corpus.tokens)
  assert np.array_equal(np.sort(trained), np.sort(corpus.tokens))


def test_loss_decreases_over_an_epoch_on_real_text(shared_data):
  path = shared_data / 'text' / 'enwiki_sample.txt'
  with open(path, encoding='utf-8') as f:
    words = f.read(400_000).split()[:60_000]
  sentences = [words[i:i + 1000] for i in range(0, len(words), 1000)]
  corpus = corpus_lib.corpus_from_sentences(sentences, min_count=3)
  result = trainer.train(corpus, trainer.TrainConfig(epochs=1, dim=50), log=None)
  losses = [loss for _, loss in result.loss_history]
  assert len(losses) >= 10
  assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.3
  assert losses[0] < 6 * np.log(2) + 0.05    # starts near K+1 times log 2
