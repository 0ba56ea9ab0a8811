"""Exact Sudoku solver (numba): bitmask backtracking, most-constrained cell first.

Grids are int8 arrays of length L = N*N, row-major, 0 = blank, 1..N = digits;
N is 4 or 9 (any N whose box side sqrt(N) is an integer and N <= 9 works).
The search counts solutions up to `max_solutions`, so `max_solutions=2` is a
uniqueness check. All jitted functions use `cache=True` so the compile cost is
paid once per machine.
"""
import math

import numba
import numpy as np

MAX_SIZE = 9
_NUM_MASKS = 1 << MAX_SIZE
# Number of set bits, and (for one-bit masks) the digit the bit stands for.
_POPCOUNT = np.array([bin(m).count('1') for m in range(_NUM_MASKS)], np.int32)
_BIT_DIGIT = np.zeros(_NUM_MASKS, np.int32)
for _d in range(MAX_SIZE):
  _BIT_DIGIT[1 << _d] = _d + 1


def box_side(size: int) -> int:
  """Side of a box: 2 for 4x4, 3 for 9x9; raises ValueError for other sizes."""
  box = math.isqrt(size)
  if box * box != size or not 1 < size <= MAX_SIZE:
    raise ValueError(f'unsupported Sudoku size {size}: expected 4 or 9')
  return box


