"""Tests of data/sudoku.py and data/sudoku_solver.py: readers, solver, generator, symmetries."""
import itertools

import numpy as np
import pytest

from data import sudoku_grids
from data import sudoku_solver

# A 9x9 puzzle with a unique solution (Project Euler 96, grid 01) and its solution.
PUZZLE_9 = '003020600900305001001806400008102900700000008006708200002609500800203009005010300'
SOLUTION_9 = '483921657967345821251876493548132976729564138136798245372689514814253769695417382'
PUZZLE_4 = '1.....2..3.....4'


def _grid(text: str) -> np.ndarray:
  return np.array([0 if c == '.' else int(c) for c in text], np.int8)


def _write(tmp_path, name: str, text: str) -> str:
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _read_shared(shared_data, name: str, n: int) -> sudoku_grids.PuzzleSet:
  path = shared_data / 'sudoku' / name
  if not path.is_file():
    pytest.skip(f'{path} is absent')
  lines = path.read_text().splitlines()[:n + 1]
  puzzles = np.array([_grid(ln.split(',')[0]) for ln in lines[1:]])
  solutions = np.array([_grid(ln.split(',')[1]) for ln in lines[1:]])
  return sudoku_grids.PuzzleSet(puzzles, solutions, 9, name)


# ---------------------------------------------------------------------------- readers


def test_reads_one_puzzle_per_line_with_comments_and_zero_blanks(tmp_path):
  path = _write(tmp_path, 'p.txt', f'# my puzzles\n\n{PUZZLE_9}\n{PUZZLE_9.replace("0", ".")}  # same\n')
  ps = sudoku_grids.read_puzzle_file(path)
  assert ps.size == 9 and len(ps) == 2
  np.testing.assert_array_equal(ps.puzzles[0], _grid(PUZZLE_9))
  np.testing.assert_array_equal(ps.puzzles[1], _grid(PUZZLE_9))
  np.testing.assert_array_equal(ps.solutions[0], _grid(SOLUTION_9))  # solved by our solver


def test_reads_csv_with_solution_and_extra_columns(tmp_path):
  path = _write(tmp_path, 'p.csv', f'puzzle,solution,rating\n{PUZZLE_9.replace("0", ".")},{SOLUTION_9},7.5\n'
                                   f'{PUZZLE_9},,1.0\n')
  ps = sudoku_grids.read_puzzle_file(path)
  assert len(ps) == 2
  np.testing.assert_array_equal(ps.solutions, np.stack([_grid(SOLUTION_9)] * 2))


def test_reads_hf_sudoku_extreme_layout_and_4x4(tmp_path):
  path = _write(tmp_path, 'x.csv', f'source,question,answer,rating\nfoo,{PUZZLE_9.replace("0", ".")},{SOLUTION_9},12\n')
  np.testing.assert_array_equal(sudoku_grids.read_puzzle_file(path).solutions[0], _grid(SOLUTION_9))
  ps4 = sudoku_grids.read_puzzle_file(_write(tmp_path, 'four.txt', PUZZLE_4 + '\n'))
  assert ps4.size == 4 and sudoku_grids.is_valid_solution(ps4.solutions[0], 4)
  assert sudoku_grids.is_consistent(ps4.puzzles, ps4.solutions).all()


@pytest.mark.parametrize('text, message', [
    (f'{PUZZLE_9}\n{PUZZLE_9[:80]}\n', r'bad\.txt:2: puzzle has 80 characters'),
    (f'# c\n{PUZZLE_9[:5]}x{PUZZLE_9[6:]}\n', r"bad\.txt:2: puzzle has bad character 'x' at position 6"),
    ('2' + PUZZLE_9[1:] + '\n', r'bad\.txt:1: contradictory givens: digit 2 appears 2 times in row 1'),
    (f'{PUZZLE_9}\n{PUZZLE_4}\n', r'bad\.txt:2: .*mixed sizes'),
    ('.' * 81 + '\n', r'bad\.txt:1: puzzle has several solutions'),
    # No repeated given, but (row 1, column 4) can hold nothing: row 1 has 1,2,3 and column 4 has 4.
    ('123....4........\n', r'bad\.txt:1: puzzle has no solution'),
    (f'puzzle,solution\n{PUZZLE_9},{SOLUTION_9}\n{PUZZLE_9},{SOLUTION_9[::-1]}\n',
     r'bad\.txt:3: solution is inconsistent with the puzzle'),
    (f'puzzle,solution\n{PUZZLE_9},{"1" * 81}\n', r'bad\.txt:2: solution is not a valid grid'),
])
def test_errors_name_file_and_line(tmp_path, text, message):
  path = _write(tmp_path, 'bad.txt', text)
  with pytest.raises(sudoku_grids.SudokuFormatError, match=message):
    sudoku_grids.read_puzzle_file(path)


