"""Language-model text: documents from files or HF datasets, a split by document, packed token rows, batches.

Documents (`data.files`, comma-separated; `{shared}/...` names the shared data folder, data/paths.py):
  .txt    `data.documents`: 'lines' (one document a line), 'paragraphs' (separated by blank lines), or
          'wikitext' (articles: a line ' = Title = ' starts one, as in WikiText's raw files)
  .jsonl  one JSON object a line with a string `text`
or an HF dataset (`data.hf_name`): 'wikitext-103' (Salesforce/wikitext, wikitext-103-raw-v1, its lines joined
into articles) or 'tinystories' (roneneldan/TinyStories, a story a row); their own train and validation splits.

Split: with files, a document is validation when a hash of its text and `data.split_salt` falls below
`data.val_fraction` (the same documents in every run and process), unless `data.eval_files` holds the
validation text. Blank documents are dropped.

Packing: every document's tokens and then the end-of-text token, the documents of a split in order, cut into
rows of seq_len + 1 tokens (a row's first seq_len tokens are read and its last seq_len predicted); the ragged
tail is dropped. Batch t holds rows drawn with np.random.default_rng([data.seed, t, process_index]): a pure
function of the step, so a resumed run sees the batches it would have seen.
"""
from collections.abc import Callable, Sequence
import hashlib
import json
import pathlib
import re
from typing import Any

import numpy as np

from data import paths
from data import text as text_lib
from data.errors import DataConfigError, InputError

DOCUMENTS = ('lines', 'paragraphs', 'wikitext')
HF_DATASETS = {  # Our name -> (HF name, HF config, how its rows make documents).
    'wikitext-103': ('Salesforce/wikitext', 'wikitext-103-raw-v1', 'wikitext'),
    'tinystories': ('roneneldan/TinyStories', None, 'rows'),
}
HFLoader = Callable[[str, str | None], Any]  # (name, config) -> {'train': rows, 'validation': rows}, rows of {'text'}.
_WIKITEXT_TITLE = re.compile(r'^ ?= [^=].* = ?$')


def _group(lines: Sequence[str], how: str) -> list[str]:
  """Documents from a file's lines: each line, blank-line-separated paragraphs, or WikiText articles."""
  if how == 'lines':
    return [line.strip() for line in lines if line.strip()]
  docs, current = [], []
  for line in lines:
    starts = (not line.strip()) if how == 'paragraphs' else bool(_WIKITEXT_TITLE.match(line.rstrip('\n')))
    if starts and current:
      docs.append('\n'.join(current).strip())
      current = []
    if line.strip():
      current.append(line.strip())
  if current:
    docs.append('\n'.join(current).strip())
  return [d for d in docs if d]


def read_documents(path: str, how: str) -> list[str]:
  """The documents of one file (errors name the file and line)."""
  if how not in DOCUMENTS:
    raise DataConfigError(f'data.documents={how!r} must be one of {", ".join(DOCUMENTS)}')
  text = paths.read_text(path, 'text file (data.files / data.eval_files / data.eval_file)')
  lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
  if str(path).endswith('.jsonl'):
    docs = []
    for number, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f'{path}:{number}: not a JSON object ({e.msg})') from None
      if not isinstance(row, dict) or not isinstance(row.get('text'), str):
        raise InputError(f'{path}:{number}: a .jsonl line needs a string field "text"')
      if row['text'].strip():
        docs.append(row['text'].strip())
  else:
    docs = _group(lines, how)
  if not docs:
    raise InputError(f'{path} holds no text (no non-blank document)')
  return docs


