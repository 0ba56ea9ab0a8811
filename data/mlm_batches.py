"""Masked-language-modelling data: packed token sequences and BERT masking.

`prepare(config.data, workdir)` loads the text (see `data.text` for which split
trains and which evaluates), trains or reuses the WordPiece tokenizer in the
workdir, tokenizes every document once, joins documents with [SEP], cuts the
stream into rows of `seq_len` tokens ([CLS] first when `add_cls`) and caches the
int32 arrays under `<workdir>/mlm_tokens/`.

Batches are dicts of NumPy arrays:
  tokens  int32[B, L]   the input after masking,
  targets int32[B, L]   the original ids,
  weights float32[B, L] 1.0 where a position was chosen for prediction, else 0.
Positions are chosen with probability `mask_prob` among non-special tokens; of
those 80% become [MASK], 10% a random non-special token, 10% stay unchanged.
`train_batch` is a pure function of (seed, step, process_index), so training
resumes exactly from the step alone; `eval_batches` is one fixed, seeded set of
masks so all models in a comparison are scored on the same positions.
"""
from collections.abc import Callable
import dataclasses
import functools
import hashlib
import os
import pathlib
import time
from typing import Any

from absl import logging
import numpy as np
from tokenizers import Tokenizer

from data import paths
from data import text as text_lib
from data import tokenizer as tokenizer_lib
from data.tokenizer import SpecialIds
from data.errors import DataConfigError, InputError

MASK_TOKEN_FRAC = 0.8  # Of the chosen positions: share replaced by [MASK] ...
RANDOM_TOKEN_FRAC = 0.1  # ... and by a random non-special token; the rest stay as they are.
CACHE_DIR = 'mlm_tokens'
Batch = dict[str, np.ndarray]


def pack_sequences(stream_T: np.ndarray, seq_len: int, cls_id: int | None = None) -> np.ndarray:
  """Cuts a token stream into int32[N, seq_len] rows, dropping the ragged tail.

  With `cls_id`, each row is [CLS] followed by seq_len - 1 stream tokens.
  """
  body_len = seq_len - (cls_id is not None)
  if body_len < 1:
    raise DataConfigError(f'data.seq_len={seq_len} leaves no room for text')
  num_rows = len(stream_T) // body_len
  if num_rows == 0:
    raise InputError(f'{len(stream_T)} tokens are too few for one sequence of data.seq_len={seq_len}')
  rows_NxK = np.asarray(stream_T[:num_rows * body_len], np.int32).reshape(num_rows, body_len)
  if cls_id is None:
    return rows_NxK
  cls_Nx1 = np.full((num_rows, 1), cls_id, np.int32)
  return np.concatenate([cls_Nx1, rows_NxK], axis=1)


@functools.lru_cache(maxsize=8)
def _regular_ids(vocab_size: int, specials: tuple[int, ...]) -> np.ndarray:
  """All ids below vocab_size that are not special tokens (the random-replacement pool)."""
  regular = np.setdiff1d(np.arange(vocab_size, dtype=np.int32), np.asarray(specials, np.int32))
  if regular.size == 0:
    raise InputError(f'vocab of {vocab_size} holds only special tokens')
  return regular


def mask_tokens(tokens_BxL: np.ndarray, rng: np.random.Generator, mask_prob: float, vocab_size: int,
                special_ids: SpecialIds) -> Batch:
  """BERT masking of `tokens_BxL` (see module docstring); specials are never chosen."""
  if not 0.0 < mask_prob < 1.0:
    raise DataConfigError(f'data.mask_prob must be in (0, 1), got {mask_prob}')
  tokens_BxL = np.asarray(tokens_BxL, np.int32)
  shape = tokens_BxL.shape
  specials = tuple(int(i) for i in special_ids.all)
  candidate_BxL = ~np.isin(tokens_BxL, specials)
  chosen_BxL = candidate_BxL & (rng.random(shape) < mask_prob)
  action_BxL = rng.random(shape)
  regular = _regular_ids(int(vocab_size), specials)
  random_ids_BxL = regular[rng.integers(0, regular.size, shape)]
  to_mask_BxL = chosen_BxL & (action_BxL < MASK_TOKEN_FRAC)
  to_random_BxL = chosen_BxL & (action_BxL >= MASK_TOKEN_FRAC) & (
      action_BxL < MASK_TOKEN_FRAC + RANDOM_TOKEN_FRAC)
  inputs_BxL = np.where(to_mask_BxL, np.int32(special_ids.mask), tokens_BxL)
  inputs_BxL = np.where(to_random_BxL, random_ids_BxL, inputs_BxL).astype(np.int32)
  return dict(tokens=inputs_BxL, targets=tokens_BxL.copy(), weights=chosen_BxL.astype(np.float32))