def test_puzzles_with_several_solutions_can_be_kept(tmp_path):
  path = _write(tmp_path, 'open.txt', f'{PUZZLE_9}\n' + '.' * 81 + '\n')
  ps = sudoku_grids.read_puzzle_file(path, allow_several=True)
  assert len(ps) == 2 and sudoku_grids.is_valid_solution(ps.solutions, 9).all()
  assert sudoku_grids.is_consistent(ps.puzzles, ps.solutions).all()
  with pytest.raises(sudoku_grids.SudokuFormatError, match=r'open\.txt:2: puzzle has several solutions'):
    sudoku_grids.read_puzzle_file(path)


def test_write_then_read_round_trip(tmp_path):
  ps = sudoku_grids.generate_puzzles(5, 9, 30, 35, seed=1)
  sudoku_grids.write_puzzle_file(tmp_path / 'g.csv', ps)
  back = sudoku_grids.read_puzzle_file(tmp_path / 'g.csv', check_unique=True)
  np.testing.assert_array_equal(back.puzzles, ps.puzzles)
  np.testing.assert_array_equal(back.solutions, ps.solutions)


# ---------------------------------------------------------------------------- solver


def test_solver_on_real_hard_puzzles(shared_data):
  for name in ('forum_hardest_1905.csv', 'royle17.csv'):
    ps = _read_shared(shared_data, name, 40)
    counts, solutions = sudoku_solver.solve_many(ps.puzzles, 9)
    np.testing.assert_array_equal(counts, 1)
    np.testing.assert_array_equal(solutions, ps.solutions)


def test_solver_counts_and_rejects_contradictions():
  count, solution = sudoku_solver.solve(_grid(PUZZLE_9), 9)
  assert count == 1 and solution.tobytes() == _grid(SOLUTION_9).tobytes()
  assert sudoku_solver.solve(np.zeros(81, np.int8), 9, max_solutions=5)[0] == 5
  assert sudoku_solver.solve(np.zeros(16, np.int8), 4, max_solutions=1000)[0] == 288  # all 4x4 grids
  bad = _grid(PUZZLE_9)
  bad[1] = bad[2]  # two 3s in row 1
  assert sudoku_solver.solve(bad, 9)[0] == 0
  with pytest.raises(ValueError, match='length 81'):
    sudoku_solver.solve(np.zeros(80, np.int8), 9)


# ---------------------------------------------------------------------------- generator


@pytest.mark.parametrize('size, lo, hi', [(4, 4, 8), (9, 24, 40)])
def test_generated_puzzles_are_unique_with_requested_givens(size, lo, hi):
  ps = sudoku_grids.generate_puzzles(30, size, lo, hi, seed=3)
  counts, solutions = sudoku_solver.solve_many(ps.puzzles, size)
  np.testing.assert_array_equal(counts, 1)
  np.testing.assert_array_equal(solutions, ps.solutions)
  assert sudoku_grids.is_valid_solution(ps.solutions, size).all()
  givens = ps.num_givens()
  assert givens.max() <= hi and (givens >= lo).mean() > 0.8  # may stay above a target that is too low
  assert len({p.tobytes() for p in ps.solutions}) > 20
  again = sudoku_grids.generate_puzzles(30, size, lo, hi, seed=3)
  np.testing.assert_array_equal(again.puzzles, ps.puzzles)


@pytest.mark.parametrize('size', [4, 9])
def test_zero_givens_gives_minimal_puzzle(size):
  puzzle, solution = sudoku_grids.generate_puzzle(np.random.default_rng(5), size, 0)
  assert sudoku_solver.solve(puzzle, size)[0] == 1
  for cell in np.flatnonzero(puzzle):
    smaller = puzzle.copy()
    smaller[cell] = 0
    assert sudoku_solver.solve(smaller, size)[0] == 2
  assert sudoku_grids.is_consistent(puzzle[None], solution[None])[0]


def test_reveal_keeps_exactly_k_cells():
  sol = sudoku_grids.generate_puzzles(50, 9, 30, 30, seed=0).solutions
  k = np.arange(50) % 82
  puzzles = sudoku_grids.reveal(sol, k, np.random.default_rng(0))
  np.testing.assert_array_equal((puzzles > 0).sum(1), k)
  assert sudoku_grids.is_consistent(puzzles, sol).all()
  unique, kept = sudoku_grids.reveal_unique(sol, 30, np.random.default_rng(0))
  assert len(kept) == 50 and ((unique > 0).sum(1) == 30).all()
  np.testing.assert_array_equal(sudoku_solver.solve_many(unique, 9)[0], 1)


# ---------------------------------------------------------------------------- symmetries


