"""Sudoku grids: readers, validation, generator, augmentations, canonical forms.

Encoding everywhere: a grid of side N (4 or 9; box side sqrt(N)) is an int8
array of length L = N*N, row-major, 0 = blank, 1..N = digits. Batches are
[B, L] int8. The exact solver lives in `data.sudoku_solver`.
"""
import csv
import dataclasses
import functools
import itertools
import os
import pathlib

import numba
import numpy as np
from absl import logging

from data import sudoku_solver
from data import paths
from data.errors import DataConfigError, InputError

box_side = sudoku_solver.box_side
SIZES = (4, 9)
_SIZE_OF_LENGTH = {16: 4, 81: 9}


class SudokuFormatError(InputError):
  """A puzzle file is malformed; the message names the file and line."""


@dataclasses.dataclass
class PuzzleSet:
  """Puzzles [N, L] int8 with their unique solutions [N, L] int8."""
  puzzles: np.ndarray
  solutions: np.ndarray
  size: int
  source: str = ''

  def __len__(self) -> int:
    return int(self.puzzles.shape[0])

  def subset(self, index: np.ndarray, source: str | None = None) -> 'PuzzleSet':
    """The puzzles at `index` (an index array or boolean mask)."""
    return PuzzleSet(self.puzzles[index], self.solutions[index], self.size,
                     self.source if source is None else source)

  def num_givens(self) -> np.ndarray:
    """Givens per puzzle, [N] int."""
    return (self.puzzles > 0).sum(axis=1)


def concat(sets: list[PuzzleSet], source: str = '') -> PuzzleSet:
  """One PuzzleSet from several of the same size."""
  sizes = {s.size for s in sets}
  if len(sizes) != 1:
    raise ValueError(f'cannot concatenate puzzle sets of sizes {sorted(sizes)}')
  return PuzzleSet(np.concatenate([s.puzzles for s in sets]),
                   np.concatenate([s.solutions for s in sets]), sizes.pop(), source)


# ----------------------------------------------------------------------------
# Validation.


@functools.lru_cache(maxsize=None)
def unit_cells(size: int) -> np.ndarray:
  """[3N, N] cell indices of every row, column and box."""
  box = box_side(size)
  cells = np.arange(size * size).reshape(size, size)
  boxes = cells.reshape(box, box, box, box).transpose(0, 2, 1, 3).reshape(size, size)
  return np.concatenate([cells, cells.T, boxes])


def _unit_names(size: int) -> list[str]:
  return ([f'row {i + 1}' for i in range(size)] + [f'column {i + 1}' for i in range(size)]
          + [f'box {i + 1}' for i in range(size)])


def duplicate_counts(grids_NxL: np.ndarray, size: int) -> np.ndarray:
  """[N, 3N, N] count of each digit in each unit, minus one where positive (0 = fine)."""
  grids = np.asarray(grids_NxL)
  values_NxUxK = grids[:, unit_cells(size)]
  out = np.empty((grids.shape[0], 3 * size, size), np.int16)
  for d in range(1, size + 1):
    out[:, :, d - 1] = (values_NxUxK == d).sum(axis=2)
  return np.maximum(out - 1, 0)


def has_conflict(grids_NxL: np.ndarray, size: int) -> np.ndarray:
  """[N] bool: some digit appears twice in a row, column or box (blanks ignored)."""
  grids = np.atleast_2d(np.asarray(grids_NxL))
  out = np.zeros(grids.shape[0], bool)
  for start in range(0, grids.shape[0], 16384):
    out[start:start + 16384] = duplicate_counts(grids[start:start + 16384], size).any(axis=(1, 2))
  return out


def conflict_description(grid_L: np.ndarray, size: int) -> str:
  """Names the first repeated digit and its unit, e.g. 'digit 5 twice in row 3'."""
  counts = duplicate_counts(np.asarray(grid_L)[None], size)[0]
  unit, digit = np.argwhere(counts > 0)[0]
  return f'digit {digit + 1} appears {counts[unit, digit] + 1} times in {_unit_names(size)[unit]}'