def train_batch(train_tokens_NxL: np.ndarray, data_cfg: Any, step: int, batch_size: int, vocab_size: int,
                special_ids: SpecialIds, process_index: int = 0, process_count: int = 1) -> Batch:
  """This host's slice (batch_size // process_count rows) of the masked batch for `step`.

  Rows are drawn uniformly with replacement and masked with
  np.random.default_rng([data.seed, step, process_index]): a pure function of
  those three numbers.
  """
  if batch_size % process_count:
    raise DataConfigError(f'batch_size {batch_size} is not divisible by process_count {process_count}')
  if step < 0 or not 0 <= process_index < process_count:
    raise ValueError(f'bad step {step} / process_index {process_index} of {process_count}')
  rng = np.random.default_rng([int(data_cfg.seed), int(step), int(process_index)])
  rows_B = rng.integers(0, len(train_tokens_NxL), batch_size // process_count)
  return mask_tokens(train_tokens_NxL[rows_B], rng, float(data_cfg.mask_prob), vocab_size, special_ids)


def eval_batches(eval_tokens_NxL: np.ndarray, data_cfg: Any, batch_size: int, vocab_size: int,
                 special_ids: SpecialIds) -> list[Batch]:
  """The fixed evaluation set: up to data.num_eval_sequences rows, masked with data.eval_seed.

  Rows (a seeded sample when there are more than asked, kept in corpus order)
  and masks are drawn once for the whole set, so they do not depend on
  `batch_size`. The last batch is padded to `batch_size` with [PAD] rows of
  weight 0, so every batch has the same shape. `num_eval_sequences <= 0` means
  all rows.
  """
  if batch_size < 1:
    raise DataConfigError(f'eval batch_size must be positive, got {batch_size}')
  rng = np.random.default_rng([int(data_cfg.eval_seed)])
  num_rows = len(eval_tokens_NxL)
  wanted = int(data_cfg.num_eval_sequences)
  if 0 < wanted < num_rows:
    rows = np.sort(rng.choice(num_rows, wanted, replace=False))
  else:
    rows = np.arange(num_rows)
  masked = mask_tokens(eval_tokens_NxL[rows], rng, float(data_cfg.mask_prob), vocab_size, special_ids)
  pad_rows = -len(rows) % batch_size
  if pad_rows:
    seq_len = eval_tokens_NxL.shape[1]
    pad_PxL = np.full((pad_rows, seq_len), special_ids.pad, np.int32)
    masked = dict(tokens=np.concatenate([masked['tokens'], pad_PxL]),
                  targets=np.concatenate([masked['targets'], pad_PxL]),
                  weights=np.concatenate([masked['weights'], np.zeros((pad_rows, seq_len), np.float32)]))
  return [{k: v[i:i + batch_size] for k, v in masked.items()} for i in range(0, len(rows), batch_size)]


@dataclasses.dataclass(frozen=True)
class MLMData:
  """Everything the trainer needs: tokenizer, ids and the packed token arrays."""
  tokenizer: Tokenizer
  vocab_size: int  # The trained vocabulary (can be below data.vocab_size on small text).
  special_ids: SpecialIds
  train_tokens_NxL: np.ndarray  # int32 rows of seq_len tokens.
  eval_tokens_NxL: np.ndarray


# Which data fields the token caches depend on (through the text source, the tokenizer and the packing),
# and which change only batches and masks. Every field of configs/mlm.py's `data` section is in exactly
# one of the two (tests/test_mlm_data.py checks), so a new field cannot be forgotten.
TOKEN_CACHE_FIELDS = ('files', 'eval_files', 'eval_fraction', 'hf_name', 'hf_config', 'vocab_size', 'lowercase',
                      'seq_len', 'add_cls')
BATCH_FIELDS = ('mask_prob', 'seed', 'eval_seed', 'num_eval_sequences')


def _cache_path(workdir: pathlib.Path, data_cfg: Any, split: str, tokenizer: Tokenizer,
                add_cls: bool) -> pathlib.Path:
  """`<workdir>/mlm_tokens/<split>_<hash of (text source, tokenizer, seq_len, add_cls)>.npy`."""
  key = '\n'.join([
      text_lib.source_key(data_cfg), split,
      hashlib.sha256(tokenizer.to_str().encode()).hexdigest(),
      f'seq_len={int(data_cfg.seq_len)}', f'add_cls={add_cls}'])
  return workdir / CACHE_DIR / f'{split}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy'


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)

  def write(tmp: pathlib.Path) -> None:
    with tmp.open('wb') as f:
      np.save(f, array)
  paths.write_atomically(path, write)


