"""Sudoku data pipeline: sources, deduplicated splits, caching, training batches.

The trainer calls `build_splits(config.data, workdir)` once and
`train_batch(splits.train, config.data, step, batch_size, ...)` every step;
a batch is a pure function of (seed, step, process index), so a restored run
sees exactly the batches an uninterrupted one would.
"""
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import tempfile
import zipfile

from absl import logging
import numpy as np

from data import paths
from data import sudoku_grids
from data.errors import DataConfigError, InputError, MissingInputError

PuzzleSet = sudoku_grids.PuzzleSet
CACHE_VERSION = 1  # bump when the way splits are built changes
_HF_COLUMNS = ('source', 'question', 'answer', 'rating')  # sapientinc/sudoku-extreme's CSV header
_HF_SPLIT_MARGIN = 1.1  # rows drawn from a big HF split per row needed (duplicates are dropped)


@dataclasses.dataclass
class SudokuSplits:
  """Train/val/test sets plus extra held-out test sets, no symmetry class in two splits."""
  size: int
  train: PuzzleSet
  val: PuzzleSet
  test: PuzzleSet
  extra_tests: dict[str, PuzzleSet] = dataclasses.field(default_factory=dict)

  def summary(self) -> str:
    parts = [f'train={len(self.train)}', f'val={len(self.val)}', f'test={len(self.test)}']
    parts += [f'{name}={len(s)}' for name, s in self.extra_tests.items()]
    return f'{self.size}x{self.size} sudoku: ' + ' '.join(parts)


def _names(text: str) -> list[str]:
  return [t.strip() for t in str(text).split(',') if t.strip()]


def parse_eval_givens(text: str) -> list[int]:
  """'45,36,30' -> [45, 36, 30]; '' -> []."""
  try:
    return [int(t) for t in _names(text)]
  except ValueError as e:
    raise DataConfigError(f'data.eval_givens must be comma-separated integers, got {text!r}') from e


# ----------------------------------------------------------------------------
# Sources. Each returns a list of (name, PuzzleSet); a set named 'test:*' is a
# test-only pool (the HF dataset's own test split).


def shared_sudoku_dir(data_cfg) -> pathlib.Path:
  """data_cfg.shared_dir, else <shared data>/sudoku."""
  if data_cfg.shared_dir:
    return pathlib.Path(data_cfg.shared_dir).expanduser()
  return paths.shared_data_dir() / 'sudoku'


def _shared_files(data_cfg) -> list[pathlib.Path]:
  folder = shared_sudoku_dir(data_cfg)
  names = _names(data_cfg.shared_files)
  if not names:
    raise DataConfigError('data.source=shared needs data.shared_files (comma-separated CSV names)')
  files = []
  for name in names:
    path = folder / name
    if not path.suffix:
      path = path.with_suffix('.csv')
    if not path.is_file():
      raise MissingInputError(f'shared puzzle file {path} not found (data.shared_dir={data_cfg.shared_dir!r}; '
                              f'set it or ${paths.ENV_VAR})')
    files.append(path)
  return files