def is_validation(doc: str, salt: str, fraction: float) -> bool:
  """The deterministic document split: a hash of the text and salt, as a number in [0, 1), below `fraction`."""
  digest = hashlib.sha256(f'{salt}\0{doc}'.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0 ** 64 < fraction


def _hf_documents(rows: Any, how: str, where: str) -> list[str]:
  lines = []
  for i, row in enumerate(rows):
    text = row.get('text') if isinstance(row, dict) else None
    if not isinstance(text, str):
      raise InputError(f'{where}: row {i} has no string field "text"')
    lines.append(text)
  return _group(lines, 'wikitext') if how == 'wikitext' else [t.strip() for t in lines if t.strip()]


def load_documents(data_cfg: Any, hf_loader: HFLoader | None = None) -> dict[str, list[str]]:
  """{'train': documents, 'validation': documents} of the config's source (module docstring)."""
  files = text_lib.split_files(data_cfg.files)
  if files:
    how = str(data_cfg.documents)
    docs = [d for f in files for d in read_documents(f, how)]
    eval_files = text_lib.split_files(data_cfg.eval_files)
    if eval_files:
      return {'train': docs, 'validation': [d for f in eval_files for d in read_documents(f, how)]}
    fraction, salt = float(data_cfg.val_fraction), str(data_cfg.split_salt)
    if not 0 < fraction < 1:
      raise DataConfigError(f'data.val_fraction={fraction} must be in (0, 1) without data.eval_files')
    split = {'train': [], 'validation': []}
    for doc in docs:
      split['validation' if is_validation(doc, salt, fraction) else 'train'].append(doc)
    for name, part in split.items():
      if not part:
        raise InputError(f'{",".join(files)}: no document falls in the {name} split (data.val_fraction={fraction}); '
                         'give more documents or another fraction')
    return split
  name = str(data_cfg.hf_name)
  if name not in HF_DATASETS:
    raise DataConfigError(f'data.hf_name={name!r} must be one of {", ".join(HF_DATASETS)} (or set data.files)')
  hf_name, hf_config, how = HF_DATASETS[name]
  dataset = (hf_loader or text_lib.default_hf_loader)(hf_name, hf_config)
  out = {}
  for split in ('train', 'validation'):
    if split not in dataset:
      raise InputError(f'HF dataset {hf_name} has no {split!r} split (has {list(dataset)})')
    out[split] = _hf_documents(dataset[split], how, f'HF dataset {hf_name} split {split!r}')
  return out


def pack(stream_T: np.ndarray, seq_len: int) -> np.ndarray:
  """int32[N, seq_len + 1] rows cut from a token stream (the ragged tail dropped)."""
  width = seq_len + 1
  rows = len(stream_T) // width
  return np.asarray(stream_T[:rows * width], np.int32).reshape(rows, width)


def check_rows(rows_NxW: np.ndarray, batch_size: int, what: str) -> None:
  """A split must fill one batch (else every batch would repeat rows)."""
  if len(rows_NxW) < batch_size:
    raise InputError(f'{what} makes {len(rows_NxW)} sequence(s) of data.seq_len={rows_NxW.shape[1] - 1} tokens, '
                     f'fewer than one batch ({batch_size}); give more text or a smaller batch or seq_len')


def train_batch(rows_NxW: np.ndarray, seed: int, step: int, batch_size: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's slice of batch `step`: {'tokens': int32[B, seq_len + 1]}, rows drawn with replacement."""
  if batch_size % process_count:
    raise DataConfigError(f'batch_size {batch_size} is not divisible by process_count {process_count}')
  rng = np.random.default_rng([int(seed), int(step), int(process_index)])
  return {'tokens': rows_NxW[rng.integers(0, len(rows_NxW), batch_size // process_count)]}


def eval_rows(rows_NxW: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
  """The fixed evaluation rows: all of them, or a seeded sample of `max_rows` kept in order (0 = all)."""
  if 0 < max_rows < len(rows_NxW):
    keep = np.sort(np.random.default_rng([int(seed)]).choice(len(rows_NxW), max_rows, replace=False))
    return rows_NxW[keep]
  return rows_NxW


def bytes_of_targets(rows_NxW: np.ndarray, token_bytes_V: np.ndarray) -> np.ndarray:
  """float64[N]: UTF-8 bytes of each row's predicted tokens (all but its first)."""
  return token_bytes_V[rows_NxW[:, 1:]].sum(axis=1).astype(np.float64)


def source_key(data_cfg: Any) -> str:
  """A short hash naming the text source (files with size and mtime, or the HF dataset) and its split."""
  files = text_lib.split_files(data_cfg.files)
  if files:
    parts = ['files', str(data_cfg.documents)]
    for group in (files, text_lib.split_files(data_cfg.eval_files)):
      for f in group:
        path = pathlib.Path(f).expanduser().resolve()
        stat = path.stat() if path.is_file() else None
        parts.append(f'{path}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}')
      parts.append('|')
    parts.append(f'{float(data_cfg.val_fraction)!r}:{data_cfg.split_salt}')
  else:
    parts = ['hf', str(data_cfg.hf_name)]
  return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]
