"""Tests of data/sudoku_pipeline.py: splits without leakage, caching, batches, HF loader."""
import ml_collections
import numpy as np
import pytest

from data import sudoku_grids
from data import sudoku_pipeline
from data import sudoku_solver


def _cfg(**overrides) -> ml_collections.ConfigDict:
  """configs/sudoku.py's data section (every field there) with this test's small 4x4 values."""
  from configs import sudoku as sudoku_configs
  cfg = ml_collections.ConfigDict(sudoku_configs.get_config('4x4').data.to_dict())
  cfg.update(dict(
      size=4, source='generate', shared_dir='', shared_files='', train_file='',
      hf_name='sapientinc/sudoku-extreme', num_train=300, num_val=50, num_test=60, split_by='puzzle',
      givens_min=4, givens_max=8, on_the_fly=False, curriculum_steps=0, augment=True, eval_givens='', seed=0,
      val_givens=0, unique_reveal=True))
  cfg.update(overrides)
  return cfg


def _keys(ps: sudoku_grids.PuzzleSet, of: str = 'puzzles') -> set[bytes]:
  return set(sudoku_grids.canonical_keys(getattr(ps, of), ps.size))


def _assert_sound(splits: sudoku_pipeline.SudokuSplits, of: str) -> None:
  for ps in (splits.train, splits.val, splits.test, *splits.extra_tests.values()):
    assert sudoku_grids.is_valid_solution(ps.solutions, splits.size).all()
    assert sudoku_grids.is_consistent(ps.puzzles, ps.solutions).all()
  train, val, test = (_keys(s, of) for s in (splits.train, splits.val, splits.test))
  assert not train & val and not train & test and not val & test
  assert len(_keys(splits.train)) == len(splits.train)  # no duplicates up to symmetry


def test_generated_4x4_splits_are_disjoint_cached_and_deterministic(tmp_path):
  cfg = _cfg()
  splits = sudoku_pipeline.build_splits(cfg, str(tmp_path))
  assert (len(splits.train), len(splits.val), len(splits.test)) == (300, 50, 60)
  _assert_sound(splits, 'puzzles')
  assert set(splits.train.num_givens()) <= set(range(4, 9))
  cached = list(tmp_path.glob('sudoku_splits_*.npz'))
  assert len(cached) == 1
  again = sudoku_pipeline.build_splits(cfg, str(tmp_path))  # from the cache
  np.testing.assert_array_equal(again.train.puzzles, splits.train.puzzles)
  fresh = sudoku_pipeline.build_splits(cfg, None)  # rebuilt: same arrays
  np.testing.assert_array_equal(fresh.test.solutions, splits.test.solutions)
  other = sudoku_pipeline.build_splits(_cfg(seed=1), str(tmp_path))
  assert not np.array_equal(other.train.puzzles, splits.train.puzzles)
  assert len(list(tmp_path.glob('sudoku_splits_*.npz'))) == 2


def test_4x4_requests_beyond_what_exists_fail_clearly():
  with pytest.raises(ValueError, match='too few distinct puzzles'):
    sudoku_pipeline.build_splits(_cfg(num_train=5000), None)
  with pytest.raises(ValueError, match="split_by='puzzle'"):
    sudoku_pipeline.build_splits(_cfg(split_by='solution'), None)
  everything = sudoku_pipeline.build_splits(_cfg(num_train=0), None)  # 0 = all the rest
  assert len(everything.train) == 2236 - 110  # classes with 4..8 givens, less val and test


def test_shared_9x9_splits_by_solution_with_extra_tests(shared_data, tmp_path):
  cfg = _cfg(size=9, source='shared', shared_dir=str(shared_data / 'sudoku'),
             shared_files='royle17.csv,magictour_top1465', num_train=200, num_val=40, num_test=60,
             split_by='solution', givens_min=0, givens_max=0, eval_givens='45,30')
  splits = sudoku_pipeline.build_splits(cfg, str(tmp_path))
  assert (len(splits.train), len(splits.val), len(splits.test)) == (200, 40, 60)
  _assert_sound(splits, 'solutions')
  per_file = {k: v for k, v in splits.extra_tests.items() if not k.startswith('givens')}
  assert {'givens45', 'givens30', 'royle17'} <= set(splits.extra_tests) <= {'givens45', 'givens30', *per_file}
  assert set(per_file) <= {'royle17', 'magictour_top1465'} and sum(map(len, per_file.values())) == 60
  assert (splits.extra_tests['royle17'].num_givens() == 17).all()
  for k in (45, 30):
    ps = splits.extra_tests[f'givens{k}']
    assert len(ps) == 60 and (ps.num_givens() == k).all()
    assert _keys(ps, 'solutions') <= _keys(splits.test, 'solutions')


