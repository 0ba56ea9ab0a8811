"""Language-model data of a workdir, prepared once: tokenizer, packed train and validation rows, and what the
reference baselines need (data/lm_text.py says how documents are read, split and packed).

`prepare(config.data, workdir)` reads the documents, makes or reuses the tokenizer (data/bpe.py), encodes
both splits and caches the rows under `<workdir>/lm_tokens/` (keyed by the source, the tokenizer and
seq_len), so a resumed run reads no text at all.
"""
import dataclasses
import hashlib
import pathlib
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from data import bpe
from data import lm_text
from data import paths
from data.errors import DataConfigError, InputError

CACHE_DIR = 'lm_tokens'


@dataclasses.dataclass(frozen=True)
class LMData:
  tokenizer: Tokenizer
  specials: bpe.Specials
  vocab_size: int  # The tokenizer's (can be below data.vocab_size on small text).
  train_rows_NxW: np.ndarray  # int32 rows of seq_len + 1 tokens.
  val_rows_NxW: np.ndarray
  token_bytes_V: np.ndarray  # UTF-8 bytes each token stands for (data/bpe.py token_bytes).
  train_token_counts_V: np.ndarray  # How often each token is predicted in training (the unigram baseline).
  train_byte_counts: np.ndarray  # float64[256]: the training text's bytes (the byte-level baseline) ...
  val_byte_counts: np.ndarray  # ... and the validation text's.


def _byte_counts(docs: list[str]) -> np.ndarray:
  counts = np.zeros(256, np.float64)
  for doc in docs:
    counts += np.bincount(np.frombuffer(doc.encode('utf-8'), np.uint8), minlength=256)
  return counts + len(docs) * np.eye(256)[ord('\n')]  # A document boundary counts as a newline.


def prepare(data_cfg: Any, workdir: str | pathlib.Path, hf_loader: lm_text.HFLoader | None = None) -> LMData:
  """The workdir's language-model data (module docstring)."""
  workdir = pathlib.Path(workdir)
  documents: dict[str, list[str]] = {}

  def docs() -> dict[str, list[str]]:
    if not documents:
      documents.update(lm_text.load_documents(data_cfg, hf_loader))
    return documents

  tokenizer = bpe.load_or_make(data_cfg, workdir, lambda: docs()['train'])
  special = bpe.specials(tokenizer)
  seq_len = int(data_cfg.seq_len)
  if seq_len < 1:
    raise DataConfigError(f'data.seq_len={seq_len} must be >= 1')
  key = hashlib.sha256('\n'.join([lm_text.source_key(data_cfg), str(seq_len), hashlib.sha256(
      tokenizer.to_str().encode()).hexdigest()]).encode()).hexdigest()[:16]
  cache = workdir / CACHE_DIR / f'{key}.npz'
  if cache.is_file():
    arrays = dict(np.load(cache))
  else:
    split = docs()
    streams = {k: bpe.encode_documents(tokenizer, v, special.end_of_text) for k, v in split.items()}
    arrays = dict(train=lm_text.pack(streams['train'], seq_len), val=lm_text.pack(streams['validation'], seq_len),
                  train_bytes=_byte_counts(split['train']), val_bytes=_byte_counts(split['validation']))
    cache.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: pathlib.Path) -> None:
      with tmp.open('wb') as f:
        np.savez(f, **arrays)
    paths.write_atomically(cache, write)
  vocab = tokenizer.get_vocab_size(with_added_tokens=True)
  counts = np.bincount(arrays['train'][:, 1:].reshape(-1), minlength=vocab).astype(np.float64)
  return LMData(tokenizer, special, vocab, arrays['train'], arrays['val'], bpe.token_bytes(tokenizer), counts,
                arrays['train_bytes'], arrays['val_bytes'])


def file_rows(path: str, data_cfg: Any, data: LMData) -> tuple[np.ndarray, np.ndarray]:
  """A text file's documents (data.documents), packed with the workdir's tokenizer: (rows, its byte counts)."""
  docs = lm_text.read_documents(path, str(data_cfg.documents))
  stream = bpe.encode_documents(data.tokenizer, docs, data.specials.end_of_text)
  rows = lm_text.pack(stream, int(data_cfg.seq_len))
  if not len(rows):
    raise InputError(f'{path}: its {len(stream)} tokens make no sequence of data.seq_len={data_cfg.seq_len}')
  return rows, _byte_counts(docs)


def baselines(data: LMData, val_rows_NxW: np.ndarray, val_byte_counts: np.ndarray) -> dict[str, float]:
  """What context-free models score on `val_rows_NxW` (bits per byte): the training text's token unigram
  (add-one smoothed) and its byte frequencies (order-0 bytes, add-one smoothed)."""
  p_V = (data.train_token_counts_V + 1.0) / (data.train_token_counts_V.sum() + len(data.train_token_counts_V))
  targets = val_rows_NxW[:, 1:].reshape(-1)
  nats = -np.log(p_V[targets]).sum()
  bytes_scored = data.token_bytes_V[targets].sum()
  p_byte = (data.train_byte_counts + 1.0) / (data.train_byte_counts.sum() + 256)
  return dict(unigram_bits_per_byte=float(nats / np.log(2) / bytes_scored),
              unigram_loss=float(nats / len(targets)),
              byte_bits_per_byte=float(-(val_byte_counts * np.log2(p_byte)).sum() / val_byte_counts.sum()))