def is_valid_solution(grids: np.ndarray, size: int) -> bool | np.ndarray:
  """Complete grid obeying the rules; one grid [L] -> bool, a batch [N, L] -> [N] bool."""
  arr = np.asarray(grids)
  batch = np.atleast_2d(arr)
  if batch.shape[-1] != size * size:
    return False if arr.ndim == 1 else np.zeros(batch.shape[0], bool)
  ok = ((batch >= 1) & (batch <= size)).all(axis=1) & ~has_conflict(batch, size)
  return bool(ok[0]) if arr.ndim == 1 else ok


def is_consistent(puzzles_NxL: np.ndarray, solutions_NxL: np.ndarray) -> np.ndarray:
  """[N] bool: every given of the puzzle equals the solution's digit there."""
  p = np.asarray(puzzles_NxL)
  return ((p == 0) | (p == np.asarray(solutions_NxL))).all(axis=-1)


# ----------------------------------------------------------------------------
# Readers.

_CHAR_VALUE = np.full(256, -1, np.int16)
_CHAR_VALUE[ord('.')] = 0
for _c in '0123456789':
  _CHAR_VALUE[ord(_c)] = int(_c)


def _parse_grids(texts: list[str], line_numbers: list[int], path: str, what: str) -> tuple[np.ndarray, int]:
  """Grid strings of one length -> ([N, L] int8, size); errors name file and line."""
  size = None
  for text, line in zip(texts, line_numbers):
    if len(text) not in _SIZE_OF_LENGTH:
      raise SudokuFormatError(
          f'{path}:{line}: {what} has {len(text)} characters, expected 81 (9x9) or 16 (4x4): {text[:100]!r}')
    if size is None:
      size = _SIZE_OF_LENGTH[len(text)]
    elif _SIZE_OF_LENGTH[len(text)] != size:
      raise SudokuFormatError(
          f'{path}:{line}: {what} is {_SIZE_OF_LENGTH[len(text)]}x{_SIZE_OF_LENGTH[len(text)]} '
          f'but earlier lines are {size}x{size}; mixed sizes are not supported')
  if size is None:
    return np.zeros((0, 0), np.int8), 0
  raw = np.frombuffer(''.join(texts).encode('latin-1', errors='replace'), np.uint8)
  values = _CHAR_VALUE[raw].reshape(len(texts), size * size)
  bad = (values < 0) | (values > size)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise SudokuFormatError(
        f'{path}:{line_numbers[row]}: {what} has bad character {texts[row][col]!r} at position {col + 1} '
        f"(allowed: '.' or '0' for a blank, digits 1..{size})")
  return values.astype(np.int8), size


def _read_rows(path: str) -> tuple[list[str], list[str | None], list[int]]:
  """Puzzle and solution strings with their 1-based line numbers."""
  lines = paths.read_text(path, 'puzzle file').splitlines()
  content = [(i + 1, ln.strip()) for i, ln in enumerate(lines)]
  content = [(i, ln) for i, ln in content if ln and not ln.startswith('#')]
  if not content:
    return [], [], []
  first = content[0][1]
  if ',' not in first:
    # One puzzle per line; a '#' starts a comment.
    puzzles, numbers = [], []
    for number, text in content:
      text = text.split('#', 1)[0].strip()
      if text:
        puzzles.append(text)
        numbers.append(number)
    return puzzles, [None] * len(puzzles), numbers
  rows = list(zip((n for n, _ in content), csv.reader([ln for _, ln in content])))
  header = [h.strip().lower() for h in rows[0][1]]
  puzzle_col, solution_col = 0, 1
  data = rows[1:]
  if 'question' in header and 'answer' in header:  # HF sapientinc/sudoku-extreme layout.
    puzzle_col, solution_col = header.index('question'), header.index('answer')
  elif 'puzzle' in header and 'solution' in header:
    puzzle_col, solution_col = header.index('puzzle'), header.index('solution')
  elif len(header[0]) in _SIZE_OF_LENGTH and set(header[0]) <= set('.0123456789'):
    data = rows  # No header: the first line is already a puzzle.
  # Otherwise the header names other columns: the first two are puzzle, solution.
  puzzles, solutions, numbers = [], [], []
  for number, fields in data:
    if len(fields) <= puzzle_col:
      raise SudokuFormatError(f'{path}:{number}: row has {len(fields)} columns, the puzzle is column {puzzle_col + 1}')
    puzzles.append(fields[puzzle_col].strip())
    solution = fields[solution_col].strip() if 0 <= solution_col < len(fields) else ''
    solutions.append(solution or None)
    numbers.append(number)
  return puzzles, solutions, numbers