def load_hf_sudoku(name: str, data_files=None, size: int = 9, max_rows: dict[str, int] | None = None,
                   seed: int = 0, cache_dir: str | None = None) -> dict[str, PuzzleSet]:
  """Loads a HF dataset in the sapientinc/sudoku-extreme layout, one PuzzleSet per split.

  name: hub id (e.g. 'sapientinc/sudoku-extreme'); data_files: when given,
  reads local CSV files in the same layout through `load_dataset('csv', ...)`
  instead (tests; offline copies). Columns: `question` and `answer` (or
  `puzzle`, `solution`). max_rows[split]: draw at most this many rows of that
  split at random (seeded) before parsing, so a small training set does not
  parse millions of rows. cache_dir: the `datasets` cache (None = its default).
  Bad rows raise SudokuFormatError naming the split and CSV line.
  """
  import datasets  # pylint: disable=g-import-not-at-top  (heavy; only this source needs it)
  # Read every column as text: type inference would turn an 81-digit answer
  # (or a puzzle written with '0' blanks) into an overflowing integer.
  if data_files is not None:
    first = data_files
    while not isinstance(first, (str, os.PathLike)):
      first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    with open(first, encoding='utf-8') as f:
      columns = [c.strip() for c in f.readline().strip().split(',')]
    features = datasets.Features({c: datasets.Value('string') for c in columns})
    dataset = datasets.load_dataset('csv', data_files=data_files, cache_dir=cache_dir, features=features)
  else:
    features = datasets.Features({c: datasets.Value('string') for c in _HF_COLUMNS})
    try:
      dataset = datasets.load_dataset(name, cache_dir=cache_dir, features=features)
    except (ValueError, TypeError) as e:  # another column layout: let `datasets` infer it
      logging.warning('Loading %s with text columns %s failed (%s); inferring column types', name, _HF_COLUMNS, e)
      dataset = datasets.load_dataset(name, cache_dir=cache_dir)
  if isinstance(dataset, datasets.Dataset):
    dataset = {'train': dataset}
  out = {}
  for split, table in dataset.items():
    columns = table.column_names
    if 'question' in columns and 'answer' in columns:
      q_col, a_col = 'question', 'answer'
    elif 'puzzle' in columns and 'solution' in columns:
      q_col, a_col = 'puzzle', 'solution'
    else:
      raise sudoku_grids.SudokuFormatError(f'{name}[{split}]: expected columns question,answer (or puzzle,solution), '
                                     f'got {columns}')
    rows = np.arange(len(table))
    limit = (max_rows or {}).get(split)
    if limit is not None and limit < len(table):
      rng = np.random.default_rng([seed, len(out)])
      rows = np.sort(rng.choice(len(table), size=limit, replace=False))
      table = table.select(rows)
    questions = [str(q).strip() for q in table[q_col]]
    answers = [str(a).strip() or None if a is not None else None for a in table[a_col]]
    # Row r of the split is line r + 2 of a CSV with a header.
    out[split] = sudoku_grids.puzzles_from_strings(questions, answers, list(rows + 2), f'{name}[{split}]', size,
                                             name=f'{name}[{split}]')
  return out


def _load_source(data_cfg, total_needed: int | None) -> list[tuple[str, PuzzleSet]]:
  source = data_cfg.source
  size = int(data_cfg.size)
  if source == 'generate':
    if size == 4:
      return [('generated', _all_4x4(data_cfg))]
    if total_needed is None:
      raise DataConfigError('data.source=generate needs data.num_train > 0 (0 means "all", which is unbounded)')
    count = int(math.ceil(total_needed * 1.02)) + 16  # a few spare for (rare) duplicates
    lo, hi = int(data_cfg.givens_min), int(data_cfg.givens_max)
    if hi <= 0:
      raise DataConfigError('data.source=generate needs data.givens_max > 0 (target number of givens)')
    logging.info('Generating %d unique-solution %dx%d puzzles with %d..%d givens', count, size, size, lo, hi)
    return [('generated', sudoku_grids.generate_puzzles(count, size, lo, hi, int(data_cfg.seed)))]
  if source == 'shared':
    return [(p.stem, sudoku_grids.read_puzzle_file(p, size=size)) for p in _shared_files(data_cfg)]
  if source == 'file':
    if not data_cfg.train_file:
      raise DataConfigError('data.source=file needs data.train_file')
    path = pathlib.Path(data_cfg.train_file).expanduser()
    return [(path.stem, sudoku_grids.read_puzzle_file(path, size=size))]
  if source == 'hf':
    limits = None
    if total_needed is not None:
      train_rows = int((int(data_cfg.num_train) + int(data_cfg.num_val)) * _HF_SPLIT_MARGIN) + 64
      test_rows = int(int(data_cfg.num_test) * _HF_SPLIT_MARGIN) + 64
      limits = {'train': train_rows, 'test': test_rows}
    splits = load_hf_sudoku(data_cfg.hf_name, size=size, max_rows=limits, seed=int(data_cfg.seed))
    stem = data_cfg.hf_name.rstrip('/').split('/')[-1]
    return [(f'test:{stem}' if split == 'test' else f'{stem}_{split}', s) for split, s in splits.items()]
  raise DataConfigError(f"data.source must be 'generate', 'shared', 'file' or 'hf', got {source!r}")


