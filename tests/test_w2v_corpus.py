"""Streaming vocabulary / corpus reader."""
import numpy as np
import pytest

from w2v_numpy import corpus as corpus_lib


def _write(tmp_path, data: bytes, name='c.txt'):
  path = tmp_path / name
  path.write_bytes(data)
  return path


def test_vocab_sorted_by_count_and_min_count_drops_rare_words(tmp_path):
  path = _write(tmp_path, b'a b a c a b\nd a b\n\n  e  \n')
  c = corpus_lib.read_corpus(path, min_count=2)
  assert c.words == ['a', 'b'] and list(c.counts) == [4, 3]
  assert c.raw_token_count == 10
  assert [c.words[i] for i in c.tokens] == ['a', 'b', 'a', 'a', 'b', 'a', 'b']
  # Sentences are lines; the line holding only a rare word disappears.
  assert list(c.sentence_starts) == [0, 5, 7]
  assert c.tokens.dtype == np.int32


def test_max_vocab_and_sentence_length_cap(tmp_path):
  path = _write(tmp_path, ('x y z ' * 5 + 'w\n').encode())
  c = corpus_lib.read_corpus(path, min_count=1, max_vocab=2, max_sentence_length=4)
  assert c.words == ['x', 'y']
  # Raw line of 16 tokens cut every 4 raw tokens: cuts at raw 4, 8, 12 (x y z x | y z x y | ...).
  lengths = np.diff(c.sentence_starts)
  assert lengths.sum() == 10 and len(lengths) == 4


def test_reading_in_small_blocks_gives_the_same_corpus(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  words = [f'w{i}é' for i in range(30)]
  lines = [' '.join(rng.choice(words, size=rng.integers(0, 40))) for _ in range(50)]
  path = _write(tmp_path, '\n'.join(lines).encode('utf-8'))
  whole = corpus_lib.read_corpus(path, min_count=2)
  monkeypatch.setattr(corpus_lib, '_BLOCK_BYTES', 7)
  pieces = corpus_lib.read_corpus(path, min_count=2)
  assert whole.words == pieces.words
  np.testing.assert_array_equal(whole.tokens, pieces.tokens)
  np.testing.assert_array_equal(whole.sentence_starts, pieces.sentence_starts)
  from_lines = corpus_lib.corpus_from_sentences(lines, min_count=2)
  np.testing.assert_array_equal(whole.tokens, from_lines.tokens)
  np.testing.assert_array_equal(whole.sentence_starts, from_lines.sentence_starts)


def test_bad_inputs_raise_clear_errors(tmp_path):
  with pytest.raises(corpus_lib.CorpusError, match='no such file'):
    corpus_lib.read_corpus(tmp_path / 'missing.txt')
  with pytest.raises(corpus_lib.CorpusError, match='empty'):
    corpus_lib.read_corpus(_write(tmp_path, b' \n\n', 'empty.txt'))
  with pytest.raises(corpus_lib.CorpusError, match=r"min_count=5.*'a', occurs 2"):
    corpus_lib.read_corpus(_write(tmp_path, b'a a b\n', 'rare.txt'), min_count=5)
  with pytest.raises(corpus_lib.CorpusError, match=r'bad\.txt:3: .*UTF-8'):
    corpus_lib.read_corpus(_write(tmp_path, b'ok\nfine\nbad \xff\xfe byte\n', 'bad.txt'))
  with pytest.raises(ValueError, match='min_count'):
    corpus_lib.corpus_from_sentences([['a']], min_count=0)


def test_real_text_slice_is_read(shared_data):
  path = shared_data / 'text' / 'wiki.valid.tokens'
  c = corpus_lib.read_corpus(path, min_count=5)
  assert c.raw_token_count > 200_000 and 3000 < c.vocab_size < 20_000
  assert c.words[0] == 'the'
  assert np.all(np.diff(c.sentence_starts) > 0)