def read_puzzle_file(path: str | os.PathLike, size: int | None = None, check_unique: bool = False,
                     allow_several: bool = False) -> PuzzleSet:
  """Reads puzzles (and solutions) from a file; solves those without a solution.

  Formats: one puzzle per line (81 or 16 characters, '.' or '0' blank; blank
  lines and '#' comments ignored), or CSV with a header whose first two columns
  are puzzle,solution (extra columns ignored; the solution may be empty), or the
  HF sapientinc/sudoku-extreme layout `source,question,answer,rating`.
  size: expected side (4 or 9); None infers it from the line length.
  check_unique: also verify that puzzles that come with a solution have no
  other one (puzzles without one are always checked).
  allow_several: keep puzzles with several solutions (one of them becomes the
  reference; scoring then accepts any valid completion) and log how many.
  Raises SudokuFormatError naming file and line for wrong length, bad
  characters, mixed sizes, contradictory givens, no solution, several
  solutions (unless allowed), and a given solution that is not a valid grid or
  disagrees with the givens.
  """
  path = str(path)
  puzzle_texts, solution_texts, numbers = _read_rows(path)
  return puzzles_from_strings(puzzle_texts, solution_texts, numbers, path, size, check_unique,
                              name=pathlib.Path(path).name, allow_several=allow_several)


def puzzles_from_strings(puzzle_texts: list[str], solution_texts: list[str | None], numbers: list[int],
                         path: str, size: int | None = None, check_unique: bool = False,
                         name: str = '', allow_several: bool = False) -> PuzzleSet:
  """Parses and validates grid strings (see read_puzzle_file); `numbers` are line numbers for errors."""
  if not puzzle_texts:
    raise SudokuFormatError(f'{path}: no puzzles found')
  puzzles, found_size = _parse_grids(puzzle_texts, numbers, path, 'puzzle')
  if size is not None and found_size != size:
    raise SudokuFormatError(f'{path}:{numbers[0]}: puzzles are {found_size}x{found_size}, expected {size}x{size}')
  numbers_arr = np.asarray(numbers)
  bad = np.flatnonzero(has_conflict(puzzles, found_size))
  if bad.size:
    k = bad[0]
    raise SudokuFormatError(
        f'{path}:{numbers[k]}: contradictory givens: {conflict_description(puzzles[k], found_size)}')
  solutions = np.zeros_like(puzzles)
  given = np.array([s is not None for s in solution_texts], bool)
  if given.any():
    idx = np.flatnonzero(given)
    parsed, sol_size = _parse_grids([solution_texts[k] for k in idx], [numbers[k] for k in idx], path, 'solution')
    if sol_size != found_size:
      raise SudokuFormatError(
          f'{path}:{numbers[idx[0]]}: solution is {sol_size}x{sol_size} but the puzzle is {found_size}x{found_size}')
    valid = is_valid_solution(parsed, found_size)
    if not valid.all():
      k = np.flatnonzero(~valid)[0]
      why = ('has blanks' if (parsed[k] == 0).any() else conflict_description(parsed[k], found_size))
      raise SudokuFormatError(f'{path}:{numbers[idx[k]]}: solution is not a valid grid: {why}')
    consistent = is_consistent(puzzles[idx], parsed)
    if not consistent.all():
      k = np.flatnonzero(~consistent)[0]
      cell = np.flatnonzero((puzzles[idx[k]] != 0) & (puzzles[idx[k]] != parsed[k]))[0]
      raise SudokuFormatError(
          f'{path}:{numbers[idx[k]]}: solution is inconsistent with the puzzle: cell (row {cell // found_size + 1}, '
          f'column {cell % found_size + 1}) is given as {puzzles[idx[k], cell]} but the solution has {parsed[k, cell]}')
    solutions[idx] = parsed
  to_solve = ~given | check_unique
  if to_solve.any():
    idx = np.flatnonzero(to_solve)
    counts, solved = sudoku_solver.solve_many(puzzles[idx], found_size, max_solutions=2)
    for k in np.flatnonzero((counts == 0) | ((counts > 1) & (not allow_several)))[:1]:
      what = 'has no solution' if counts[k] == 0 else 'has several solutions (a puzzle must have exactly one)'
      raise SudokuFormatError(f'{path}:{numbers_arr[idx[k]]}: puzzle {what}')
    several = np.flatnonzero(counts > 1)
    if several.size:
      logging.warning('%s: %d of %d puzzles have several solutions (first at line %d); any valid completion '
                      'counts as solved', path, several.size, len(puzzles), numbers_arr[idx[several[0]]])
    missing = ~given[idx]
    solutions[idx[missing]] = solved[missing]
  return PuzzleSet(puzzles, solutions, found_size, name or path)