@numba.njit(cache=True)
def _search(grid_L, size, max_solutions, ban_L, solution_L, rng_order):
  """Counts solutions of `grid_L` (up to max_solutions); writes the first to solution_L.

  ban_L[i] is a bitmask of digits forbidden in cell i (on top of the rules).
  rng_order: when True, candidates are tried in random order (numba's RNG),
  which turns the search into a random-grid sampler.
  Returns -1 when the givens contradict each other.
  """
  box = int(math.sqrt(size) + 0.5)
  n_cells = size * size
  full = (1 << size) - 1
  rows = np.zeros(size, np.int32)
  cols = np.zeros(size, np.int32)
  boxes = np.zeros(size, np.int32)
  cell_row = np.empty(n_cells, np.int32)
  cell_col = np.empty(n_cells, np.int32)
  cell_box = np.empty(n_cells, np.int32)
  grid = np.empty(n_cells, np.int8)
  empties = np.empty(n_cells, np.int32)
  n_empty = 0
  for i in range(n_cells):
    r = i // size
    c = i % size
    b = (r // box) * box + c // box
    cell_row[i] = r
    cell_col[i] = c
    cell_box[i] = b
    v = grid_L[i]
    grid[i] = v
    if v == 0:
      empties[n_empty] = i
      n_empty += 1
      continue
    bit = 1 << (v - 1)
    if (rows[r] & bit) or (cols[c] & bit) or (boxes[b] & bit) or (ban_L[i] & bit):
      return -1
    rows[r] |= bit
    cols[c] |= bit
    boxes[b] |= bit

  # Units (rows, columns, boxes) as cell lists, for the hidden-single rule.
  units = np.empty((3 * size, size), np.int32)
  for i in range(n_cells):
    units[cell_row[i], cell_col[i]] = i
    units[size + cell_col[i], cell_row[i]] = i
    units[2 * size + cell_box[i], (cell_row[i] % box) * box + cell_col[i] % box] = i
  where = np.empty(n_cells, np.int32)  # index of each empty cell in `empties`
  for j in range(n_empty):
    where[empties[j]] = j
  cand_L = np.zeros(n_cells, np.int32)

  # Cells empties[depth:] are unfilled; stack_cands[d] holds the untried digits
  # of the cell placed at depth d (which sits at empties[d]).
  stack_cands = np.zeros(n_cells + 1, np.int32)
  depth = 0
  count = 0
  while True:
    backtrack = False
    if depth == n_empty:
      count += 1
      if count == 1:
        for i in range(n_cells):
          solution_L[i] = grid[i]
      if count >= max_solutions:
        return count
      backtrack = True
    else:
      # Most constrained cell (naked single when it has one candidate).
      best_j = -1
      best_n = 99
      best_mask = 0
      for j in range(depth, n_empty):
        i = empties[j]
        m = full & ~(rows[cell_row[i]] | cols[cell_col[i]] | boxes[cell_box[i]] | ban_L[i])
        cand_L[i] = m
        n = _POPCOUNT[m]
        if n < best_n:
          best_n = n
          best_j = j
          best_mask = m
          if n <= 1:
            break
      if best_n >= 2:
        # Hidden single: a digit with one possible cell in a unit; a digit with
        # none (and not yet placed there) is a dead end.
        for u in range(3 * size):
          if u < size:
            placed = rows[u]
          elif u < 2 * size:
            placed = cols[u - size]
          else:
            placed = boxes[u - 2 * size]
          if placed == full:
            continue
          once = 0
          twice = 0
          for k in range(size):
            i = units[u, k]
            if grid[i] == 0:
              twice |= once & cand_L[i]
              once |= cand_L[i]
          if (once | placed) != full:
            best_n = 0
            break
          single = once & ~twice
          if single != 0:
            bit = single & -single
            for k in range(size):
              i = units[u, k]
              if grid[i] == 0 and (cand_L[i] & bit):
                best_j = where[i]
                best_mask = bit
                best_n = 1
                break
            break
      if best_n == 0:
        backtrack = True
      else:
        a = empties[depth]
        b = empties[best_j]
        empties[depth] = b
        empties[best_j] = a
        where[b] = depth
        where[a] = best_j
        stack_cands[depth] = best_mask
    if backtrack:
      while True:
        depth -= 1
        if depth < 0:
          return count
        i = empties[depth]
        bit = 1 << (grid[i] - 1)
        rows[cell_row[i]] &= ~bit
        cols[cell_col[i]] &= ~bit
        boxes[cell_box[i]] &= ~bit
        grid[i] = 0
        if stack_cands[depth] != 0:
          break
    # Place the next untried candidate of the cell at this depth.
    m = stack_cands[depth]
    if rng_order:
      k = np.random.randint(0, _POPCOUNT[m])
      bit = m & -m
      for _ in range(k):
        m ^= bit
        bit = m & -m
      m = stack_cands[depth]
    else:
      bit = m & -m
    stack_cands[depth] = m ^ bit
    i = empties[depth]
    grid[i] = _BIT_DIGIT[bit]
    rows[cell_row[i]] |= bit
    cols[cell_col[i]] |= bit
    boxes[cell_box[i]] |= bit
    depth += 1


@numba.njit(cache=True)
def _solve_one(puzzle_L, size, max_solutions):
  solution_L = np.zeros(size * size, np.int8)
  ban_L = np.zeros(size * size, np.int32)
  count = _search(puzzle_L, size, max_solutions, ban_L, solution_L, False)
  return max(count, 0), solution_L


@numba.njit(cache=True)
def _solve_many(puzzles_NxL, size, max_solutions):
  n = puzzles_NxL.shape[0]
  counts_N = np.zeros(n, np.int32)
  solutions_NxL = np.zeros(puzzles_NxL.shape, np.int8)
  ban_L = np.zeros(size * size, np.int32)
  for k in range(n):
    counts_N[k] = max(0, _search(puzzles_NxL[k], size, max_solutions, ban_L, solutions_NxL[k], False))
  return counts_N, solutions_NxL


def _check_input(puzzles, size: int) -> np.ndarray:
  box_side(size)
  arr = np.ascontiguousarray(puzzles, dtype=np.int8)
  if arr.shape[-1] != size * size:
    raise ValueError(f'expected grids of length {size * size} for size {size}, got shape {arr.shape}')
  if arr.size and (arr.min() < 0 or arr.max() > size):
    raise ValueError(f'grid values must be in 0..{size} (0 = blank)')
  return arr


def solve(puzzle_L: np.ndarray, size: int, max_solutions: int = 2) -> tuple[int, np.ndarray]:
  """Solves one puzzle.

  Returns (count, solution_L): count = number of solutions, capped at
  max_solutions (0 also when the givens contradict each other); solution_L =
  the first solution found (all zeros when count == 0).
  """
  arr = _check_input(puzzle_L, size)
  if arr.ndim != 1:
    raise ValueError(f'solve expects one grid of shape [{size * size}], got {arr.shape}')
  count, solution = _solve_one(arr, size, max(1, int(max_solutions)))
  return int(count), solution


def solve_many(puzzles_NxL: np.ndarray, size: int, max_solutions: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """Solves a batch: returns (counts_N int32, solutions_NxL int8); see `solve`."""
  arr = _check_input(puzzles_NxL, size)
  if arr.ndim != 2:
    raise ValueError(f'solve_many expects grids of shape [N, {size * size}], got {arr.shape}')
  return _solve_many(arr, size, max(1, int(max_solutions)))


@numba.njit(cache=True)
def random_grid(size, seed):
  """A random complete grid (deterministic in seed); see `_random_fill`."""
  np.random.seed(seed)
  return _random_fill(size)


@numba.njit(cache=True)
def _random_fill(size):
  """A random complete grid: the search on an empty grid with random candidate order."""
  n_cells = size * size
  empty = np.zeros(n_cells, np.int8)
  ban_L = np.zeros(n_cells, np.int32)
  solution_L = np.zeros(n_cells, np.int8)
  _search(empty, size, 1, ban_L, solution_L, True)
  return solution_L


@numba.njit(cache=True)
def _is_unique_without(puzzle_L, size, cell, value, ban_L, scratch_L):
  """True when blanking `cell` (whose solution digit is `value`) keeps the solution unique.

  The puzzle has a unique solution with `value` at `cell`; with the cell
  blank it stays unique iff no solution puts another digit there.
  """
  puzzle_L[cell] = 0
  ban_L[cell] = 1 << (value - 1)
  count = _search(puzzle_L, size, 1, ban_L, scratch_L, False)
  ban_L[cell] = 0
  puzzle_L[cell] = value
  return count <= 0


@numba.njit(cache=True)
def carve(solution_L, size, num_givens, order_L):
  """Blanks cells of a full grid in `order_L` while the solution stays unique.

  Stops when `num_givens` givens remain or every cell has been tried (a
  minimal puzzle when num_givens == 0). Returns the puzzle.
  """
  n_cells = size * size
  puzzle = solution_L.copy()
  ban_L = np.zeros(n_cells, np.int32)
  scratch_L = np.zeros(n_cells, np.int8)
  givens = n_cells
  for k in range(n_cells):
    if givens <= num_givens:
      break
    cell = order_L[k]
    if _is_unique_without(puzzle, size, cell, puzzle[cell], ban_L, scratch_L):
      puzzle[cell] = 0
      givens -= 1
  return puzzle


@numba.njit(cache=True)
def generate_many(size, num_givens_N, seed):
  """Unique-solution puzzles with (at most as close as possible to) num_givens_N[k] givens.

  Returns (puzzles_NxL, solutions_NxL). Deterministic in seed.
  """
  n = num_givens_N.shape[0]
  n_cells = size * size
  puzzles = np.zeros((n, n_cells), np.int8)
  solutions = np.zeros((n, n_cells), np.int8)
  np.random.seed(seed)
  for k in range(n):
    solution = _random_fill(size)
    order = np.random.permutation(n_cells).astype(np.int32)
    puzzles[k] = carve(solution, size, num_givens_N[k], order)
    solutions[k] = solution
  return puzzles, solutions


@numba.njit(cache=True)
def carve_many(solutions_NxL, size, num_givens_N, orders_NxL):
  """`carve` for every row: unique-solution puzzles from full grids, each with its own givens and removal order."""
  out = np.zeros(solutions_NxL.shape, np.int8)
  for k in range(solutions_NxL.shape[0]):
    out[k] = carve(solutions_NxL[k], size, num_givens_N[k], orders_NxL[k])
  return out
