"""Word vectors with cosine queries, analogy accuracy (3CosAdd) and word-pair Spearman."""
import dataclasses
import os

import numpy as np


class EvalFileError(ValueError):
  """An evaluation file is missing or malformed (message names file and line)."""


@dataclasses.dataclass
class Embeddings:
  """Words (most frequent first, as written by training) and their float32 vectors."""
  words: list[str]
  vectors: np.ndarray

  def __post_init__(self):
    self.vectors = np.asarray(self.vectors, dtype=np.float32)
    if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
      raise ValueError(f'vectors of shape {self.vectors.shape} do not match '
                       f'{len(self.words)} words')
    self.index = {}
    for i, w in enumerate(self.words):
      self.index.setdefault(w, i)
    self._unit = None

  @property
  def unit(self) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    if self._unit is None:
      norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
      self._unit = self.vectors / np.maximum(norms, 1e-12)
    return self._unit

  def __contains__(self, word: str) -> bool:
    return word in self.index

  def __getitem__(self, word: str) -> np.ndarray:
    return self.vectors[self.index[word]]

  def similarity(self, a: str, b: str) -> float:
    return float(self.unit[self.index[a]] @ self.unit[self.index[b]])

  def most_similar(self, positive: list[str] | str, negative: list[str] | tuple = (),
                   topn: int = 10, restrict_vocab: int | None = None
                   ) -> list[tuple[str, float]]:
    """Nearest words by cosine to sum(unit(positive)) - sum(unit(negative)) (3CosAdd); the
    query words themselves are excluded."""
    if isinstance(positive, str):
      positive = [positive]
    missing = [w for w in (*positive, *negative) if w not in self.index]
    if missing:
      raise KeyError(f'not in vocabulary: {missing}')
    query = (sum(self.unit[self.index[w]] for w in positive)
             - sum((self.unit[self.index[w]] for w in negative), np.zeros_like(self.unit[0])))
    query = query / max(np.linalg.norm(query), 1e-12)
    limit = len(self.words) if restrict_vocab is None else min(restrict_vocab, len(self.words))
    sims = self.unit[:limit] @ query
    for w in (*positive, *negative):
      if self.index[w] < limit:
        sims[self.index[w]] = -np.inf
    top = np.argsort(-sims)[:topn]
    return [(self.words[i], float(sims[i])) for i in top if np.isfinite(sims[i])]


def _lines(path: str | os.PathLike):
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise EvalFileError(f'{path}: no such file')
  try:
    with open(path, encoding='utf-8') as f:
      yield from enumerate(f, start=1)
  except UnicodeDecodeError as e:
    raise EvalFileError(f'{path}: not valid UTF-8 ({e.reason})') from None


def analogy_accuracy(emb: Embeddings, path: str | os.PathLike, restrict_vocab: int = 30000,
                     batch: int = 512) -> dict:
  """3CosAdd accuracy on questions-words.txt (`: section` lines, then `a b c d`).

  As gensim's evaluate_word_analogies: words compared case-insensitively, only the
  `restrict_vocab` most frequent words are candidates, questions with a word outside them
  are skipped, and a, b, c are never answers. Returns {'accuracy', 'correct', 'total',
  'skipped', 'sections': {name: (correct, total)}}.
  """
  limit = min(restrict_vocab, len(emb.words))
  lower_index = {}
  for i, w in enumerate(emb.words[:limit]):
    lower_index.setdefault(w.lower(), i)
  questions, sections, skipped = [], [], 0
  section = None
  for line_no, line in _lines(path):
    line = line.strip()
    if not line:
      continue
    if line.startswith(':'):
      section = line[1:].strip()
      continue
    parts = line.lower().split()
    if len(parts) != 4:
      raise EvalFileError(f'{os.fspath(path)}:{line_no}: expected 4 words, got {line!r}')
    if section is None:
      raise EvalFileError(f'{os.fspath(path)}:{line_no}: question before any `: section` line')
    ids = [lower_index.get(p) for p in parts]
    if None in ids:
      skipped += 1
      continue
    questions.append(ids)
    sections.append(section)
  unit = emb.unit[:limit]
  q = np.array(questions, dtype=np.int64).reshape(-1, 4)
  correct_mask = np.zeros(len(q), dtype=bool)
  for s in range(0, len(q), batch):
    a, b, c, d = q[s:s + batch].T
    query = unit[b] - unit[a] + unit[c]
    query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    sims = query @ unit.T
    rows = np.arange(len(a))
    for col in (a, b, c):
      sims[rows, col] = -np.inf
    correct_mask[s:s + batch] = np.argmax(sims, axis=1) == d
  per_section: dict[str, tuple[int, int]] = {}
  for name, ok in zip(sections, correct_mask):
    c, t = per_section.get(name, (0, 0))
    per_section[name] = (c + int(ok), t + 1)
  total = len(q)
  n_correct = int(correct_mask.sum())
  return {'accuracy': n_correct / total if total else 0.0, 'correct': n_correct,
          'total': total, 'skipped': skipped, 'sections': per_section}


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their mean rank."""
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  ranks = np.empty(len(x), dtype=np.float64)
  boundaries = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])
  for lo, hi in zip(boundaries[:-1], boundaries[1:]):
    ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman rank correlation (Pearson correlation of average ranks)."""
  rx, ry = _average_ranks(np.asarray(x, float)), _average_ranks(np.asarray(y, float))
  rx -= rx.mean()
  ry -= ry.mean()
  denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
  return float((rx * ry).sum() / denom) if denom > 0 else float('nan')