def _all_4x4(data_cfg) -> PuzzleSet:
  """Every 4x4 puzzle class with givens in range, each shown as a random member."""
  classes = sudoku_grids.all_puzzle_classes(4)
  lo, hi = int(data_cfg.givens_min), int(data_cfg.givens_max)
  if hi <= 0:
    lo, hi = 0, 16
  givens = classes.num_givens()
  chosen = classes.subset((givens >= lo) & (givens <= hi))
  rng = np.random.default_rng([int(data_cfg.seed), 4])
  puzzles, solutions = sudoku_grids.augment(chosen.puzzles, chosen.solutions, rng, 4)
  return PuzzleSet(puzzles, solutions, 4, f'all 4x4 puzzle classes with {lo}..{hi} givens')


# ----------------------------------------------------------------------------
# Splitting.


def _cut(order: np.ndarray, group_N: np.ndarray, start: int, count: int | None) -> tuple[np.ndarray, int]:
  """Takes `count` puzzles (None = all) from order[start:], then skips the rest of the last group."""
  end = len(order) if count is None else min(len(order), start + count)
  stop = end
  if 0 < end < len(order):
    last = group_N[order[end - 1]]
    while stop < len(order) and group_N[order[stop]] == last:
      stop += 1
  return order[start:end], stop


