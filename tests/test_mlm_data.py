"""Tests for the MLM data layer: text loading, WordPiece tokenizer, packing, masking."""
import pathlib

import ml_collections
import numpy as np
import pytest

from data import mlm_batches
from data import text as text_lib
from data import tokenizer as tokenizer_lib

SPECIALS = tokenizer_lib.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


def make_cfg(**overrides) -> ml_collections.ConfigDict:
  cfg = dict(files='', eval_files='', eval_fraction=0.1, hf_name='Salesforce/wikitext',
             hf_config='wikitext-2-raw-v1', vocab_size=1000, seq_len=32, mask_prob=0.15, seed=0,
             eval_seed=1234, num_eval_sequences=40, lowercase=True, add_cls=True)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def write(path: pathlib.Path, lines: list[str]) -> str:
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return str(path)


@pytest.fixture(scope='module')
def wiki_lines(shared_data) -> list[str]:
  """The first 600 non-blank lines of WikiText-2 valid (about 45K words)."""
  return text_lib.read_lines(shared_data / 'text' / 'wiki.valid.tokens')[:600]


@pytest.fixture(scope='module')
def wiki_tokenizer(wiki_lines, tmp_path_factory):
  return tokenizer_lib.train_tokenizer(wiki_lines, 2000, tmp_path_factory.mktemp('tok'))


# --- text loading ---------------------------------------------------------------------------------


def test_files_split_off_last_fraction_as_eval(tmp_path):
  lines = [f'line number {i}' for i in range(10)]
  path = write(tmp_path / 'a.txt', lines[:5] + ['', '   '] + lines[5:])
  texts = text_lib.load_texts(make_cfg(files=path, eval_fraction=0.2))
  assert texts['train'] == lines[:8]
  assert texts['eval'] == lines[8:]


def test_files_and_eval_files_are_read_in_order(tmp_path):
  a = write(tmp_path / 'a.txt', ['alpha one', 'alpha two'])
  b = write(tmp_path / 'b.txt', ['beta'])
  e = write(tmp_path / 'e.txt', ['held out'])
  texts = text_lib.load_texts(make_cfg(files=f'{a}, {b}', eval_files=e))
  assert texts == {'train': ['alpha one', 'alpha two', 'beta'], 'eval': ['held out']}


def test_missing_and_empty_files_name_the_file(tmp_path):
  missing = tmp_path / 'nope.txt'
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    text_lib.load_texts(make_cfg(files=str(missing)))
  empty = write(tmp_path / 'empty.txt', ['', '  '])
  with pytest.raises(ValueError, match='empty.txt.*empty'):
    text_lib.load_texts(make_cfg(files=empty))
  good = write(tmp_path / 'good.txt', ['a', 'b'])
  with pytest.raises(FileNotFoundError, match='gone.txt'):
    text_lib.load_texts(make_cfg(files=good, eval_files=str(tmp_path / 'gone.txt')))
  with pytest.raises(ValueError, match='eval_fraction'):
    text_lib.load_texts(make_cfg(files=good, eval_fraction=0.0))


def test_hf_path_reads_train_and_validation_never_test(tmp_path):
  datasets = pytest.importorskip('datasets')
  train = write(tmp_path / 'train.txt', ['', ' = Title = ', '', ' first paragraph . ', 'second one'])
  valid = write(tmp_path / 'valid.txt', ['', ' held out paragraph ', ''])
  test = write(tmp_path / 'test.txt', ['SECRET TEST TEXT'])
  calls = []

  def local_loader(name, config):
    calls.append((name, config))
    return datasets.load_dataset('text', data_files={'train': train, 'validation': valid, 'test': test},
                                 cache_dir=str(tmp_path / 'hf_cache'))

  texts = text_lib.load_texts(make_cfg(files='', hf_config='wikitext-2-raw-v1'), hf_loader=local_loader)
  assert calls == [('Salesforce/wikitext', 'wikitext-2-raw-v1')]
  assert texts == {'train': ['= Title =', 'first paragraph .', 'second one'], 'eval': ['held out paragraph']}

  def no_validation(name, config):
    del name, config
    return datasets.load_dataset('text', data_files={'train': train}, cache_dir=str(tmp_path / 'hf_cache'))

  with pytest.raises(ValueError, match="no 'validation' split"):
    text_lib.load_texts(make_cfg(files=''), hf_loader=no_validation)