def test_augment_preserves_validity_and_consistency():
  ps = sudoku_grids.generate_puzzles(64, 9, 25, 35, seed=2)
  rng = np.random.default_rng(0)
  puzzles, solutions = sudoku_grids.augment(np.repeat(ps.puzzles[:1], 64, 0), np.repeat(ps.solutions[:1], 64, 0), rng, 9)
  assert sudoku_grids.is_valid_solution(solutions, 9).all()
  assert sudoku_grids.is_consistent(puzzles, solutions).all()
  np.testing.assert_array_equal((puzzles > 0).sum(1), (ps.puzzles[0] > 0).sum())
  assert len({p.tobytes() for p in puzzles}) == 64  # an independent transform per example
  np.testing.assert_array_equal(sudoku_solver.solve_many(puzzles, 9)[1], solutions)


def _relabel_first_appearance(grids):
  out = np.zeros_like(grids)
  for k, g in enumerate(grids):
    labels = {}
    for i, v in enumerate(g):
      if v:
        out[k, i] = labels.setdefault(v, len(labels) + 1)
  return out


def _brute_force_form_4x4(grid):
  """Lexicographic minimum over all 128 geometric symmetries, blanks after digits."""
  best = None
  g = grid.reshape(4, 4)
  line_orders = [[band[0] * 2 + w[0][0], band[0] * 2 + w[0][1], band[1] * 2 + w[1][0], band[1] * 2 + w[1][1]]
                 for band in ([0, 1], [1, 0]) for w in itertools.product(*[list(itertools.permutations(range(2)))] * 2)]
  for t, rows, cols in itertools.product((False, True), line_orders, line_orders):
    x = (g.T if t else g)[np.ix_(rows, cols)].reshape(1, 16)
    form = _relabel_first_appearance(x)[0]
    key = tuple(np.where(form == 0, 5, form))
    best = key if best is None or key < best else best
  return np.where(np.array(best) == 5, 0, best).astype(np.int8)


def test_canonical_form_matches_brute_force_on_4x4():
  rng = np.random.default_rng(0)
  ps = sudoku_grids.generate_puzzles(40, 4, 4, 10, seed=4)
  grids = np.concatenate([ps.puzzles, ps.solutions, sudoku_grids.reveal(ps.solutions, 3, rng)])
  forms = sudoku_grids.canonical_forms(grids, 4)
  for grid, form in zip(grids, forms):
    np.testing.assert_array_equal(form, _brute_force_form_4x4(grid))


def test_canonical_key_is_invariant_and_minimal_on_9x9(shared_data):
  ps = _read_shared(shared_data, 'forum_hardest_1905.csv', 20)
  rng = np.random.default_rng(1)
  for puzzle, solution in zip(ps.puzzles[:3], ps.solutions[:3]):
    puzzles, solutions = sudoku_grids.augment(np.stack([puzzle] * 8), np.stack([solution] * 8), rng, 9)
    assert len(set(sudoku_grids.canonical_keys(puzzles, 9))) == 1
    assert len(set(sudoku_grids.canonical_keys(solutions, 9))) == 1
    assert sudoku_grids.canonical_keys(puzzles, 9)[0] == sudoku_grids.canonical_key(puzzle, 9)
    # No random symmetry reads smaller than the canonical form (blanks after digits).
    form = sudoku_grids.canonical_forms(puzzle[None], 9)[0]
    many, _ = sudoku_grids.augment(np.stack([puzzle] * 2000), np.stack([solution] * 2000), rng, 9)
    relabelled = _relabel_first_appearance(many)
    sort_key = lambda g: tuple(np.where(g == 0, 10, g))  # pylint: disable=unnecessary-lambda-assignment
    assert min(sort_key(g) for g in relabelled) >= sort_key(form)
  # Different real puzzles (and their solutions) fall in different classes.
  assert len(set(sudoku_grids.canonical_keys(ps.puzzles, 9))) == len(ps)
  assert len(set(sudoku_grids.canonical_keys(ps.solutions, 9))) == len(ps)


def test_all_4x4_puzzle_classes():
  classes = sudoku_grids.all_puzzle_classes(4)
  assert len(classes) == 4710
  assert len(set(sudoku_grids.canonical_keys(classes.puzzles, 4))) == len(classes)
  np.testing.assert_array_equal(sudoku_solver.solve_many(classes.puzzles, 4)[0], 1)
  assert classes.num_givens().min() == 4


def test_complete_grid_shortcut_matches_general_search():
  solutions = sudoku_grids.generate_puzzles(20, 9, 40, 40, seed=6).solutions
  np.testing.assert_array_equal(sudoku_grids.canonical_forms(solutions, 9),
                                sudoku_grids.canonical_forms(solutions, 9, _fast_complete=False))
