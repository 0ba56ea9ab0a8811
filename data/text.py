"""Raw text for masked language modelling: local files or HF WikiText.

Splits (documented, the study relies on them):
* Local files (`data_cfg.files='a.txt,b.txt'`): every non-blank line is one
  document. 'eval' is `data_cfg.eval_files` when given (then all of `files`
  trains), else the LAST `data_cfg.eval_fraction` of the lines of `files`
  (in file order; deterministic, no shuffling, so eval text never overlaps
  train text).
* HF (`data_cfg.files=''`): `datasets.load_dataset(hf_name, hf_config)` with
  hf_config 'wikitext-103-raw-v1' or 'wikitext-2-raw-v1'. Its 'train' split
  trains, its 'validation' split evaluates; the 'test' split is never read.
  Blank lines are dropped and each remaining line (a WikiText paragraph or
  heading) is one document.
"""
from collections.abc import Callable, Sequence
import hashlib
import os
import pathlib
from typing import Any

from data import paths
from data.errors import DataConfigError, InputError

TRAIN, EVAL = 'train', 'eval'
HF_TRAIN_SPLIT, HF_EVAL_SPLIT = 'train', 'validation'
DEFAULT_HF_NAME = 'Salesforce/wikitext'

# (name, config) -> a mapping with at least the 'train' and 'validation' splits,
# each a sequence of {'text': str} rows (what `datasets.load_dataset` returns).
HFLoader = Callable[[str, str], Any]


def split_files(files: str) -> list[str]:
  """Turns 'a.txt, b.txt' into ['a.txt', 'b.txt'] (blank entries dropped; '{shared}/...' expanded, data/paths.py)."""
  return [paths.expand(f.strip()) for f in (files or '').split(',') if f.strip()]


def read_lines(path: str | os.PathLike[str]) -> list[str]:
  """Reads the non-blank lines of a UTF-8 text file, stripped.

  Raises MissingInputError / InputError naming the file (and line) when it is missing, a
  directory, not UTF-8, or holds no text.
  """
  text = paths.read_text(path, 'text file (data.files / data.eval_files)')
  # Lines as a text-mode file yields them (universal newlines), not str.splitlines' wider set.
  lines = [line.strip() for line in text.replace('\r\n', '\n').replace('\r', '\n').split('\n')]
  lines = [line for line in lines if line]
  if not lines:
    raise InputError(f'text file {str(path)!r} is empty (no non-blank lines)')
  return lines


def _read_all(files: Sequence[str]) -> list[str]:
  lines = []
  for f in files:
    lines.extend(read_lines(f))
  return lines


def _hf_lines(rows: Any, where: str) -> list[str]:
  """Non-blank stripped lines of a HF split (rows with a 'text' column)."""
  texts = rows['text'] if hasattr(rows, 'column_names') else [r['text'] for r in rows]
  lines = [t.strip() for t in texts if t and t.strip()]
  if not lines:
    raise InputError(f'{where} holds no text')
  return lines


def default_hf_loader(name: str, config: str | None) -> Any:
  """Downloads (or reads HF's cache of) `name`/`config` with `datasets`."""
  import datasets  # pylint: disable=g-import-not-at-top  # heavy; only on the HF path.
  return datasets.load_dataset(name, config)


def load_texts(data_cfg: Any, hf_loader: HFLoader | None = None) -> dict[str, list[str]]:
  """Returns {'train': [...], 'eval': [...]} documents (see module docstring).

  Args:
    data_cfg: `config.data` (files, eval_files, eval_fraction, hf_name, hf_config).
    hf_loader: replaces `datasets.load_dataset(name, config)` on the HF path
      (tests point it at local files through the `datasets` 'text' loader).
  """
  files = split_files(data_cfg.files)
  if files:
    train = _read_all(files)
    eval_files = split_files(data_cfg.eval_files)
    if eval_files:
      return {TRAIN: train, EVAL: _read_all(eval_files)}
    fraction = float(data_cfg.eval_fraction)
    if not 0.0 < fraction < 1.0:
      raise DataConfigError(f'data.eval_fraction must be in (0, 1) when data.eval_files is empty, got {fraction}')
    if len(train) < 2:
      raise InputError(f'data.files {files} hold {len(train)} line(s): too few to split off an eval part')
    num_eval = min(len(train) - 1, max(1, round(fraction * len(train))))
    return {TRAIN: train[:-num_eval], EVAL: train[-num_eval:]}

  name = data_cfg.hf_name or DEFAULT_HF_NAME
  config = data_cfg.hf_config
  if not config:
    raise DataConfigError('data.files is empty, so data.hf_config must name a WikiText config, '
                     "e.g. 'wikitext-103-raw-v1'")
  dataset = (hf_loader or default_hf_loader)(name, config)
  for split in (HF_TRAIN_SPLIT, HF_EVAL_SPLIT):
    if split not in dataset:
      raise DataConfigError(f'HF dataset {name}/{config} has no {split!r} split (has {list(dataset)})')
  return {
      TRAIN: _hf_lines(dataset[HF_TRAIN_SPLIT], f'HF dataset {name}/{config} split {HF_TRAIN_SPLIT!r}'),
      EVAL: _hf_lines(dataset[HF_EVAL_SPLIT], f'HF dataset {name}/{config} split {HF_EVAL_SPLIT!r}'),
  }


def describe_split(data_cfg: Any, split: str) -> str:
  """Where a split's text comes from, for messages: its files, or the HF dataset's split."""
  files, eval_files = split_files(data_cfg.files), split_files(data_cfg.eval_files)
  if not files:
    return f'HF dataset {data_cfg.hf_name or DEFAULT_HF_NAME}/{data_cfg.hf_config} split ' + (
        repr(HF_TRAIN_SPLIT) if split == TRAIN else repr(HF_EVAL_SPLIT))
  if split == EVAL and eval_files:
    return ','.join(eval_files)
  if split == EVAL:
    return f'the last {float(data_cfg.eval_fraction):g} of the lines of {",".join(files)} (data.eval_fraction)'
  return ','.join(files)


def source_key(data_cfg: Any) -> str:
  """A short hash naming the text source (paths with size and mtime, or HF name/config).

  Used to key token caches without reading the text again on resume.
  """
  files = split_files(data_cfg.files)
  if files:
    parts = ['files']
    for group in (files, split_files(data_cfg.eval_files)):
      for f in group:
        path = pathlib.Path(f).expanduser().resolve()
        stat = path.stat() if path.is_file() else None
        size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
        parts.append(f'{path}:{size}:{mtime}')
      parts.append('|')
    parts.append(f'eval_fraction={float(data_cfg.eval_fraction)!r}')
  else:
    parts = ['hf', str(data_cfg.hf_name or DEFAULT_HF_NAME), str(data_cfg.hf_config)]
  return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]