def read_word_pairs(path: str | os.PathLike) -> list[tuple[str, str, float]]:
  """(w1, w2, score) of every `w1 w2 score` line (tab or space; '#' lines are comments), words
  lower-cased; a malformed line raises EvalFileError naming the file and line."""
  pairs = []
  for line_no, line in _lines(path):
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    parts = line.split('\t') if '\t' in line else line.split()
    if len(parts) < 3:
      raise EvalFileError(f'{os.fspath(path)}:{line_no}: expected `w1 w2 score`, got {line!r}')
    try:
      score = float(parts[2])
    except ValueError:
      raise EvalFileError(
          f'{os.fspath(path)}:{line_no}: score {parts[2]!r} is not a number') from None
    pairs.append((parts[0].strip().lower(), parts[1].strip().lower(), score))
  return pairs


def pairs_spearman(emb: Embeddings, pairs: list[tuple[str, str, float]]) -> dict:
  """Spearman correlation of cosine vs human score over `pairs`; pairs with a word the vectors
  lack are skipped (as gensim's evaluate_word_pairs; case-insensitive). Returns {'spearman',
  'pairs', 'skipped'}."""
  lower_index = {}
  for i, w in enumerate(emb.words):
    lower_index.setdefault(w.lower(), i)
  sims, gold, skipped = [], [], 0
  for w1, w2, score in pairs:
    a, b = lower_index.get(w1.lower()), lower_index.get(w2.lower())
    if a is None or b is None:
      skipped += 1
      continue
    sims.append(float(emb.unit[a] @ emb.unit[b]))
    gold.append(score)
  rho = spearman(np.array(sims), np.array(gold)) if len(sims) >= 2 else float('nan')
  return {'spearman': rho, 'pairs': len(sims), 'skipped': skipped}


def word_pairs_spearman(emb: Embeddings, path: str | os.PathLike) -> dict:
  """Spearman correlation of cosine vs human score on a `w1 w2 score` file (`read_word_pairs`,
  `pairs_spearman`). Returns {'spearman', 'pairs', 'skipped'}."""
  return pairs_spearman(emb, read_word_pairs(path))


def rare_word_pairs(paths: list[str | os.PathLike], counts: dict[str, int], below: int,
                    ) -> list[tuple[str, str, float]]:
  """The pairs of several `w1 w2 score` files whose two words both occur, but fewer than
  `below` times, in a corpus (`counts`: word -> corpus count; words differing only in case are
  summed), pooled into one rare-word set in the spirit of Stanford RW.

  Files score on different scales (WordSim 0-10, MEN 0-50), so each pair's score becomes its
  percentile rank inside its own file before pooling; Spearman within a file is unchanged.
  """
  lower_counts: dict[str, int] = {}
  for word, count in counts.items():
    lower_counts[word.lower()] = lower_counts.get(word.lower(), 0) + int(count)
  counts = lower_counts
  pooled = []
  for path in paths:
    pairs = read_word_pairs(path)
    ranks = _average_ranks(np.array([score for _, _, score in pairs])) / max(len(pairs), 1)
    pooled += [(w1, w2, float(rank)) for (w1, w2, _), rank in zip(pairs, ranks)
               if 0 < counts.get(w1, 0) < below and 0 < counts.get(w2, 0) < below]
  return pooled
