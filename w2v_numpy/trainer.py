"""SGNS training loop: vectorized minibatches of center words, optional Hogwild processes.

Each epoch's subsampled token stream is cut into `batch / CHUNK` lanes (`lanes`), and a
minibatch takes one group of CHUNK consecutive centers from every lane, so the centers of one
update lie far apart in the corpus (as word2vec.c's threads do); with B consecutive centers
instead, a rare word repeated within a passage took several updates from one stale vector,
which cost rare-word similarity (w2v_numpy/README.md). Every SHARE consecutive centers share
one draw of K negatives, and a group's scores are one small matrix product
(`sgns.banded_loss_and_grads`); the gradients go back into the parameter matrix by
`_BatchTrainer._scatter_add`.
"""
import dataclasses
import multiprocessing
import os
import queue as queue_lib
import sys
import time
from multiprocessing import shared_memory
from typing import Callable, TextIO

import numpy as np

from w2v_numpy import sampling
from w2v_numpy import sgns
from w2v_numpy.corpus import Corpus, token_blocks


@dataclasses.dataclass
class TrainConfig:
  """Hyperparameters (names and defaults as in gensim's Word2Vec, skip-gram)."""
  dim: int = 100
  window: int = 5
  negative: int = 5
  sample: float = 1e-3
  epochs: int = 5
  alpha: float = 0.025
  min_alpha: float = 0.0001
  batch: int = 512        # centers per update: one group of CHUNK (8) from each of max(1, batch // 8) lanes
  seed: int = 0
  workers: int = 1        # >1: Hogwild processes on shared-memory matrices
  ns_exponent: float = 0.75

  def validate(self) -> None:
    for name in ('dim', 'window', 'negative', 'epochs', 'batch', 'workers'):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if not self.alpha > 0 or self.min_alpha < 0 or self.min_alpha > self.alpha:
      raise ValueError(f'need 0 <= min_alpha <= alpha and alpha > 0, got alpha={self.alpha}, '
                       f'min_alpha={self.min_alpha}')
    if self.sample < 0:
      raise ValueError(f'sample must be >= 0, got {self.sample}')


@dataclasses.dataclass
class TrainResult:
  """Trained input vectors (the embeddings), output vectors and the loss curve."""
  words: list[str]
  vectors: np.ndarray          # V x d float32 (syn0)
  output_vectors: np.ndarray   # V x d float32 (syn1neg)
  loss_history: list[tuple[float, float]]  # (epochs done, mean loss per pair)
  words_per_second: float      # raw corpus words x epochs / training seconds
  seconds: float


# Consecutive centers of one lane per update, scored together in one BLAS product by
# `sgns.banded_loss_and_grads`: the group's CHUNK + 2W input rows are gathered and scattered once.
CHUNK = 8
# Consecutive centers sharing one draw of K negatives (CHUNK / SHARE draws per group). Sharing by 8
# is faster still but its scores vary more across seeds (w2v_numpy/README.md).
SHARE = 4