def format_grid(grid_L: np.ndarray, blank: str = '.') -> str:
  """One-line text form of a grid ('.' for blanks)."""
  return ''.join(blank if v == 0 else str(int(v)) for v in np.asarray(grid_L))


def write_puzzle_file(path: str | os.PathLike, puzzle_set: PuzzleSet) -> None:
  """Writes a `puzzle,solution` CSV readable by read_puzzle_file."""
  with open(path, 'w', encoding='utf-8') as f:
    f.write('puzzle,solution\n')
    for p, s in zip(puzzle_set.puzzles, puzzle_set.solutions):
      f.write(f'{format_grid(p)},{format_grid(s)}\n')


# ----------------------------------------------------------------------------
# Generator.


def _seed_from(rng: np.random.Generator) -> int:
  return int(rng.integers(0, 2**31 - 1))


def random_solution_grid(rng: np.random.Generator, size: int) -> np.ndarray:
  """A random complete grid [L] int8 (randomised search, so every class can appear)."""
  box_side(size)
  return sudoku_solver.random_grid(size, _seed_from(rng))


def generate_puzzle(rng: np.random.Generator, size: int, num_givens: int) -> tuple[np.ndarray, np.ndarray]:
  """A puzzle with a unique solution: (puzzle [L], solution [L]).

  Blanks cells of a random grid in random order while the solution stays
  unique, stopping at `num_givens` givens or when no cell can be removed (so
  num_givens=0 gives a minimal puzzle; a low target may end above it).
  """
  solution = random_solution_grid(rng, size)
  order = rng.permutation(size * size).astype(np.int32)
  return sudoku_solver.carve(solution, size, int(num_givens), order), solution


def generate_puzzles(n: int, size: int, givens_min: int, givens_max: int, seed: int) -> PuzzleSet:
  """`n` unique-solution puzzles, each aiming at a number of givens drawn uniformly in [givens_min, givens_max]."""
  box_side(size)
  if not 0 <= givens_min <= givens_max <= size * size:
    raise DataConfigError(f'need 0 <= givens_min <= givens_max <= {size * size}, got {givens_min}, {givens_max}')
  rng = np.random.default_rng(seed)
  targets = rng.integers(givens_min, givens_max + 1, size=n).astype(np.int64)
  puzzles, solutions = sudoku_solver.generate_many(size, targets, _seed_from(rng))
  return PuzzleSet(puzzles, solutions, size, f'generated(size={size}, givens={givens_min}..{givens_max}, seed={seed})')


def reveal(solutions_NxL: np.ndarray, givens, rng: np.random.Generator) -> np.ndarray:
  """Puzzles that keep a uniformly random subset of k cells of each solution.

  givens: an int or an [N] array of k per row. Uniqueness is not checked.
  """
  sol = np.asarray(solutions_NxL)
  n, length = sol.shape
  k_N = np.broadcast_to(np.asarray(givens, np.int64), (n,))
  if (k_N < 0).any() or (k_N > length).any():
    raise DataConfigError(f'givens must be in 0..{length}')
  # A uniformly random permutation per row; cell i is kept when its rank < k.
  rank_NxL = rng.permuted(np.broadcast_to(np.arange(length, dtype=np.int16), (n, length)), axis=1)
  return np.where(rank_NxL < k_N[:, None], sol, 0).astype(np.int8)


