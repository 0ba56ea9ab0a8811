"""word2vec text / binary / .npz round trips, and interoperability with gensim."""
import numpy as np
import pytest

from w2v_numpy import evaluate
from w2v_numpy import formats


@pytest.fixture
def emb():
  rng = np.random.default_rng(0)
  words = ['the', 'köln', '東京', 'x_1', 'a-b']
  return evaluate.Embeddings(words, rng.normal(size=(5, 7)).astype(np.float32) * 10)


@pytest.mark.parametrize('suffix', ['.txt', '.bin', '.npz'])
def test_round_trip_is_exact(tmp_path, emb, suffix):
  path = tmp_path / f'v{suffix}'
  formats.save(emb, path)
  back = formats.load(path)
  assert back.words == emb.words
  np.testing.assert_array_equal(back.vectors, emb.vectors)


def test_npz_holds_no_pickled_objects(tmp_path, emb):
  path = tmp_path / 'v.npz'
  formats.save_npz(emb, path)
  with np.load(path, allow_pickle=False) as z:
    assert z['words'].dtype.kind == 'U' and z['vectors'].dtype == np.float32


@pytest.mark.parametrize('binary', [False, True])
def test_gensim_reads_our_files_and_we_read_gensims(tmp_path, emb, binary):
  keyedvectors = pytest.importorskip('gensim.models').KeyedVectors
  ours = tmp_path / ('ours.bin' if binary else 'ours.txt')
  (formats.save_binary if binary else formats.save_text)(emb, ours)
  kv = keyedvectors.load_word2vec_format(str(ours), binary=binary)
  assert list(kv.index_to_key) == emb.words
  np.testing.assert_allclose(kv.vectors, emb.vectors, rtol=1e-6)
  theirs = tmp_path / ('theirs.bin' if binary else 'theirs.txt')
  kv.save_word2vec_format(str(theirs), binary=binary)
  back = (formats.load_binary if binary else formats.load_text)(theirs)
  assert back.words == emb.words
  np.testing.assert_allclose(back.vectors, emb.vectors, rtol=1e-6)


def test_malformed_files_name_the_problem(tmp_path, emb):
  bad = tmp_path / 'bad.txt'
  bad.write_text('2 3\na 1 2 3\nb 1 2\n')
  with pytest.raises(formats.VectorFileError, match=r'bad\.txt:3'):
    formats.load_text(bad)
  bad.write_text('hello\n')
  with pytest.raises(formats.VectorFileError, match='header'):
    formats.load_text(bad)
  with pytest.raises(formats.VectorFileError, match='no such file'):
    formats.load(tmp_path / 'nope.bin')
  path = tmp_path / 'v.bin'
  formats.save_binary(emb, path)
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(formats.VectorFileError, match='truncated'):
    formats.load_binary(path)
  with pytest.raises(ValueError, match='whitespace'):
    formats.save_text(evaluate.Embeddings(['a b'], np.zeros((1, 2))), tmp_path / 'w.txt')
