"""Saving and loading vectors: word2vec text and binary formats and .npz (never pickle).

Text:   first line `V d`, then `word x1 ... xd` per line (what gensim and word2vec.c write).
Binary: first line `V d`, then per word `word ` + d little-endian float32 + `\n`
        (word2vec.c's layout; gensim's KeyedVectors.load_word2vec_format(binary=True) reads it).
"""
import os

import numpy as np

from w2v_numpy.evaluate import Embeddings


class VectorFileError(ValueError):
  """A vectors file is missing or malformed (message names file and line)."""


def _check_words(words: list[str]) -> None:
  for w in words:
    if not w or any(c.isspace() for c in w):
      raise ValueError(f'word {w!r} is empty or contains whitespace; the word2vec formats '
                       'cannot store it')


def save_text(emb: Embeddings, path: str | os.PathLike, precision: int = 9) -> None:
  """Writes the word2vec text format (9 significant digits: float32 round-trips exactly)."""
  _check_words(emb.words)
  n, d = emb.vectors.shape
  with open(path, 'w', encoding='utf-8', newline='\n') as f:
    f.write(f'{n} {d}\n')
    fmt = ' '.join([f'%.{precision}g'] * d)
    for word, vec in zip(emb.words, emb.vectors):
      f.write(word + ' ' + (fmt % tuple(vec.tolist())) + '\n')


def save_binary(emb: Embeddings, path: str | os.PathLike) -> None:
  """Writes the word2vec binary format."""
  _check_words(emb.words)
  n, d = emb.vectors.shape
  vectors = np.ascontiguousarray(emb.vectors, dtype='<f4')
  with open(path, 'wb') as f:
    f.write(f'{n} {d}\n'.encode('utf-8'))
    for word, vec in zip(emb.words, vectors):
      f.write(word.encode('utf-8') + b' ' + vec.tobytes() + b'\n')


def save_npz(emb: Embeddings, path: str | os.PathLike) -> None:
  """Writes `words` (unicode array) and `vectors` (float32) with np.savez (no pickled objects)."""
  np.savez(path, words=np.array(emb.words, dtype=str), vectors=emb.vectors.astype(np.float32))


def _header(line: bytes, path: str) -> tuple[int, int]:
  parts = line.split()
  try:
    n, d = int(parts[0]), int(parts[1])
    if len(parts) != 2 or n < 0 or d < 1:
      raise ValueError
  except (ValueError, IndexError):
    raise VectorFileError(f'{path}:1: expected a header `<count> <dim>`, got {line[:80]!r}') from None
  return n, d


def _open(path: str | os.PathLike) -> tuple[str, bytes]:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VectorFileError(f'{path}: no such file')
  with open(path, 'rb') as f:
    data = f.read()
  if not data.strip():
    raise VectorFileError(f'{path}: is empty')
  return path, data


def load_text(path: str | os.PathLike) -> Embeddings:
  """Reads the word2vec text format."""
  path, data = _open(path)
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    raise VectorFileError(f'{path}:{line}: not valid UTF-8 ({e.reason})') from None
  lines = text.split('\n')
  n, d = _header(lines[0].encode(), path)
  words, rows = [], []
  for line_no, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    parts = line.rstrip().split(' ')
    if len(parts) != d + 1:
      raise VectorFileError(f'{path}:{line_no}: expected a word and {d} numbers, '
                            f'got {len(parts)} fields')
    try:
      rows.append([float(x) for x in parts[1:]])
    except ValueError:
      raise VectorFileError(f'{path}:{line_no}: a value is not a number') from None
    words.append(parts[0])
  if len(words) != n:
    raise VectorFileError(f'{path}: header says {n} words, found {len(words)}')
  return Embeddings(words, np.array(rows, dtype=np.float32).reshape(n, d))


def load_binary(path: str | os.PathLike) -> Embeddings:
  """Reads the word2vec binary format (with or without a newline after each vector)."""
  path, data = _open(path)
  end = data.find(b'\n')
  if end < 0:
    raise VectorFileError(f'{path}:1: no header line')
  n, d = _header(data[:end], path)
  pos, words = end + 1, []
  vectors = np.empty((n, d), dtype=np.float32)
  nbytes = 4 * d
  for i in range(n):
    while pos < len(data) and data[pos:pos + 1] in (b'\n', b' '):
      pos += 1
    space = data.find(b' ', pos)
    if space < 0 or space + 1 + nbytes > len(data):
      raise VectorFileError(f'{path}: truncated at word {i + 1} of {n}')
    try:
      words.append(data[pos:space].decode('utf-8'))
    except UnicodeDecodeError:
      raise VectorFileError(f'{path}: word {i + 1} is not valid UTF-8') from None
    vectors[i] = np.frombuffer(data, dtype='<f4', count=d, offset=space + 1)
    pos = space + 1 + nbytes
  return Embeddings(words, vectors)


def load_npz(path: str | os.PathLike) -> Embeddings:
  """Reads a file written by save_npz (allow_pickle stays False)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VectorFileError(f'{path}: no such file')
  try:
    with np.load(path, allow_pickle=False) as z:
      return Embeddings([str(w) for w in z['words']], z['vectors'])
  except (KeyError, ValueError, OSError) as e:
    raise VectorFileError(f'{path}: not a w2v_numpy .npz file ({e})') from None


def load(path: str | os.PathLike) -> Embeddings:
  """Loads by extension: .npz, .bin (binary), anything else word2vec text."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  if suffix == '.npz':
    return load_npz(path)
  if suffix == '.bin':
    return load_binary(path)
  return load_text(path)


def save(emb: Embeddings, path: str | os.PathLike) -> None:
  """Saves by extension: .npz, .bin (binary), anything else word2vec text."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  {'.npz': save_npz, '.bin': save_binary}.get(suffix, save_text)(emb, path)