def test_file_source_and_eval_file(tmp_path):
  sudoku_grids.write_puzzle_file(tmp_path / 'mine.csv', sudoku_grids.generate_puzzles(40, 9, 30, 36, seed=7))
  splits = sudoku_pipeline.build_splits(
      _cfg(size=9, source='file', train_file=str(tmp_path / 'mine.csv'), num_train=0, num_val=5, num_test=5), None)
  assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 5, 5)
  assert len(sudoku_pipeline.load_eval_file(tmp_path / 'mine.csv')) == 40


def test_train_batch_is_a_pure_function_of_seed_and_step():
  train = sudoku_grids.generate_puzzles(50, 9, 30, 40, seed=0)
  cfg = _cfg(size=9, augment=True, on_the_fly=True, givens_min=30, givens_max=60, curriculum_steps=100)
  b1 = sudoku_pipeline.train_batch(train, cfg, step=7, batch_size=32)
  b2 = sudoku_pipeline.train_batch(train, cfg, step=7, batch_size=32)
  b3 = sudoku_pipeline.train_batch(train, cfg, step=8, batch_size=32)
  assert b1['puzzle'].shape == (32, 81) and b1['puzzle'].dtype == np.int8
  np.testing.assert_array_equal(b1['puzzle'], b2['puzzle'])
  np.testing.assert_array_equal(b1['solution'], b2['solution'])
  assert not np.array_equal(b1['solution'], b3['solution'])
  assert sudoku_grids.is_valid_solution(b1['solution'], 9).all() and sudoku_grids.is_consistent(b1['puzzle'], b1['solution']).all()
  # Hosts get different slices of the global batch.
  h0 = sudoku_pipeline.train_batch(train, cfg, 7, 32, process_index=0, process_count=2)
  h1 = sudoku_pipeline.train_batch(train, cfg, 7, 32, process_index=1, process_count=2)
  assert h0['puzzle'].shape == (16, 81) and not np.array_equal(h0['solution'], h1['solution'])


def test_curriculum_moves_the_fewest_givens_down():
  train = sudoku_grids.generate_puzzles(20, 9, 30, 40, seed=0)
  cfg = _cfg(size=9, augment=False, on_the_fly=True, givens_min=30, givens_max=60, curriculum_steps=100)
  assert [sudoku_pipeline.curriculum_min_givens(cfg, s) for s in (0, 50, 100, 500)] == [60, 45, 30, 30]
  start = (sudoku_pipeline.train_batch(train, cfg, 0, 256)['puzzle'] > 0).sum(1)
  end = (sudoku_pipeline.train_batch(train, cfg, 1000, 256)['puzzle'] > 0).sum(1)
  assert (start == 60).all()
  assert end.min() >= 30 and end.max() <= 60 and end.min() < 40
  flat = (sudoku_pipeline.train_batch(train, _cfg(size=9, augment=False), 3, 8)['puzzle'])
  assert {p.tobytes() for p in flat} <= {p.tobytes() for p in train.puzzles}  # source puzzles kept as they are


