"""Vocabulary and integer-encoded corpus, read by streaming a whitespace-tokenized text file.

A line is a sentence (as in gensim's LineSentence); lines longer than `max_sentence_length`
tokens are cut into pieces of that length. Words below `min_count` are dropped before
windows are formed, as word2vec and gensim do.
"""
import dataclasses
import os
from typing import Iterable, Iterator

import numpy as np

_BLOCK_BYTES = 1 << 20
TOKEN_BLOCK = 1 << 20  # tokens per block where whole-corpus temporaries would cost 8 bytes a token
_ASCII_SPACE = (b' ', b'\n', b'\t', b'\r', b'\x0b', b'\x0c')


def token_blocks(n: int) -> list[slice]:
  """[0, n) in consecutive slices of TOKEN_BLOCK tokens (NumPy casts int32 indices to 8-byte ones and
  builds float or index temporaries as long as its input: per block they stay small)."""
  return [slice(lo, min(lo + TOKEN_BLOCK, n)) for lo in range(0, n, TOKEN_BLOCK)]


class CorpusError(ValueError):
  """The corpus file or its vocabulary is unusable (message names the file and line)."""


@dataclasses.dataclass
class Corpus:
  """Vocabulary plus the whole corpus as one int32 array.

  Attributes:
    words: vocabulary, most frequent first; word id = position.
    counts: int64 count of each word in the raw corpus.
    tokens: int32 word ids of the in-vocabulary tokens, in corpus order.
    sentence_starts: int64 start offsets into `tokens` of each sentence, plus len(tokens).
    raw_token_count: number of tokens before dropping out-of-vocabulary words.
  """
  words: list[str]
  counts: np.ndarray
  tokens: np.ndarray
  sentence_starts: np.ndarray
  raw_token_count: int

  @property
  def vocab_size(self) -> int:
    return len(self.words)

  def index(self) -> dict[str, int]:
    """word -> id."""
    return {w: i for i, w in enumerate(self.words)}


