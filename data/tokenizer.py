"""BERT-style WordPiece tokenizer trained with HF `tokenizers`, kept in the workdir.

WordPiece training in `tokenizers` learns the same vocabulary every time but
numbers it in Rust hash-map order, which changes from run to run. The trained
vocabulary is renumbered canonically (special tokens first, then the rest in
code-point order), so the same text gives the same ids, hence the same batches
and results, in every fresh workdir. The saved `<workdir>/tokenizer.json` is
reused on resume and in evaluation.
"""
from collections.abc import Sequence
import dataclasses
import json
import os
import pathlib
import time

from absl import logging
import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in a freshly trained tokenizer.
TOKENIZER_FILE = 'tokenizer.json'
_META_FILE = 'tokenizer_meta.json'


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Ids of the special tokens; `all` lists them (never masked, never drawn as random tokens)."""
  pad: int
  unk: int
  cls: int
  sep: int
  mask: int

  @property
  def all(self) -> tuple[int, ...]:
    return (self.pad, self.unk, self.cls, self.sep, self.mask)


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
  """Looks the special tokens up in `tokenizer`; raises if one is missing."""
  ids = {}
  for token in SPECIAL_TOKENS:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f'tokenizer has no {token} token (expected all of {SPECIAL_TOKENS})')
    ids[token] = token_id
  return SpecialIds(pad=ids[PAD], unk=ids[UNK], cls=ids[CLS], sep=ids[SEP], mask=ids[MASK])


def new_tokenizer(lowercase: bool = True) -> Tokenizer:
  """An untrained WordPiece tokenizer with BERT's normaliser and pre-tokeniser."""
  tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
  tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # Whitespace, then split off punctuation.
  tokenizer.decoder = decoders.WordPiece()
  return tokenizer


def _write_atomically(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')
  tmp.write_text(text, encoding='utf-8')
  os.replace(tmp, path)


def train_tokenizer(texts: Sequence[str], vocab_size: int, workdir: str | os.PathLike[str],
                    lowercase: bool = True) -> Tokenizer:
  """Trains WordPiece on `texts` (training text only) and saves `<workdir>/tokenizer.json`.

  The trained vocabulary can be smaller than `vocab_size` on a small corpus;
  use `tokenizer.get_vocab_size()` for the model.
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(
        f'data.vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}')
  if not texts:
    raise ValueError('cannot train a tokenizer on no text')
  tokenizer = new_tokenizer(lowercase)
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  start = time.perf_counter()
  tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
  _renumber_canonically(tokenizer)
  logging.info('Trained WordPiece on %d documents in %.2fs: vocab %d (asked %d).', len(texts),
               time.perf_counter() - start, tokenizer.get_vocab_size(), vocab_size)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  meta = {'vocab_size': int(vocab_size), 'lowercase': bool(lowercase)}
  _write_atomically(workdir / _META_FILE, json.dumps(meta))
  _write_atomically(workdir / TOKENIZER_FILE, tokenizer.to_str())
  return tokenizer


def _renumber_canonically(tokenizer: Tokenizer) -> None:
  """Gives the trained vocabulary fixed ids: SPECIAL_TOKENS as 0..4, the rest in code-point order.

  WordPiece encodes by greedy longest match over the vocabulary, so renumbering
  changes ids only, never how a text is split.
  """
  vocab = tokenizer.get_vocab()
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f'the trained tokenizer lacks the special tokens {missing}')
  ordered = list(SPECIAL_TOKENS) + sorted(t for t in vocab if t not in SPECIAL_TOKENS)
  trained = tokenizer.model
  tokenizer.model = models.WordPiece(
      {token: i for i, token in enumerate(ordered)}, unk_token=trained.unk_token,
      continuing_subword_prefix=trained.continuing_subword_prefix,
      max_input_chars_per_word=trained.max_input_chars_per_word)


def load_tokenizer(workdir: str | os.PathLike[str]) -> Tokenizer:
  """Loads `<workdir>/tokenizer.json`; raises FileNotFoundError naming it when absent."""
  path = pathlib.Path(workdir) / TOKENIZER_FILE
  if not path.is_file():
    raise FileNotFoundError(f'no tokenizer at {str(path)!r}')
  return Tokenizer.from_file(str(path))


def _check_saved_settings(workdir: pathlib.Path, vocab_size: int, lowercase: bool) -> None:
  """Raises when the saved tokenizer was trained with other settings than asked."""
  meta_path = workdir / _META_FILE
  if not meta_path.is_file():
    return  # A tokenizer.json placed by hand: trust it.
  meta = json.loads(meta_path.read_text(encoding='utf-8'))
  asked = {'vocab_size': int(vocab_size), 'lowercase': bool(lowercase)}
  if meta != asked:
    raise ValueError(f'{workdir / TOKENIZER_FILE} was trained with {meta} but the config asks for {asked}; '
                     'use a fresh workdir or the original data settings')


def load_or_train_tokenizer(texts: Sequence[str] | None, vocab_size: int, workdir: str | os.PathLike[str],
                            lowercase: bool = True, process_index: int = 0,
                            wait_timeout_s: float = 600.0) -> Tokenizer:
  """Reuses `<workdir>/tokenizer.json` if present, else trains it on `texts`.

  With several processes only process 0 trains; the others wait for its file
  (the workdir must be shared), since two trainings may give different ids.
  `texts` may be None when the tokenizer is known to exist (resume/eval).
  """
  workdir = pathlib.Path(workdir)
  path = workdir / TOKENIZER_FILE
  if not path.is_file() and process_index != 0:
    deadline = time.monotonic() + wait_timeout_s
    while not path.is_file():
      if time.monotonic() > deadline:
        raise TimeoutError(f'process {process_index} waited {wait_timeout_s}s for process 0 to write {path}')
      time.sleep(1.0)
  if path.is_file():
    _check_saved_settings(workdir, vocab_size, lowercase)
    logging.info('Reusing tokenizer %s.', path)
    return load_tokenizer(workdir)
  if texts is None:
    raise FileNotFoundError(f'no tokenizer at {str(path)!r} and no text given to train one')
  return train_tokenizer(texts, vocab_size, workdir, lowercase)


def encode_to_array(tokenizer: Tokenizer, texts: Sequence[str], sep_id: int,
                    chunk: int = 20_000) -> np.ndarray:
  """Token ids of all `texts`, each document followed by [SEP], as one int32 stream.

  Encodes in chunks with the parallel Rust batch encoder so that memory stays
  bounded on WikiText-103.
  """
  encode = getattr(tokenizer, 'encode_batch_fast', tokenizer.encode_batch)  # No offsets: faster.
  sep_N = np.array([sep_id], np.int32)
  chunks = [np.zeros((0,), np.int32)]
  for start in range(0, len(texts), chunk):
    pieces = []
    for encoding in encode(list(texts[start:start + chunk]), add_special_tokens=False):
      if encoding.ids:  # A line that normalises to nothing adds no [SEP] either.
        pieces.append(np.asarray(encoding.ids, np.int32))
        pieces.append(sep_N)
    if pieces:
      chunks.append(np.concatenate(pieces))
  return np.concatenate(chunks)