# --- tokenizer ------------------------------------------------------------------------------------


def test_tokenizer_saves_and_reloads_identical_ids(wiki_lines, wiki_tokenizer, tmp_path):
  ids = tokenizer_lib.special_ids(wiki_tokenizer)
  assert ids == SPECIALS
  assert 1000 < wiki_tokenizer.get_vocab_size() <= 2000
  encoded = [e.ids for e in wiki_tokenizer.encode_batch(wiki_lines[:50], add_special_tokens=False)]
  assert sum(map(len, encoded)) > 1000
  # BERT-style: lower-cased, punctuation split off, WordPiece continuation pieces.
  tokens = wiki_tokenizer.encode('Homarus GAMMARUS, lobster.', add_special_tokens=False).tokens
  assert tokens[-1] == '.' and ',' in tokens and all(t == t.lower() for t in tokens)

  workdir = tmp_path / 'w'
  trained = tokenizer_lib.load_or_train_tokenizer(wiki_lines, 2000, workdir)
  assert (workdir / 'tokenizer.json').is_file()
  reloaded = tokenizer_lib.load_or_train_tokenizer(['other text entirely'], 2000, workdir)
  assert reloaded.to_str() == trained.to_str()
  for a, b in zip(trained.encode_batch(wiki_lines[:50]), reloaded.encode_batch(wiki_lines[:50])):
    assert a.ids == b.ids
  assert tokenizer_lib.load_or_train_tokenizer(None, 2000, workdir).to_str() == trained.to_str()
  with pytest.raises(ValueError, match='vocab_size'):
    tokenizer_lib.load_or_train_tokenizer(wiki_lines, 3000, workdir)
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    tokenizer_lib.load_or_train_tokenizer(None, 2000, tmp_path / 'fresh')


def test_training_is_reproducible_and_keeps_five_special_tokens(wiki_lines, wiki_tokenizer, tmp_path):
  # HF's trainer alone gives other ids (and now and then another vocabulary) from one training to the next.
  again = [tokenizer_lib.train_tokenizer(wiki_lines, 2000, tmp_path / str(i)) for i in range(4)]
  assert {tok.to_str() for tok in again} == {wiki_tokenizer.to_str()}
  # The alphabet was special for training only: single letters are not split out of words.
  assert sorted(wiki_tokenizer.get_added_tokens_decoder()) == [0, 1, 2, 3, 4]
  assert wiki_tokenizer.encode('banana', add_special_tokens=False).tokens[0] != 'b'
  with pytest.raises(ValueError, match='no room for merges'):
    tokenizer_lib.train_tokenizer(wiki_lines, 50, tmp_path / 'small')


def test_encode_to_array_puts_sep_after_each_document(wiki_tokenizer):
  docs = ['the lobster', 'a second document .']
  stream = tokenizer_lib.encode_to_array(wiki_tokenizer, docs, SPECIALS.sep, chunk=1)
  first = wiki_tokenizer.encode(docs[0], add_special_tokens=False).ids
  second = wiki_tokenizer.encode(docs[1], add_special_tokens=False).ids
  np.testing.assert_array_equal(stream, first + [SPECIALS.sep] + second + [SPECIALS.sep])
  assert stream.dtype == np.int32


# --- packing --------------------------------------------------------------------------------------