def reveal_unique(solutions_NxL: np.ndarray, givens, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Puzzles with exactly `givens` givens and a unique solution, one per solution grid.

  givens: an int or an [N] array of counts per row. Blanks the cells of each
  solution in a random order, skipping a cell whose removal would allow a second
  solution, until `givens` remain (with many givens this is a uniformly random
  reveal among unique puzzles). Returns (puzzles [M, L], kept [M] indices into
  solutions_NxL); a grid that cannot get down to its count (below what unique
  puzzles need) is left out.
  """
  puzzles = carve_unique(solutions_NxL, givens, rng)
  k_N = np.broadcast_to(np.asarray(givens, np.int64), (len(puzzles),))
  kept = np.flatnonzero((puzzles > 0).sum(axis=1) == k_N)
  return puzzles[kept], kept


def carve_unique(solutions_NxL: np.ndarray, givens, rng: np.random.Generator) -> np.ndarray:
  """One unique-solution puzzle per solution grid with `givens` givens (int or [N]), or as close as it gets.

  Where a grid cannot get down to its count, the puzzle keeps the fewest givens
  the random removal order reached (a minimal puzzle, still unique).
  """
  sol = np.ascontiguousarray(solutions_NxL, dtype=np.int8)
  n, length = sol.shape
  size = _SIZE_OF_LENGTH[length]
  k_N = np.ascontiguousarray(np.broadcast_to(np.asarray(givens, np.int64), (n,)))
  if (k_N < 0).any() or (k_N > length).any():
    raise DataConfigError(f'givens must be in 0..{length}')
  orders = rng.permuted(np.broadcast_to(np.arange(length, dtype=np.int32), (n, length)), axis=1)
  return sudoku_solver.carve_many(sol, size, k_N, np.ascontiguousarray(orders))


# ----------------------------------------------------------------------------
# Augmentations.


def _random_line_order(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[n, size] random orders of rows (or columns) that keep bands together."""
  box = box_side(size)
  band_order = rng.permuted(np.broadcast_to(np.arange(box), (n, box)), axis=1)
  within = rng.permuted(np.broadcast_to(np.arange(box), (n, box, box)), axis=2)
  return (band_order[:, :, None] * box + within).reshape(n, size)


def random_transforms(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """n random symmetries: (source cell [n, L], digit map [n, N+1] with map[:, 0] = 0).

  out[b, i] = digit_map[b, grid[b, source[b, i]]].
  """
  rows = _random_line_order(rng, n, size)
  cols = _random_line_order(rng, n, size)
  transpose = rng.random(n) < 0.5
  r = rows[:, :, None]
  c = cols[:, None, :]
  source = np.where(transpose[:, None, None], c * size + r, r * size + c).reshape(n, size * size)
  digit_map = np.zeros((n, size + 1), np.int8)
  digit_map[:, 1:] = rng.permuted(np.broadcast_to(np.arange(1, size + 1, dtype=np.int8), (n, size)), axis=1)
  return source, digit_map


def apply_transforms(grids_NxL: np.ndarray, source_NxL: np.ndarray, digit_map_NxD: np.ndarray) -> np.ndarray:
  """Applies transforms from `random_transforms` to a batch of grids."""
  moved = np.take_along_axis(np.asarray(grids_NxL), source_NxL, axis=1)
  return np.take_along_axis(digit_map_NxD, moved.astype(np.intp), axis=1).astype(np.int8)


def augment(puzzles_NxL: np.ndarray, solutions_NxL: np.ndarray, rng: np.random.Generator,
            size: int) -> tuple[np.ndarray, np.ndarray]:
  """An independent random symmetry per example, the same for puzzle and solution.

  Symmetries: digit relabelling (blank stays 0), rows within bands, bands,
  columns within stacks, stacks, and transpose with probability 1/2.
  """
  puzzles = np.asarray(puzzles_NxL)
  source, digit_map = random_transforms(rng, puzzles.shape[0], size)
  return apply_transforms(puzzles, source, digit_map), apply_transforms(solutions_NxL, source, digit_map)


# ----------------------------------------------------------------------------
# Canonical forms: the lexicographic minimum over the whole symmetry group.


@functools.lru_cache(maxsize=None)
def _line_orders(size: int) -> tuple[np.ndarray, ...]:
  """All band-preserving row orders sorted lexicographically, with search tables.

  Returns (orders [R, N], lcp [R+1] = common prefix length with the previous
  order (0 for the first, 0 past the end), skip [R, N] = first later order whose
  first k+1 entries differ, inverse [R, N] inverse permutations, prefix_start
  [N*N+1] where the orders with given first two rows start).
  """
  box = box_side(size)
  orders = []
  for bands in itertools.permutations(range(box)):
    for within in itertools.product(itertools.permutations(range(box)), repeat=box):
      orders.append([b * box + w for b, inner in zip(bands, within) for w in inner])
  orders = np.array(sorted(orders), np.int32)
  num = orders.shape[0]
  lcp = np.zeros(num + 1, np.int32)
  for i in range(1, num):
    lcp[i] = np.argmax(np.append(orders[i] != orders[i - 1], True))
  skip = np.full((num, size), num, np.int32)
  for i in range(num - 2, -1, -1):
    for k in range(size):
      skip[i, k] = skip[i + 1, k] if lcp[i + 1] >= k + 1 else i + 1
  inverse = np.argsort(orders, axis=1).astype(np.int32)
  # Orders starting with rows (a, b) are orders[prefix_start[a*N+b]:prefix_start[a*N+b+1]].
  first_two = orders[:, 0] * size + orders[:, 1]
  prefix_start = np.searchsorted(first_two, np.arange(size * size + 1)).astype(np.int32)
  return orders, lcp, skip, inverse, prefix_start


@numba.njit(cache=True)
def _search_row_orders(g, cols, orders, lcp, skip, lo, hi, first_level, best, labels, assigned, level_start,
                       num_labeled, complete, best_starts_full, row):
  """Branch and bound over row orders orders[lo:hi] (which share rows < first_level) for one column order.

  Output row k is row orders[i, k] of g read in column order `cols`, digits
  relabelled by first appearance (labels/assigned/level_start hold that state
  per row), blanks read as n+1. Every order whose prefix reads larger than
  `best` is skipped; `best` is lowered wherever a smaller grid appears.
  `row` is scratch space. Returns (num_labeled, best_starts_full).
  """
  n = g.shape[0]
  blank = n + 1
  sentinel = 127
  i = lo
  valid = first_level
  while i < hi:
    rows = orders[i]
    pruned = False
    for k in range(valid, n):
      # Forget the labels given in rows k.. of the previous candidate.
      for lab in range(level_start[k], num_labeled):
        labels[assigned[lab]] = 0
      num_labeled = level_start[k]
      state = 0  # 0: equal to best so far, -1: smaller, 1: larger
      src = rows[k]
      if k == 0 and complete[src]:
        # A complete first row always reads 1..n: the smallest first row.
        for j in range(n):
          v = g[src, cols[j]]
          labels[v] = j + 1
          assigned[j] = v
        num_labeled = n
        level_start[1] = n
        if not best_starts_full:
          best_starts_full = True
          for j in range(n):
            best[0, j] = j + 1
          for kk in range(1, n):
            for j in range(n):
              best[kk, j] = sentinel
        continue
      for j in range(n):
        v = g[src, cols[j]]
        if v == 0:
          out = blank
        else:
          if labels[v] == 0:
            assigned[num_labeled] = v
            num_labeled += 1
            labels[v] = num_labeled
          out = labels[v]
        row[j] = out
        if state == 0:
          if out > best[k, j]:
            state = 1
            break
          if out < best[k, j]:
            state = -1
      if state == 1:
        i = skip[i, k]
        valid = min(k, lcp[i])
        pruned = True
        break
      if k + 1 < n:
        level_start[k + 1] = num_labeled
      if state == -1:
        for j in range(n):
          best[k, j] = row[j]
        for kk in range(k + 1, n):
          for j in range(n):
            best[kk, j] = sentinel
    if not pruned:
      i += 1
      valid = min(n, lcp[i])
  return num_labeled, best_starts_full


@numba.njit(cache=True)
def _canonical_one(grid_L, size, orders, lcp, skip, inverse, prefix_start, best, complete_path):
  """Writes into best [N, N] the lexicographic minimum over all symmetries.

  Each candidate is a transpose flag, a column order and a row order; digits
  are relabelled by first appearance in reading order and blanks read as N+1
  (after every digit), so each output row depends only on earlier rows. The
  search walks row orders in lexicographic order, reuses the rows shared with
  the previous order, and skips every order whose prefix already exceeds the
  best grid found so far (branch and bound; exact).

  Complete grids (complete_path) take a shortcut with the same result: row 0
  always reads 1..N, so for each choice of the first two rows the column
  orders giving the smallest row 1 are found by filtering all of them cell by
  cell, and only those go on to the row-order search.
  """
  n = size
  sentinel = 127
  num = orders.shape[0]
  best[:, :] = sentinel
  g = np.empty((n, n), np.int8)
  labels = np.zeros(n + 1, np.int32)  # digit -> label (0 = not seen yet)
  assigned = np.zeros(n + 1, np.int32)  # digit that got label l + 1
  level_start = np.zeros(n + 1, np.int32)  # labels given before output row k
  num_labeled = 0
  complete = np.zeros(n, np.bool_)
  best_starts_full = False  # best[0] is 1..n
  is_full = True
  for i in range(n * n):
    if grid_L[i] == 0:
      is_full = False
  box = int(np.sqrt(n) + 0.5)
  cand = np.empty(num, np.int32)
  vals = np.empty(num, np.int32)
  pos0 = np.zeros(n + 1, np.int32)
  tau = np.empty(n, np.int32)
  row = np.empty(n, np.int32)  # scratch: the output row being read
  for t in range(2):
    for r in range(n):
      for c in range(n):
        g[r, c] = grid_L[c * n + r] if t == 1 else grid_L[r * n + c]
    for r in range(n):
      complete[r] = True
      for c in range(n):
        if g[r, c] == 0:
          complete[r] = False
    if not (complete_path and is_full):
      for ci in range(num):
        num_labeled, best_starts_full = _search_row_orders(
            g, orders[ci], orders, lcp, skip, 0, num, 0, best, labels, assigned, level_start, num_labeled,
            complete, best_starts_full, row)
      continue
    for j in range(n):
      best[0, j] = j + 1
    for r0 in range(n):
      for c in range(n):
        pos0[g[r0, c]] = c
      for r1 in range((r0 // box) * box, (r0 // box + 1) * box):
        if r1 == r0:
          continue
        for c in range(n):
          tau[c] = pos0[g[r1, c]]  # row 1's digit at column c sits at column tau[c] of row 0
        # Row 1 reads inverse[ci, tau[orders[ci, j]]] + 1 at position j: keep the smallest.
        num_cand = num
        for q in range(num):
          cand[q] = q
        state = 0
        for j in range(n):
          low = sentinel
          for q in range(num_cand):
            ci = cand[q]
            v = inverse[ci, tau[orders[ci, j]]] + 1
            vals[q] = v
            if v < low:
              low = v
          if state == 0:
            if low > best[1, j]:
              state = 1
              break
            if low < best[1, j]:
              state = -1
              for jj in range(j + 1, n):
                best[1, jj] = sentinel
              for kk in range(2, n):
                for jj in range(n):
                  best[kk, jj] = sentinel
          best[1, j] = low
          kept = 0
          for q in range(num_cand):
            if vals[q] == low:
              cand[kept] = cand[q]
              kept += 1
          num_cand = kept
        if state == 1:
          continue
        for q in range(num_cand):
          cols = orders[cand[q]]
          for j in range(n):
            v = g[r0, cols[j]]
            labels[v] = j + 1
            assigned[j] = v
          num_labeled = n
          level_start[1] = n
          level_start[2] = n
          num_labeled, best_starts_full = _search_row_orders(
              g, cols, orders, lcp, skip, prefix_start[r0 * n + r1], prefix_start[r0 * n + r1 + 1], 2, best,
              labels, assigned, level_start, num_labeled, complete, True, row)


@numba.njit(cache=True, parallel=True)
def _canonical_many(grids_NxL, size, orders, lcp, skip, inverse, prefix_start, complete_path):
  m = grids_NxL.shape[0]
  out = np.empty((m, size * size), np.int8)
  for k in numba.prange(m):
    best = np.empty((size, size), np.int8)
    _canonical_one(grids_NxL[k], size, orders, lcp, skip, inverse, prefix_start, best, complete_path)
    for r in range(size):
      for c in range(size):
        v = best[r, c]
        out[k, r * size + c] = 0 if v == size + 1 else v
  return out


def canonical_forms(grids_NxL: np.ndarray, size: int, _fast_complete: bool = True) -> np.ndarray:
  """[N, L] int8 canonical representative of each grid's class under all symmetries.

  Two grids get the same form iff one is a symmetry (digit relabelling, rows
  within bands, bands, columns within stacks, stacks, transpose) of the other.
  Exact: the lexicographic minimum (digits relabelled 1, 2, ... by first
  appearance, blanks sorting last) over the 2 * (k!)^(2k+2) geometric
  transforms (3,359,232 for 9x9), found by a pruned search.
  """
  grids = np.ascontiguousarray(np.atleast_2d(grids_NxL), dtype=np.int8)
  if grids.shape[1] != size * size:
    raise ValueError(f'expected grids of length {size * size}, got shape {grids.shape}')
  orders, lcp, skip, inverse, prefix_start = _line_orders(size)
  return _canonical_many(grids, size, orders, lcp, skip, inverse, prefix_start, _fast_complete)


def canonical_key(puzzle_L: np.ndarray, size: int) -> bytes:
  """Bytes equal for two grids iff one is a symmetry of the other (see canonical_forms)."""
  return canonical_forms(np.asarray(puzzle_L)[None], size)[0].tobytes()


def canonical_keys(puzzles_NxL: np.ndarray, size: int) -> list[bytes]:
  """canonical_key of every row of a batch (parallel over rows)."""
  forms = canonical_forms(puzzles_NxL, size)
  return [row.tobytes() for row in forms]


# ----------------------------------------------------------------------------
# 4x4: every puzzle class, enumerated.


def all_solution_grids(size: int = 4) -> np.ndarray:
  """Every complete grid of a small size ([288, 16] for 4x4), by row-by-row search."""
  if size != 4:
    raise ValueError('enumerating every grid is only feasible for 4x4')
  row_options = np.array(list(itertools.permutations(range(1, size + 1))), np.int8)
  partial = row_options[:, None, :]
  for _ in range(size - 1):
    grown = np.concatenate([np.repeat(partial, len(row_options), axis=0),
                            np.tile(row_options, (len(partial), 1))[:, None, :]], axis=1)
    padded = np.zeros((len(grown), size * size), np.int8)
    padded[:, :grown.shape[1] * size] = grown.reshape(len(grown), -1)
    partial = grown[~has_conflict(padded, size)]
  return partial.reshape(len(partial), size * size)


@functools.lru_cache(maxsize=None)
def all_puzzle_classes(size: int = 4) -> PuzzleSet:
  """One canonical representative of every unique-solution puzzle class (4,710 for 4x4).

  Every class has a member whose solution is a canonical grid, so trying all
  2^16 sets of givens on each grid class finds them all.
  """
  grid_classes = np.unique(canonical_forms(all_solution_grids(size), size), axis=0)
  n_cells = size * size
  masks = ((np.arange(2**n_cells)[:, None] >> np.arange(n_cells)) & 1).astype(bool)
  puzzles = []
  for grid in grid_classes:
    candidates = np.where(masks, grid, 0).astype(np.int8)
    counts, _ = sudoku_solver.solve_many(candidates, size, max_solutions=2)
    puzzles.append(candidates[counts == 1])
  forms = np.unique(canonical_forms(np.concatenate(puzzles), size), axis=0)
  _, solutions = sudoku_solver.solve_many(forms, size, max_solutions=1)
  return PuzzleSet(forms, solutions, size, f'all {size}x{size} puzzle classes')
