"""Training: reproducibility, NumPy-only imports, Hogwild workers, and that it learns."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import w2v_numpy

REPO = pathlib.Path(__file__).resolve().parent.parent


def _topic_corpus(seed=0, n_sentences=600):
  """Two topics whose words only co-occur within their topic."""
  rng = np.random.default_rng(seed)
  topics = [[f'a{i}' for i in range(10)], [f'b{i}' for i in range(10)]]
  sentences = [list(rng.choice(topics[s % 2], size=12)) for s in range(n_sentences)]
  return w2v_numpy.corpus_from_sentences(sentences, min_count=1)


def _topic_margin(result):
  emb = w2v_numpy.Embeddings(result.words, result.vectors)
  idx = np.array([w.startswith('a') for w in result.words])
  sims = emb.unit @ emb.unit.T
  within = (sims[np.ix_(idx, idx)].mean() + sims[np.ix_(~idx, ~idx)].mean()) / 2
  return within - sims[np.ix_(idx, ~idx)].mean()


def test_learns_topics_on_a_synthetic_corpus():
  config = w2v_numpy.TrainConfig(dim=16, window=3, negative=3, sample=0, epochs=3, batch=64)
  result = w2v_numpy.train(_topic_corpus(), config, log=None)
  assert _topic_margin(result) > 0.5
  assert result.vectors.shape == (20, 16) and result.vectors.dtype == np.float32


def test_same_seed_same_vectors_and_other_seed_differs():
  corpus = _topic_corpus()
  config = dict(dim=9, window=2, negative=2, epochs=2, sample=1e-2, batch=32)
  a = w2v_numpy.train(corpus, w2v_numpy.TrainConfig(seed=5, **config), log=None)
  b = w2v_numpy.train(corpus, w2v_numpy.TrainConfig(seed=5, **config), log=None)
  c = w2v_numpy.train(corpus, w2v_numpy.TrainConfig(seed=6, **config), log=None)
  np.testing.assert_array_equal(a.vectors, b.vectors)
  np.testing.assert_array_equal(a.output_vectors, b.output_vectors)
  assert a.loss_history == b.loss_history
  assert not np.allclose(a.vectors, c.vectors)


def test_hogwild_workers_share_one_matrix():
  config = w2v_numpy.TrainConfig(dim=16, window=3, negative=3, sample=0, epochs=3, batch=64,
                                 workers=2)
  result = w2v_numpy.train(_topic_corpus(n_sentences=1200), config, log=None)
  assert np.all(np.isfinite(result.vectors))
  assert _topic_margin(result) > 0.5
  assert result.loss_history and result.loss_history[-1][0] == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize('bad', [dict(dim=0), dict(window=0), dict(negative=-1), dict(epochs=0),
                                 dict(batch=0), dict(alpha=0.0), dict(min_alpha=1.0)])
def test_bad_config_is_rejected(bad):
  with pytest.raises(ValueError, match=next(iter(bad)).split('_')[-1]):
    w2v_numpy.train(_topic_corpus(n_sentences=4), w2v_numpy.TrainConfig(**bad), log=None)


def test_progress_lines_report_epoch_speed_loss_and_eta(capsys):
  w2v_numpy.train(_topic_corpus(n_sentences=50), w2v_numpy.TrainConfig(epochs=1, dim=8),
                  log_every_seconds=0.0)
  out = capsys.readouterr().out
  assert 'epoch' in out and 'words/s' in out and 'loss' in out and 'ETA' in out


def test_training_loads_no_jax_torch_scipy_numba_or_gensim(tmp_path):
  script = (
      'import sys, json\n'
      f'sys.path.insert(0, {str(REPO)!r})\n'
      'import w2v_numpy\n'
      'from w2v_numpy import cli\n'
      'c = w2v_numpy.corpus_from_sentences([["a", "b", "c", "a"]] * 20)\n'
      'r = w2v_numpy.train(c, w2v_numpy.TrainConfig(dim=4, epochs=1), log=None)\n'
      'e = w2v_numpy.Embeddings(r.words, r.vectors)\n'
      f'w2v_numpy.save_text(e, {str(tmp_path / "v.txt")!r})\n'
      f'w2v_numpy.save_binary(e, {str(tmp_path / "v.bin")!r})\n'
      'print(json.dumps(sorted(sys.modules)))\n')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       check=True, cwd=tmp_path).stdout
  loaded = json.loads(out.strip().splitlines()[-1])
  banned = ('jax', 'torch', 'scipy', 'numba', 'gensim', 'tensorflow', 'matplotlib')
  assert not [m for m in loaded if m.split('.')[0] in banned]
  assert 'numpy' in loaded