def test_pack_sequences_lengths():
  stream = np.arange(100, 203, dtype=np.int32)  # 103 tokens.
  rows = mlm_batches.pack_sequences(stream, 10)
  assert rows.shape == (10, 10) and rows.dtype == np.int32
  np.testing.assert_array_equal(rows.reshape(-1), stream[:100])
  with_cls = mlm_batches.pack_sequences(stream, 10, cls_id=2)
  assert with_cls.shape == (11, 10)
  assert (with_cls[:, 0] == 2).all()
  np.testing.assert_array_equal(with_cls[:, 1:].reshape(-1), stream[:99])
  with pytest.raises(ValueError, match='too few'):
    mlm_batches.pack_sequences(stream[:5], 10)


def test_prepare_packs_caches_and_resumes_without_text(wiki_lines, tmp_path, monkeypatch):
  path = write(tmp_path / 'wiki.txt', wiki_lines)
  cfg = make_cfg(files=path, vocab_size=1500, seq_len=64, eval_fraction=0.2)
  workdir = tmp_path / 'work'
  data = mlm_batches.prepare(cfg, workdir)
  assert data.vocab_size == data.tokenizer.get_vocab_size() <= 1500
  for tokens in (data.train_tokens_NxL, data.eval_tokens_NxL):
    assert tokens.dtype == np.int32 and tokens.shape[1] == 64 and tokens.shape[0] > 10
    assert (tokens[:, 0] == data.special_ids.cls).all()
    assert (tokens[:, 1:] != data.special_ids.cls).all()
    assert (tokens == data.special_ids.sep).any() and tokens.max() < data.vocab_size
  assert data.train_tokens_NxL.shape[0] > 3 * data.eval_tokens_NxL.shape[0]
  assert len(list((workdir / mlm_batches.CACHE_DIR).glob('*.npy'))) == 2

  def no_text(*args, **kwargs):
    raise AssertionError('text was read again on resume')

  monkeypatch.setattr(text_lib, 'load_texts', no_text)
  again = mlm_batches.prepare(cfg, workdir)
  np.testing.assert_array_equal(again.train_tokens_NxL, data.train_tokens_NxL)
  np.testing.assert_array_equal(again.eval_tokens_NxL, data.eval_tokens_NxL)
  # Another seq_len is another cache key: it needs the text.
  with pytest.raises(AssertionError, match='read again'):
    mlm_batches.prepare(make_cfg(files=path, vocab_size=1500, seq_len=32, eval_fraction=0.2), workdir)


# --- masking --------------------------------------------------------------------------------------