def test_on_the_fly_puzzles_have_a_unique_solution_unless_asked_otherwise():
  train = sudoku_grids.generate_puzzles(20, 9, 30, 40, seed=0)
  unique = _cfg(size=9, augment=True, on_the_fly=True, givens_min=30, givens_max=36, unique_reveal=True)
  batch = sudoku_pipeline.train_batch(train, unique, 0, 64)
  counts, _ = sudoku_solver.solve_many(batch['puzzle'], 9, 2)
  assert (counts == 1).all()
  givens = (batch['puzzle'] > 0).sum(1)
  assert givens.min() >= 30 and givens.max() <= 36 and sudoku_grids.is_consistent(batch['puzzle'], batch['solution']).all()
  # A plain reveal of 30..36 cells leaves most 9x9 puzzles with several solutions.
  loose = _cfg(size=9, augment=True, on_the_fly=True, givens_min=30, givens_max=36, unique_reveal=False)
  counts, _ = sudoku_solver.solve_many(sudoku_pipeline.train_batch(train, loose, 0, 64)['puzzle'], 9, 2)
  assert (counts > 1).mean() > 0.5


def _write_hf_csv(path, ps: sudoku_grids.PuzzleSet) -> None:
  with open(path, 'w') as f:
    f.write('source,question,answer,rating\n')
    for k, (p, s) in enumerate(zip(ps.puzzles, ps.solutions)):
      f.write(f'gen,{sudoku_grids.format_grid(p)},{sudoku_grids.format_grid(s)},{k % 5}\n')


def test_hf_loader_on_local_csv(tmp_path, monkeypatch):
  ps = sudoku_grids.generate_puzzles(60, 9, 28, 36, seed=9)
  _write_hf_csv(tmp_path / 'train.csv', ps.subset(slice(0, 45)))
  _write_hf_csv(tmp_path / 'test.csv', ps.subset(slice(45, 60)))
  files = {'train': str(tmp_path / 'train.csv'), 'test': str(tmp_path / 'test.csv')}
  hf_cache = str(tmp_path / 'hf_cache')
  loaded = sudoku_pipeline.load_hf_sudoku('local', data_files=files, cache_dir=hf_cache)
  np.testing.assert_array_equal(loaded['train'].puzzles, ps.puzzles[:45])
  np.testing.assert_array_equal(loaded['test'].solutions, ps.solutions[45:])
  # build_splits' 'hf' source: the dataset's own test split feeds the test set.
  real_loader = sudoku_pipeline.load_hf_sudoku
  monkeypatch.setattr(sudoku_pipeline, 'load_hf_sudoku',
                      lambda name, **kw: real_loader(name, data_files=files, cache_dir=hf_cache, **kw))
  splits = sudoku_pipeline.build_splits(_cfg(size=9, source='hf', num_train=30, num_val=5, num_test=10,
                                             split_by='solution', givens_min=0, givens_max=0), None)
  assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 5, 10)
  assert _keys(splits.test) <= _keys(loaded['test'])
  _assert_sound(splits, 'solutions')
  bad = tmp_path / 'bad.csv'
  bad.write_text('source,question,answer,rating\nx,' + '1' * 80 + ',,0\n')
  with pytest.raises(sudoku_grids.SudokuFormatError, match=r'local\[train\]:2: puzzle has 80 characters'):
    real_loader('local', data_files={'train': str(bad)}, cache_dir=hf_cache)


def test_every_data_field_is_declared_as_split_or_batch_field():
  """The split cache key is built from declared fields: a new config field must be declared."""
  from configs import sudoku as sudoku_configs
  declared = set(sudoku_pipeline.SPLIT_FIELDS) | set(sudoku_pipeline.BATCH_FIELDS)
  declared |= {f for fields in sudoku_pipeline.SOURCE_FIELDS.values() for f in fields}
  for variant in sudoku_configs.VARIANTS:
    assert set(sudoku_configs.get_config(variant).data) == declared, variant
  assert not set(sudoku_pipeline.SPLIT_FIELDS) & set(sudoku_pipeline.BATCH_FIELDS)


def test_truncated_split_cache_is_rebuilt_not_fatal(tmp_path):
  cfg = _cfg()
  first = sudoku_pipeline.build_splits(cfg, str(tmp_path))
  (cache,) = tmp_path.glob('sudoku_splits_*.npz')
  cache.write_bytes(cache.read_bytes()[:100])  # As a kill mid-write of an older version would leave it.
  again = sudoku_pipeline.build_splits(cfg, str(tmp_path))
  np.testing.assert_array_equal(first.train.puzzles, again.train.puzzles)