def prepare(data_cfg: Any, workdir: str | os.PathLike[str], process_index: int = 0,
            hf_loader: Callable[[str, str], Any] | None = None) -> MLMData:
  """Loads text, tokenizer and packed tokens, reusing what `workdir` already holds.

  On resume (tokenizer and both caches present) no text is read at all. Use
  one workdir for a whole comparison so every model shares tokenizer and data.
  """
  workdir = pathlib.Path(workdir)
  add_cls = bool(data_cfg.add_cls)
  texts: dict[str, list[str]] | None = None

  def get_texts() -> dict[str, list[str]]:
    nonlocal texts
    if texts is None:
      start = time.perf_counter()
      texts = text_lib.load_texts(data_cfg, hf_loader=hf_loader)
      logging.info('Loaded text in %.1fs: %s', time.perf_counter() - start,
                   {k: f'{len(v)} documents, {sum(map(len, v))} chars' for k, v in texts.items()})
    return texts

  needs_training = not (workdir / tokenizer_lib.TOKENIZER_FILE).is_file() and process_index == 0
  tokenizer = tokenizer_lib.load_or_train_tokenizer(
      get_texts()[text_lib.TRAIN] if needs_training else None, int(data_cfg.vocab_size), workdir,
      lowercase=bool(data_cfg.lowercase), process_index=process_index)
  ids = tokenizer_lib.special_ids(tokenizer)

  arrays = {}
  for split in (text_lib.TRAIN, text_lib.EVAL):
    path = _cache_path(workdir, data_cfg, split, tokenizer, add_cls)
    if path.is_file():
      arrays[split] = np.load(path)
      logging.info('Reusing %s tokens from %s.', split, path)
      continue
    start = time.perf_counter()
    stream_T = tokenizer_lib.encode_to_array(tokenizer, get_texts()[split], ids.sep)
    seconds = time.perf_counter() - start
    try:
      arrays[split] = pack_sequences(stream_T, int(data_cfg.seq_len), ids.cls if add_cls else None)
    except InputError as e:
      raise InputError(f'{text_lib.describe_split(data_cfg, split)}: {e}; give more text') from None
    logging.info('Tokenized %s: %d tokens in %.1fs (%.0f tokens/s).', split, len(stream_T), seconds,
                 len(stream_T) / max(seconds, 1e-9))
    _save_npy(path, arrays[split])

  data = MLMData(tokenizer=tokenizer, vocab_size=tokenizer.get_vocab_size(), special_ids=ids,
                 train_tokens_NxL=arrays[text_lib.TRAIN], eval_tokens_NxL=arrays[text_lib.EVAL])
  for split, array in arrays.items():
    logging.info('MLM %s: %d sequences x %d = %d tokens.', split, array.shape[0], array.shape[1], array.size)
  logging.info('MLM vocab %d, special ids %s.', data.vocab_size, ids)
  return data