def negatives_per_group(negative: int) -> int:
  """Output rows a group draws: one draw of `negative` per SHARE of its CHUNK centers."""
  return -(-CHUNK // min(SHARE, CHUNK)) * negative


class _BatchTrainer:
  """Holds the per-run constants and applies one minibatch update in place."""

  def __init__(self, params: np.ndarray, vocab_size: int, config: TrainConfig,
               sampler: sampling.AliasSampler):
    self.params = params
    self.flat_pairs = params.view(np.complex64).reshape(-1)
    self.pairs_per_row = params.shape[1] // 2
    self.syn0 = params[:vocab_size]
    self.syn1 = params[vocab_size:]
    self.vocab_size = vocab_size
    self.cfg = config
    self.sampler = sampler
    w = config.window
    # Distance of band row r from chunk center i (`sgns.band_pair_mask` layout); the center
    # itself gets W + 1 so that no reduced window b <= W takes it.
    offset = np.arange(CHUNK + 2 * w)[:, None] - np.arange(CHUNK)[None, :] - w
    self.band_distance = np.where(offset == 0, w + 1, np.abs(offset)).astype(np.int32)
    self.pair_range = np.arange(self.pairs_per_row, dtype=np.intp)
    # A group's negatives: CHUNK / SHARE draws of K; center i uses draw i // SHARE only.
    self.negatives = negatives_per_group(config.negative)
    self.uses_draw_MxN = (np.arange(CHUNK)[:, None] // min(SHARE, CHUNK)
                          == np.arange(self.negatives)[None, :] // config.negative)

  def step(self, ids_GxR: np.ndarray, sid_GxR: np.ndarray, n_valid: int, lr: float,
           rng: np.random.Generator) -> tuple[float, int]:
    """Trains G groups of CHUNK consecutive centers; returns (loss, pairs).

    Row g holds the R = CHUNK + 2W corpus positions of group g (its centers are positions
    W .. W + CHUNK - 1, with their W neighbours each side) and their sentence ids; only the
    first `n_valid` centers (group-major) are trained, the rest get an empty window.
    """
    w, width = self.cfg.window, self.params.shape[1]
    groups = ids_GxR.shape[0]
    n = groups * CHUNK
    # Pair mask in band form: same sentence, inside the reduced window b ~ U{1..W}, not the center.
    reduced = np.zeros(n, dtype=np.int32)
    reduced[:n_valid] = rng.integers(1, w + 1, size=n_valid, dtype=np.int32)
    pair_band = ((sid_GxR[:, :, None] == sid_GxR[:, None, w:w + CHUNK])
                 & (self.band_distance <= reduced.reshape(groups, 1, CHUNK)))
    # Output rows of group g: its CHUNK center words, then its draws of K negatives, each shared
    # by the pairs of SHARE consecutive centers.
    out_ids_GxQ = np.empty((groups, CHUNK + self.negatives), dtype=np.int32)
    out_ids_GxQ[:, :CHUNK] = ids_GxR[:, w:w + CHUNK]
    out_ids_GxQ[:, CHUNK:] = self.sampler.draw(rng, (groups, self.negatives))
    neg_ok_GxMxK = ((out_ids_GxQ[:, None, CHUNK:] != out_ids_GxQ[:, :CHUNK, None])
                    & self.uses_draw_MxN)

    v_GxRxd = np.take(self.syn0, ids_GxR, axis=0)
    u_GxQxd = np.take(self.syn1, out_ids_GxQ, axis=0)
    loss, pairs, d_v, d_u = sgns.banded_loss_and_grads(
        v_GxRxd, u_GxQxd, pair_band, neg_ok_GxMxK, scale=-lr)
    self._scatter_add(ids_GxR.reshape(-1), d_v.reshape(-1, width))
    self._scatter_add(out_ids_GxQ.reshape(-1) + self.vocab_size, d_u.reshape(-1, width))
    return loss, pairs

  def _scatter_add(self, rows: np.ndarray, values: np.ndarray) -> None:
    """params[rows] += values, accumulating repeated rows.

    The first occurrence of every row goes in with one fancy-indexed `+=` (correct because those
    rows are distinct, and ~3x cheaper per element than `np.add.at`); only the repeats (frequent
    words: about 29% of a batch's input rows and 18% of its output rows) take the flat `np.add.at`.
    Hogwild workers use `np.add.at` for all rows: it adds in place, where `+=` gathers the rows
    and writes them back later, over other workers' updates.
    """
    if self.cfg.workers > 1:   # Hogwild: a gather-add-write `+=` would expose rows to lost updates
      self._add_at(rows, values)
      return
    order = np.argsort(rows)   # any order within a row's group will do
    sorted_rows = rows[order]
    first = np.empty(len(rows), dtype=bool)
    first[:1] = True
    np.not_equal(sorted_rows[1:], sorted_rows[:-1], out=first[1:])
    firsts, repeats = order[first], order[~first]
    self.params[sorted_rows[first]] += np.take(values, firsts, axis=0)
    if len(repeats):
      self._add_at(rows[repeats], np.take(values, repeats, axis=0))

  def _add_at(self, rows: np.ndarray, values: np.ndarray) -> None:
    """params[rows] += values in place with one flat `np.add.at` over (re, im) float pairs."""
    flat_idx = rows.astype(np.intp)[:, None] * self.pairs_per_row + self.pair_range
    pairs = np.ascontiguousarray(values).view(np.complex64)
    np.add.at(self.flat_pairs, flat_idx.reshape(-1), pairs.reshape(-1))


def _learning_rate(cfg: TrainConfig, progress: float) -> float:
  return cfg.alpha - (cfg.alpha - cfg.min_alpha) * min(progress, 1.0)


def lanes(tokens: np.ndarray, sentence_starts: np.ndarray, keep: np.ndarray, count: int,
          window: int) -> tuple[np.ndarray, np.ndarray, int, int]:
  """Cuts the kept tokens of a stream into `count` lanes of equal length (a multiple of CHUNK)
  for batches that take one group of CHUNK centers from each lane: centers of one batch then lie
  far apart in the corpus, as the threads of word2vec.c do, and a word repeated within a passage
  (rare words are bursty) is not updated several times from the same stale vector.

  `sentence_starts` are the offsets into `tokens` of its sentences (plus len(tokens)); `keep`
  is this epoch's subsampling mask. Returns (ids_LxS, sids_LxS, lane length, kept tokens): lane
  l is kept-stream positions [l * length, (l + 1) * length) with `window` neighbours each side
  (S = length + 2 window), and sids are sentence numbers (>= 0); positions past the stream's end are
  padding (id 0, a sentence id of its own). 8 bytes a kept token, filled in blocks.
  """
  n = int(np.count_nonzero(keep))
  length = -(-max(n, 1) // (count * CHUNK)) * CHUNK
  total = count * length + 2 * window
  padded_ids = np.zeros(total, dtype=np.int32)
  padded_sid = np.full(total, -1, dtype=np.int32)
  pos = window
  for b in token_blocks(len(tokens)):
    kept_at = np.flatnonzero(keep[b])
    padded_ids[pos:pos + len(kept_at)] = tokens[b][kept_at]
    padded_sid[pos:pos + len(kept_at)] = np.searchsorted(sentence_starts, kept_at + b.start, side='right')
    pos += len(kept_at)
  padded_sid[window + n:] = -2
  item = padded_ids.itemsize
  view = lambda a: np.lib.stride_tricks.as_strided(
      a, shape=(count, length + 2 * window), strides=(length * item, item), writeable=False)
  return view(padded_ids), view(padded_sid), length, n


def _run_epochs(trainer: _BatchTrainer, corpus_tokens: np.ndarray, sentence_starts: np.ndarray,
                keep_prob: np.ndarray, cfg: TrainConfig, rng: np.random.Generator,
                part: tuple[int, int], report: Callable[[float, float, int, float], None]
                ) -> None:
  """Runs all epochs over the token range `part` (cut at sentence starts); calls
  report(progress, loss, pairs, lr)."""
  w = cfg.window
  lo, hi = part
  tokens = corpus_tokens[lo:hi]
  starts = sentence_starts[(sentence_starts >= lo) & (sentence_starts <= hi)] - lo
  count = max(1, cfg.batch // CHUNK)
  for epoch in range(cfg.epochs):
    keep = sampling.subsample(tokens, keep_prob, rng)
    ids_LxS, sid_LxS, length, n_kept = lanes(tokens, starts, keep, count, w)
    del keep
    # Lane l's t-th group is stream position l * length + t: the valid centers of a step are
    # those of the lanes that have not run past the stream's end.
    for start in range(0, length, CHUNK):
      live = min(count, max(0, (n_kept - start + length - 1) // length))
      if live == 0:
        break
      n_valid = (live - 1) * CHUNK + min(CHUNK, n_kept - (live - 1) * length - start)
      progress = (epoch + start / length) / cfg.epochs
      lr = _learning_rate(cfg, progress)
      loss, pairs = trainer.step(ids_LxS[:live, start:start + CHUNK + 2 * w],
                                 sid_LxS[:live, start:start + CHUNK + 2 * w], n_valid,
                                 np.float32(lr), rng)
      report((epoch + (start + CHUNK) / length) / cfg.epochs, loss, pairs, lr)
    if n_kept == 0:
      report((epoch + 1) / cfg.epochs, 0.0, 0, _learning_rate(cfg, (epoch + 1) / cfg.epochs))


class _Progress:
  """Accumulates the loss: a history point every `points_per_epoch`-th of an epoch, and a
  progress line (epoch, words/s, loss, alpha, ETA) every `every_seconds`."""

  def __init__(self, cfg: TrainConfig, total_words: int, stream: TextIO | None,
               every_seconds: float, points_per_epoch: int = 20):
    self.cfg, self.total_words, self.stream = cfg, total_words, stream
    self.every = every_seconds
    self.step = 1.0 / (points_per_epoch * cfg.epochs)
    self.start = self.last_print = time.perf_counter()
    self.history: list[tuple[float, float]] = []
    self.hist_loss, self.hist_pairs, self.next_point = 0.0, 0, self.step
    self.print_loss, self.print_pairs = 0.0, 0
    self.progress, self.lr = 0.0, cfg.alpha

  def __call__(self, progress: float, loss: float, pairs: int, lr: float) -> None:
    self.hist_loss += loss
    self.hist_pairs += pairs
    self.print_loss += loss
    self.print_pairs += pairs
    self.progress, self.lr = progress, lr
    if progress >= self.next_point - 1e-9:
      self._point()
      self.next_point = (int(progress / self.step + 1e-9) + 1) * self.step
    now = time.perf_counter()
    if now - self.last_print >= self.every:
      self._print(now)

  def _point(self) -> None:
    if self.hist_pairs:
      self.history.append((self.progress * self.cfg.epochs, self.hist_loss / self.hist_pairs))
    self.hist_loss, self.hist_pairs = 0.0, 0

  def _print(self, now: float) -> None:
    self.last_print = now
    if self.stream is None or self.print_pairs == 0:
      return
    mean_loss = self.print_loss / self.print_pairs
    self.print_loss, self.print_pairs = 0.0, 0
    elapsed = now - self.start
    rate = self.progress * self.cfg.epochs * self.total_words / max(elapsed, 1e-9)
    eta = (1 - self.progress) * elapsed / max(self.progress, 1e-9)
    print(f'epoch {self.progress * self.cfg.epochs:6.2f}/{self.cfg.epochs}  '
          f'{rate / 1e3:8.1f}K words/s  loss {mean_loss:.4f}  alpha {self.lr:.5f}  '
          f'ETA {eta:6.1f}s', file=self.stream, flush=True)

  def finish(self) -> None:
    self._point()
    self._print(time.perf_counter())


def memory_needed(vocab_size: int, config: TrainConfig) -> int:
  """Bytes a run holds at its peak: the 2V x d parameter matrix, the two V x d result copies
  and, per worker, one minibatch's gathered rows, gradients and scatter copies (a little over)."""
  width = config.dim + config.dim % 2
  params = 2 * vocab_size * width * 4
  results = 2 * vocab_size * config.dim * 4
  groups = max(1, config.batch // CHUNK)   # each: R input rows and Q output rows, 3 copies of each
  out_rows = CHUNK + negatives_per_group(config.negative)
  rows_per_batch = 3 * groups * ((CHUNK + 2 * config.window) + out_rows)
  return params + results + config.workers * rows_per_batch * width * 4


def available_memory() -> int | None:
  """Bytes this process may still allocate: MemAvailable, or the cgroup's limit if lower; None if unknown."""
  limits = []
  try:
    with open('/proc/meminfo', encoding='ascii') as f:
      limits += [int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable:')]
  except OSError:
    pass
  try:
    with open('/sys/fs/cgroup/memory.max', encoding='ascii') as f:
      limit = f.read().strip()
    with open('/sys/fs/cgroup/memory.current', encoding='ascii') as f:
      current = int(f.read().strip())
    if limit.isdigit():
      limits.append(int(limit) - current)
  except (OSError, ValueError):
    pass
  return min(limits) if limits else None


def check_memory(vocab_size: int, config: TrainConfig) -> None:
  """Raises MemoryError, with the figures, when the run's matrices cannot fit in memory."""
  needed, available = memory_needed(vocab_size, config), available_memory()
  if available is not None and needed > available:
    raise MemoryError(
        f'dim {config.dim} with a vocabulary of {vocab_size:,} words needs about {needed / 2**30:.1f} GiB '
        f'(parameters, result copies and {config.workers} worker(s) of batch {config.batch}) but '
        f'{available / 2**30:.1f} GiB are available; use a smaller --dim, --max-vocab or --batch')


def init_params(vocab_size: int, dim: int, rng: np.random.Generator) -> np.ndarray:
  """(2V) x (d rounded up to even) float32.

  Rows [0, V) are the input vectors ~ U(-0.5, 0.5) / d, rows [V, 2V) the output vectors (zeros);
  a padding column (odd d) is zero and gets zero gradients, so it never changes a score.
  """
  params = np.zeros((2 * vocab_size, dim + dim % 2), dtype=np.float32)
  params[:vocab_size, :dim] = (rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / dim
  return params


def train(corpus: Corpus, config: TrainConfig, log: TextIO | None | str = 'stdout',
          log_every_seconds: float = 2.0) -> TrainResult:
  """Trains SGNS vectors on `corpus`; all randomness comes from np.random.default_rng(seed).

  Progress lines go to `log` ('stdout': the current sys.stdout; None: silent). With
  workers > 1 the result depends on process timing and is not reproducible.
  """
  config.validate()
  if log == 'stdout':
    log = sys.stdout
  rng = np.random.default_rng(config.seed)
  vocab_size = corpus.vocab_size
  check_memory(vocab_size, config)
  params = init_params(vocab_size, config.dim, rng)
  keep_prob = sampling.keep_probabilities(corpus.counts, config.sample)
  sampler = sampling.AliasSampler(sampling.noise_distribution(corpus.counts, config.ns_exponent))
  total_words = corpus.raw_token_count
  progress = _Progress(config, total_words, log, log_every_seconds)
  start = time.perf_counter()
  if config.workers == 1:
    trainer = _BatchTrainer(params, vocab_size, config, sampler)
    _run_epochs(trainer, corpus.tokens, corpus.sentence_starts, keep_prob, config, rng,
                (0, len(corpus.tokens)), progress)
  else:
    _train_hogwild(params, corpus, keep_prob, sampler, config, rng, progress)
  seconds = time.perf_counter() - start
  progress.finish()
  return TrainResult(
      words=list(corpus.words), vectors=params[:vocab_size, :config.dim].copy(),
      output_vectors=params[vocab_size:, :config.dim].copy(), loss_history=progress.history,
      words_per_second=total_words * config.epochs / max(seconds, 1e-9), seconds=seconds)


# ----------------------------------------------------------------------------- Hogwild

_THREAD_VARS = ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')


def _split_points(sentence_starts: np.ndarray, parts: int) -> list[tuple[int, int]]:
  """Cuts [0, n_tokens) into `parts` ranges of about equal size at sentence starts."""
  n = int(sentence_starts[-1])
  cuts = [0]
  for i in range(1, parts):
    j = int(np.searchsorted(sentence_starts, i * n / parts))
    cuts.append(int(sentence_starts[min(j, len(sentence_starts) - 1)]))
  cuts.append(n)
  cuts = sorted(set(cuts))
  return list(zip(cuts[:-1], cuts[1:]))


def _worker(shm_names: dict[str, str], shapes: dict[str, tuple], dtypes: dict[str, str],
            vocab_size: int, config: TrainConfig, noise: np.ndarray, keep_prob: np.ndarray,
            part: tuple[int, int], seed_seq: np.random.SeedSequence, worker_id: int,
            queue) -> None:
  """One Hogwild process: trains its corpus part on the shared parameter matrix."""
  blocks = {k: shared_memory.SharedMemory(name=v) for k, v in shm_names.items()}
  try:
    arrays = {k: np.ndarray(shapes[k], dtype=dtypes[k], buffer=blocks[k].buf) for k in blocks}
    sampler = sampling.AliasSampler(noise)
    trainer = _BatchTrainer(arrays['params'], vocab_size, config, sampler)
    rng = np.random.default_rng(seed_seq)
    pending = [0.0, 0, 0.0, 0.0]
    last = [time.perf_counter()]

    def report(progress, loss, pairs, lr):
      pending[0] += loss
      pending[1] += pairs
      pending[2], pending[3] = progress, lr
      now = time.perf_counter()
      if now - last[0] > 0.5 or progress >= 1.0:
        queue.put((worker_id, *pending))
        pending[0], pending[1] = 0.0, 0
        last[0] = now

    _run_epochs(trainer, arrays['tokens'], arrays['starts'], keep_prob, config, rng, part, report)
    queue.put((worker_id, *pending))
    queue.put(None)
    del arrays, trainer
  finally:
    for b in blocks.values():
      b.close()


def _train_hogwild(params: np.ndarray, corpus: Corpus, keep_prob: np.ndarray,
                   sampler: sampling.AliasSampler, config: TrainConfig, rng: np.random.Generator,
                   progress: _Progress) -> None:
  """Runs `workers` processes over disjoint corpus parts, all updating one shared matrix."""
  sources = {'params': params, 'tokens': corpus.tokens, 'starts': corpus.sentence_starts}
  blocks = {}
  try:
    for key, arr in sources.items():
      blocks[key] = shared_memory.SharedMemory(create=True, size=max(arr.nbytes, 1))
      np.ndarray(arr.shape, dtype=arr.dtype, buffer=blocks[key].buf)[...] = arr
    parts = _split_points(corpus.sentence_starts, config.workers)
    seeds = np.random.SeedSequence(int(rng.integers(2**63))).spawn(len(parts))
    # fork starts in milliseconds; spawn (other platforms) re-imports NumPy in each worker.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context('fork' if 'fork' in methods else 'spawn')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(
        {k: b.name for k, b in blocks.items()}, {k: a.shape for k, a in sources.items()},
        {k: a.dtype.str for k, a in sources.items()}, corpus.vocab_size, config,
        sampler.probs, keep_prob, part, seed, i, queue), daemon=True)
             for i, (part, seed) in enumerate(zip(parts, seeds))]
    # One BLAS thread per worker: the workers already fill the cores.
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: '1' for k in _THREAD_VARS})
    try:
      for p in procs:
        p.start()
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
    done, worker_progress = 0, [0.0] * len(procs)
    sizes = np.array([b - a for a, b in parts], dtype=np.float64)
    while done < len(procs):
      try:
        msg = queue.get(timeout=1.0)
      except queue_lib.Empty:
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
          raise RuntimeError(f'a Hogwild worker failed (exit code {dead[0]})') from None
        continue
      if msg is None:
        done += 1
        continue
      worker_id, loss, pairs, prog, lr = msg
      worker_progress[worker_id] = prog
      overall = float(np.dot(worker_progress, sizes) / sizes.sum())
      progress(overall, loss, pairs, lr)
    for p in procs:
      p.join()
      if p.exitcode != 0:
        raise RuntimeError(f'Hogwild worker exited with code {p.exitcode}')
    view = np.ndarray(params.shape, dtype=params.dtype, buffer=blocks['params'].buf)
    params[...] = view
    del view
  finally:
    for b in blocks.values():
      b.close()
      b.unlink()