class _Encoder:
  """Maps words to provisional ids (first-seen order) and records line starts.

  The ids go into one int32 buffer that grows in place (realloc) by a quarter at a time, so the
  corpus is held once, at 4 to 5 bytes a token, while it is read.
  """

  def __init__(self):
    self.ids: dict[str, int] = {}
    self._codes = np.empty(1 << 16, dtype=np.int32)
    self.line_starts: list[int] = [0]
    self.n_tokens = 0

  def add_segment(self, text: str) -> None:
    """Adds the tokens of a piece of one line."""
    toks = text.split()
    if not toks:
      return
    ids = self.ids
    n, end = self.n_tokens, self.n_tokens + len(toks)
    if end > len(self._codes):
      self._codes.resize(max(len(self._codes) * 5 // 4, end), refcheck=False)
    self._codes[n:end] = [ids.setdefault(w, len(ids)) for w in toks]
    self.n_tokens = end

  def take_codes(self) -> np.ndarray:
    """The provisional ids of every token, in corpus order (the encoder lets go of them)."""
    codes, self._codes = self._codes, np.empty(0, dtype=np.int32)
    codes.resize(self.n_tokens, refcheck=False)
    return codes

  def new_line(self) -> None:
    if self.line_starts[-1] != self.n_tokens:
      self.line_starts.append(self.n_tokens)

  def add_text(self, text: str, continues_line: bool) -> None:
    """Adds a block of text; `continues_line`: its first piece belongs to the current line."""
    for i, segment in enumerate(text.split('\n')):
      if i > 0 or not continues_line:
        self.new_line()
      self.add_segment(segment)


def _iter_blocks(path: str) -> Iterator[tuple[str, int]]:
  """Yields (decoded text, line number of its first character), cut at ASCII whitespace."""
  line = 1
  pending = b''
  with open(path, 'rb') as f:
    while True:
      block = f.read(_BLOCK_BYTES)
      data = pending + block
      if block:
        cut = max(data.rfind(c) for c in _ASCII_SPACE) + 1
        if cut <= 0:
          pending = data
          continue
      else:
        cut = len(data)
      piece, pending = data[:cut], data[cut:]
      try:
        text = piece.decode('utf-8')
      except UnicodeDecodeError as e:
        bad_line = line + piece.count(b'\n', 0, e.start)
        raise CorpusError(
            f'{path}:{bad_line}: bytes are not valid UTF-8 ({e.reason} at byte '
            f'0x{piece[e.start]:02x})') from None
      yield text, line
      line += piece.count(b'\n')
      if not block:
        return


def _finish(enc: _Encoder, source: str, min_count: int, max_vocab: int | None,
            max_sentence_length: int) -> Corpus:
  """Sorts the vocabulary by frequency, drops rare words, and cuts sentences."""
  if enc.n_tokens == 0:
    raise CorpusError(f'{source}: is empty (no tokens)')
  codes = enc.take_codes()
  blocks = token_blocks(len(codes))   # bincount and take would hold an 8-byte copy of the corpus
  counts = np.zeros(len(enc.ids), dtype=np.int64)
  for b in blocks:
    counts += np.bincount(codes[b], minlength=len(enc.ids))
  order = np.argsort(-counts, kind='stable')
  n_keep = int(np.sum(counts >= min_count))
  if max_vocab is not None:
    n_keep = min(n_keep, max_vocab)
  if n_keep == 0:
    top = int(order[0])
    top_word = next(w for w, i in enc.ids.items() if i == top)
    raise CorpusError(
        f'{source}: no word occurs at least min_count={min_count} times '
        f'(the most frequent, {top_word!r}, occurs {counts[top]} times)')
  kept = order[:n_keep]
  remap = np.full(len(counts), -1, dtype=np.int32)
  remap[kept] = np.arange(n_keep, dtype=np.int32)
  for b in blocks:
    np.take(remap, codes[b], out=codes[b])   # in place: codes become vocabulary ids, -1 dropped
  dropped = np.flatnonzero(codes < 0)
  tokens = np.delete(codes, dropped) if len(dropped) else codes
  del codes
  # Sentence starts in raw-token space: line starts plus cuts every max_sentence_length.
  line_starts = np.array(enc.line_starts + [enc.n_tokens], dtype=np.int64)
  starts = [line_starts[:-1]]
  for a, b in zip(line_starts[:-1], line_starts[1:]):
    if b - a > max_sentence_length:
      starts.append(np.arange(a + max_sentence_length, b, max_sentence_length))
  raw_starts = np.unique(np.concatenate(starts + [line_starts[-1:]]))
  # In-vocabulary tokens before raw position r = r - (dropped tokens before r).
  kept_before = raw_starts - np.searchsorted(dropped, raw_starts)
  sentence_starts = np.unique(kept_before)
  words_by_id = list(enc.ids)
  return Corpus(words=[words_by_id[i] for i in kept], counts=counts[kept].copy(),
                tokens=tokens, sentence_starts=sentence_starts,
                raw_token_count=int(enc.n_tokens))


def read_corpus(path: str | os.PathLike, min_count: int = 5, max_vocab: int | None = None,
                max_sentence_length: int = 10000) -> Corpus:
  """Reads a UTF-8 text file (one sentence per line, whitespace-separated tokens)."""
  path = os.fspath(path)
  _check_options(min_count, max_vocab, max_sentence_length)
  if not os.path.isfile(path):
    raise CorpusError(f'{path}: no such file')
  enc = _Encoder()
  first = True
  for text, _ in _iter_blocks(path):
    enc.add_text(text, continues_line=not first)
    first = False
  return _finish(enc, path, min_count, max_vocab, max_sentence_length)


def corpus_from_sentences(sentences: Iterable[Iterable[str] | str], min_count: int = 1,
                          max_vocab: int | None = None,
                          max_sentence_length: int = 10000) -> Corpus:
  """Builds a corpus from in-memory sentences (token lists or strings), for small experiments."""
  _check_options(min_count, max_vocab, max_sentence_length)
  enc = _Encoder()
  for sentence in sentences:
    enc.new_line()
    enc.add_segment(sentence if isinstance(sentence, str) else ' '.join(sentence))
  return _finish(enc, '<sentences>', min_count, max_vocab, max_sentence_length)


def _check_options(min_count: int, max_vocab: int | None, max_sentence_length: int) -> None:
  if min_count < 1:
    raise ValueError(f'min_count must be >= 1, got {min_count}')
  if max_vocab is not None and max_vocab < 1:
    raise ValueError(f'max_vocab must be >= 1, got {max_vocab}')
  if max_sentence_length < 1:
    raise ValueError(f'max_sentence_length must be >= 1, got {max_sentence_length}')