def split_by_groups(group_keys: list[bytes], num_test: int, num_val: int, num_train: int,
                    seed: int, test_only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Index arrays (train, val, test); every group lands in one split only.

  Groups are shuffled deterministically (seed), then test, val and train take
  whole groups in that order (num_train = 0: all the rest). test_only marks
  puzzles that may only go to test (a dataset's own test split); a group with
  any such puzzle is a test group.
  """
  unique, group_N = np.unique(np.array(group_keys, dtype=object), return_inverse=True)
  group_N = group_N.astype(np.int64)
  rng = np.random.default_rng([seed, 17])
  rank_G = rng.permutation(len(unique))
  if test_only is not None and test_only.any():
    is_test_group = np.zeros(len(unique), bool)
    is_test_group[group_N[test_only]] = True
    rank_G = rank_G + np.where(is_test_group, 0, len(unique))  # test groups come first
  order = np.argsort(rank_G[group_N], kind='stable')
  if test_only is not None and test_only.any():
    test_pool = order[is_test_group[group_N[order]]]
    rest = order[~is_test_group[group_N[order]]]
    test, _ = _cut(test_pool, group_N, 0, num_test)
    val, stop = _cut(rest, group_N, 0, num_val)
    train, _ = _cut(rest, group_N, stop, num_train or None)
    return train, val, test
  test, stop = _cut(order, group_N, 0, num_test)
  val, stop = _cut(order, group_N, stop, num_val)
  train, _ = _cut(order, group_N, stop, num_train or None)
  return train, val, test


def _build(data_cfg) -> SudokuSplits:
  size = int(data_cfg.size)
  if size not in (4, 9):
    raise DataConfigError(f'data.size={size} must be 4 or 9 (4x4 or 9x9 Sudoku)')
  if data_cfg.split_by not in ('solution', 'puzzle'):
    raise DataConfigError(f"data.split_by must be 'solution' or 'puzzle', got {data_cfg.split_by!r}")
  if size == 4 and data_cfg.split_by == 'solution':
    raise DataConfigError("4x4 has only 2 essentially different solution grids, so splits by solution cannot be "
                     "disjoint: use data.split_by='puzzle'")
  num_train, num_val, num_test = int(data_cfg.num_train), int(data_cfg.num_val), int(data_cfg.num_test)
  if min(num_train, num_val, num_test) < 0:
    raise DataConfigError('data.num_train/num_val/num_test must be >= 0')
  total = num_train + num_val + num_test if num_train > 0 else None
  pools = _load_source(data_cfg, total)
  for name, pool in pools:
    if pool.size != size:
      raise InputError(f'source {name} holds {pool.size}x{pool.size} puzzles but data.size={size}')
  merged = sudoku_grids.concat([p for _, p in pools])
  origin_N = np.concatenate([np.full(len(p), k) for k, (_, p) in enumerate(pools)])
  test_only_N = np.concatenate([np.full(len(p), name.startswith('test:')) for name, p in pools])

  # Draw a random subset first when far fewer puzzles are needed than exist:
  # canonical forms of 9x9 grids cost about a millisecond each.
  if total is not None and len(merged) > 2 * total + 1000 and not test_only_N.any():
    rng = np.random.default_rng([int(data_cfg.seed), 3])
    keep = np.sort(rng.choice(len(merged), size=int(total * 1.2) + 500, replace=False))
    merged, origin_N, test_only_N = merged.subset(keep), origin_N[keep], test_only_N[keep]

  puzzle_keys = sudoku_grids.canonical_keys(merged.puzzles, size)
  _, first = np.unique(np.array(puzzle_keys, dtype=object), return_index=True)
  first = np.sort(first)
  if len(first) < len(merged):
    logging.info('Dropped %d duplicate puzzles (same up to symmetry)', len(merged) - len(first))
  merged, origin_N, test_only_N = merged.subset(first), origin_N[first], test_only_N[first]
  if data_cfg.split_by == 'solution':
    group_keys = sudoku_grids.canonical_keys(merged.solutions, size)
  else:
    group_keys = [puzzle_keys[k] for k in first]
  train_idx, val_idx, test_idx = split_by_groups(group_keys, num_test, num_val, num_train, int(data_cfg.seed),
                                                 test_only_N)
  hint = 'lower the sizes or widen the source'
  if data_cfg.source == 'generate' and size == 4:
    hint = (f'4x4 has only {len(merged)} puzzle classes (up to symmetry) with {data_cfg.givens_min}..'
            f'{data_cfg.givens_max} givens: widen givens_min..givens_max or lower the sizes '
            '(num_train=0 takes all the rest)')
  for name, want, got in (('test', num_test, len(test_idx)), ('val', num_val, len(val_idx)),
                          ('train', num_train, len(train_idx))):
    if got < want:
      raise InputError(f'data source has too few distinct puzzles: {name} got {got} of data.num_{name}={want} '
                       f'({len(merged)} distinct puzzles in all); {hint}')
  if num_train == 0 and not len(train_idx):
    raise InputError(f'no puzzles left for training ({len(merged)} distinct puzzles in all)')

  label = data_cfg.source
  splits = SudokuSplits(size, merged.subset(train_idx, f'{label}:train'), merged.subset(val_idx, f'{label}:val'),
                        merged.subset(test_idx, f'{label}:test'))
  val_givens = int(data_cfg.val_givens)
  if val_givens:  # Validate on the training distribution: val solutions with this many givens revealed.
    if not 0 < val_givens <= size * size:
      raise DataConfigError(f'data.val_givens={val_givens} is not in 1..{size * size}')
    rng = np.random.default_rng([int(data_cfg.seed), val_givens, 2000])
    puzzles, kept = sudoku_grids.reveal_unique(splits.val.solutions, val_givens, rng)
    splits.val = PuzzleSet(puzzles, splits.val.solutions[kept], size,
                           f'val solutions with {val_givens} givens revealed')
  # Each shared file's held-out part, when there are several files.
  names = [name for name, _ in pools]
  if data_cfg.source == 'shared' and len(names) > 1:
    for k, name in enumerate(names):
      part = test_idx[origin_N[test_idx] == k]
      if len(part):
        splits.extra_tests[name] = merged.subset(part, f'{name}:test')
  for givens in parse_eval_givens(data_cfg.eval_givens):
    if not 0 < givens <= size * size:
      raise DataConfigError(f'data.eval_givens entry {givens} is not in 1..{size * size}')
    rng = np.random.default_rng([int(data_cfg.seed), givens, 1000])
    puzzles, kept = sudoku_grids.reveal_unique(splits.test.solutions, givens, rng)
    if len(kept) < len(splits.test):
      logging.warning('givens%d: %d of %d test solutions gave no unique puzzle and were left out', givens,
                      len(splits.test) - len(kept), len(splits.test))
    splits.extra_tests[f'givens{givens}'] = PuzzleSet(puzzles, splits.test.solutions[kept], size,
                                                      f'test solutions with {givens} givens revealed')
  return splits


# ----------------------------------------------------------------------------
# Caching.


def _source_fingerprint(data_cfg) -> list:
  """Names, sizes and times of the input files, so an edited file invalidates the cache."""
  if data_cfg.source == 'shared':
    files = _shared_files(data_cfg)
  elif data_cfg.source == 'file' and data_cfg.train_file:
    files = [pathlib.Path(data_cfg.train_file).expanduser()]
  else:
    return []
  out = []
  for f in files:
    st = f.stat()
    out.append([str(f.resolve()), st.st_size, int(st.st_mtime)])
  return out


# Which data fields the split cache depends on. Every field of configs/sudoku.py's `data` section is in
# one of these three (tests/test_sudoku_pipeline.py checks), so a new field cannot be forgotten.
SPLIT_FIELDS = ('size', 'source', 'num_train', 'num_val', 'num_test', 'split_by', 'eval_givens', 'val_givens', 'seed')
# Fields that name the source: they enter the key for their source only (the files through their fingerprint).
SOURCE_FIELDS = {'generate': ('givens_min', 'givens_max'), 'hf': ('hf_name',),
                 'shared': ('shared_dir', 'shared_files'), 'file': ('train_file',)}
# Fields that change only the batches (or what --mode=eval reads), not the splits.
BATCH_FIELDS = ('on_the_fly', 'unique_reveal', 'curriculum_steps', 'augment', 'eval_file', 'givens_min',
                'givens_max')


def cache_key(data_cfg) -> str:
  """Hash of every config field that changes the splits (not those that only change batches)."""
  fields = {k: data_cfg[k] for k in SPLIT_FIELDS}
  if data_cfg.source in ('generate', 'hf'):
    fields.update({k: data_cfg[k] for k in SOURCE_FIELDS[data_cfg.source]})
  fields.update(version=CACHE_VERSION, files=_source_fingerprint(data_cfg))
  text = json.dumps(fields, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save(splits: SudokuSplits, path: pathlib.Path) -> None:
  arrays = {'size': np.array(splits.size)}
  sets = {'train': splits.train, 'val': splits.val, 'test': splits.test}
  sets.update({f'extra/{k}': v for k, v in splits.extra_tests.items()})
  meta = {}
  for name, s in sets.items():
    arrays[f'{name}/puzzles'] = s.puzzles
    arrays[f'{name}/solutions'] = s.solutions
    meta[name] = s.source
  arrays['meta'] = np.array(json.dumps(meta))
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.npz.tmp')
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)  # atomic: a killed run never leaves half a cache


def _load(path: pathlib.Path) -> SudokuSplits:
  with np.load(path) as z:
    size = int(z['size'])
    meta = json.loads(str(z['meta']))
    sets = {name: PuzzleSet(z[f'{name}/puzzles'], z[f'{name}/solutions'], size, source)
            for name, source in meta.items()}
  extra = {name[len('extra/'):]: s for name, s in sets.items() if name.startswith('extra/')}
  return SudokuSplits(size, sets['train'], sets['val'], sets['test'], extra)


def build_splits(data_cfg, cache_dir: str | None = None) -> SudokuSplits:
  """Loads the source, drops symmetric duplicates and splits train/val/test; cached in cache_dir.

  Deterministic from the config (data_cfg.seed). No symmetry class of the split
  key (the solution grid when data_cfg.split_by == 'solution', else the
  puzzle) is in two splits. extra_tests holds each shared file's held-out
  part (with several files) and 'givens<K>' sets made by revealing K cells of
  each test solution (data_cfg.eval_givens; unique solutions enforced).
  """
  path = None
  if cache_dir:
    path = pathlib.Path(cache_dir) / f'sudoku_splits_{cache_key(data_cfg)}.npz'
    if path.is_file():
      try:
        splits = _load(path)
      except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:  # Cut by a kill, or edited.
        logging.warning('split cache %s is unreadable (%s: %s); rebuilding it', path, type(e).__name__, e)
      else:
        logging.info('Loaded %s from cache %s', splits.summary(), path)
        return splits
  splits = _build(data_cfg)
  if path is not None:
    _save(splits, path)
    logging.info('Built %s; cached in %s', splits.summary(), path)
  else:
    logging.info('Built %s (no cache dir)', splits.summary())
  return splits


# ----------------------------------------------------------------------------
# Batches.


def curriculum_min_givens(data_cfg, step: int) -> int:
  """Lowest number of givens at `step`: falls linearly from givens_max to givens_min over curriculum_steps."""
  lo, hi = int(data_cfg.givens_min), int(data_cfg.givens_max)
  steps = int(data_cfg.curriculum_steps)
  if steps <= 0:
    return lo
  frac = min(max(step, 0) / steps, 1.0)
  return int(round(hi - frac * (hi - lo)))


def train_batch(train: PuzzleSet, data_cfg, step: int, batch_size: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This host's slice of the batch for `step`: dict(puzzle=int8[B, L], solution=int8[B, L]).

  B = batch_size // process_count. A pure function of (data_cfg.seed, step,
  process_index): puzzles drawn with replacement, then a random symmetry each
  (data_cfg.augment), then, when data_cfg.on_the_fly, a new puzzle revealing k
  cells of the solution, k uniform in [curriculum_min_givens(step), givens_max];
  with data_cfg.unique_reveal the puzzle keeps a unique solution (cells whose
  removal would allow a second one stay given), else any k cells are revealed.
  """
  if batch_size % process_count:
    raise DataConfigError(f'batch_size {batch_size} is not divisible by process_count {process_count}')
  if not len(train):
    raise InputError('the training set is empty')
  local = batch_size // process_count
  rng = np.random.default_rng([int(data_cfg.seed), int(step), int(process_index)])
  index = rng.integers(0, len(train), size=local)
  puzzles, solutions = train.puzzles[index], train.solutions[index]
  if data_cfg.augment:
    puzzles, solutions = sudoku_grids.augment(puzzles, solutions, rng, train.size)
  if data_cfg.on_the_fly:
    hi = int(data_cfg.givens_max)
    if not 0 < hi <= train.size**2 or int(data_cfg.givens_min) > hi:
      raise DataConfigError(f'on_the_fly needs 0 <= givens_min <= givens_max, 0 < givens_max <= {train.size**2}; '
                       f'got {data_cfg.givens_min}, {hi}')
    k = rng.integers(curriculum_min_givens(data_cfg, step), hi + 1, size=local)
    if data_cfg.unique_reveal:
      puzzles = sudoku_grids.carve_unique(solutions, k, rng)
    else:
      puzzles = sudoku_grids.reveal(solutions, k, rng)
  return {'puzzle': puzzles, 'solution': solutions}


def load_eval_file(path: str | os.PathLike, size: int | None = None, check_unique: bool = False) -> PuzzleSet:
  """Reads an evaluation file (see sudoku_grids.read_puzzle_file); puzzles without solutions get solved.

  Puzzles with several solutions are kept (any valid completion scores as solved).
  """
  return sudoku_grids.read_puzzle_file(path, size=size, check_unique=check_unique, allow_several=not check_unique)