def synthetic_tokens(num_rows: int, seq_len: int, vocab_size: int, seed: int = 0) -> np.ndarray:
  """Regular ids with [CLS] first and some [SEP]s, like packed text."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, vocab_size, (num_rows, seq_len)).astype(np.int32)
  tokens[rng.random(tokens.shape) < 0.05] = SPECIALS.sep
  tokens[:, 0] = SPECIALS.cls
  return tokens


def test_masking_statistics():
  vocab = 500
  tokens = synthetic_tokens(1024, 128, vocab)
  batch = mlm_batches.mask_tokens(tokens, np.random.default_rng(7), 0.15, vocab, SPECIALS)
  assert batch['tokens'].dtype == np.int32 and batch['targets'].dtype == np.int32
  assert batch['weights'].dtype == np.float32
  np.testing.assert_array_equal(batch['targets'], tokens)
  chosen = batch['weights'] == 1.0
  special = np.isin(tokens, SPECIALS.all)
  assert not (chosen & special).any()
  assert np.isin(batch['weights'], [0.0, 1.0]).all()
  assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.005
  np.testing.assert_array_equal(batch['tokens'][~chosen], tokens[~chosen])
  inputs = batch['tokens'][chosen]
  originals = tokens[chosen]
  to_mask = inputs == SPECIALS.mask
  unchanged = inputs == originals
  to_random = ~to_mask & ~unchanged
  assert abs(to_mask.mean() - 0.8) < 0.01
  assert abs(to_random.mean() - 0.1 * (1 - 1 / (vocab - 5))) < 0.01
  assert abs(unchanged.mean() - 0.1) < 0.01
  assert not np.isin(inputs[to_random], SPECIALS.all).any() and inputs.max() < vocab


def test_train_batch_is_a_pure_function_of_seed_step_and_process():
  tokens = synthetic_tokens(200, 32, 300)
  cfg = make_cfg(seed=3)
  args = (tokens, cfg)
  kw = dict(batch_size=16, vocab_size=300, special_ids=SPECIALS)
  a = mlm_batches.train_batch(*args, step=5, **kw)
  b = mlm_batches.train_batch(*args, step=5, **kw)
  for key in ('tokens', 'targets', 'weights'):
    np.testing.assert_array_equal(a[key], b[key])
  assert a['tokens'].shape == (16, 32) and a['weights'].sum() > 0
  assert not np.array_equal(a['targets'], mlm_batches.train_batch(*args, step=6, **kw)['targets'])
  other_seed = mlm_batches.train_batch(tokens, make_cfg(seed=4), step=5, **kw)
  assert not np.array_equal(a['targets'], other_seed['targets'])
  host0 = mlm_batches.train_batch(*args, step=5, process_index=0, process_count=2, **kw)
  host1 = mlm_batches.train_batch(*args, step=5, process_index=1, process_count=2, **kw)
  assert host0['tokens'].shape == (8, 32)
  assert not np.array_equal(host0['targets'], host1['targets'])
  with pytest.raises(ValueError, match='divisible'):
    mlm_batches.train_batch(*args, step=0, process_count=3, **kw)


def test_eval_batches_are_fixed_and_independent_of_batch_size():
  tokens = synthetic_tokens(100, 32, 300, seed=1)
  cfg = make_cfg(num_eval_sequences=40, eval_seed=11)
  kw = dict(vocab_size=300, special_ids=SPECIALS)
  first = mlm_batches.eval_batches(tokens, cfg, batch_size=16, **kw)
  second = mlm_batches.eval_batches(tokens, cfg, batch_size=16, **kw)
  assert len(first) == 3
  assert all(b['tokens'].shape == (16, 32) for b in first)
  for x, y in zip(first, second):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  # Padding rows (40 = 16 + 16 + 8) carry no weight.
  assert (first[-1]['weights'][8:] == 0).all() and (first[-1]['tokens'][8:] == SPECIALS.pad).all()
  # Same rows and masks with another batch size.
  by_ten = mlm_batches.eval_batches(tokens, cfg, batch_size=10, **kw)
  assert len(by_ten) == 4
  for key in ('tokens', 'targets', 'weights'):
    np.testing.assert_array_equal(np.concatenate([b[key] for b in first])[:40],
                                  np.concatenate([b[key] for b in by_ten]))
  # Rows come from the eval set, sampled without repeats.
  rows = np.concatenate([b['targets'] for b in by_ten])
  assert len({r.tobytes() for r in rows}) == 40
  assert all((tokens == r).all(axis=1).any() for r in rows)
  # Another eval seed gives other masks; num_eval_sequences <= 0 takes every row.
  other = mlm_batches.eval_batches(tokens, make_cfg(num_eval_sequences=40, eval_seed=12), batch_size=16, **kw)
  assert not np.array_equal(other[0]['weights'], first[0]['weights'])
  assert len(mlm_batches.eval_batches(tokens, make_cfg(num_eval_sequences=0), batch_size=50, **kw)) == 2


def test_every_data_field_is_declared_as_token_cache_or_batch_field():
  from configs import mlm as mlm_configs
  declared = set(mlm_batches.TOKEN_CACHE_FIELDS) | set(mlm_batches.BATCH_FIELDS)
  assert not set(mlm_batches.TOKEN_CACHE_FIELDS) & set(mlm_batches.BATCH_FIELDS)
  for variant in mlm_configs.VARIANTS:
    assert set(mlm_configs.get_config(variant).data) == declared, variant
