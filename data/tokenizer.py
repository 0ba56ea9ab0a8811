"""BERT-style WordPiece tokenizer trained with HF `tokenizers`, kept in the workdir.

WordPiece training in `tokenizers` is not reproducible by itself: it numbers
the continuation pieces of the alphabet ('##e') in Rust hash-map order, which
changes from run to run, and breaks ties between equally frequent pairs by
those numbers, so the learned vocabulary itself can differ ('manuf' in one
training, '##fact' in the next). We hand the trainer the whole alphabet and its
continuation pieces in sorted order up front, which fixes every number and tie,
then renumber the result canonically (special tokens first, the rest in
code-point order): the same text gives the same vocabulary and ids, hence the
same batches and results, in every fresh workdir. The saved
`<workdir>/tokenizer.json` is reused on resume and in evaluation.
"""
from collections.abc import Sequence
import dataclasses
import json
import os
import pathlib
import time
import unicodedata

from absl import logging
import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from data import paths
from data.errors import DataConfigError, InputError, MissingInputError

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
      raise InputError(f'tokenizer has no {token} token (expected all of {SPECIAL_TOKENS})')
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


def _is_punctuation(char: str) -> bool:
  """BERT's punctuation (ASCII symbols and Unicode P*): the pre-tokeniser makes each such character a word."""
  code = ord(char)
  return (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
          or unicodedata.category(char).startswith('P'))


_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0x2F800, 0x2FA1F))


def _stands_alone(char: str) -> bool:
  """Whether the normaliser and pre-tokeniser always make `char` a word of its own (no '##' piece)."""
  code = ord(char)
  return _is_punctuation(char) or any(lo <= code <= hi for lo, hi in _CJK_RANGES)  # BERT spaces out CJK.


def _alphabet(tokenizer: Tokenizer, texts: Sequence[str]) -> list[str]:
  """Every character of the normalised texts, then the continuation piece of each that can continue a word."""
  chars: set[str] = set()
  for text in texts:
    chars.update(tokenizer.normalizer.normalize_str(text))
  ordered = sorted(c for c in chars if not c.isspace())
  return ordered + [f'##{c}' for c in ordered if not _stands_alone(c)]


def train_tokenizer(texts: Sequence[str], vocab_size: int, workdir: str | os.PathLike[str],
                    lowercase: bool = True) -> Tokenizer:
  """Trains WordPiece on `texts` (training text only) and saves `<workdir>/tokenizer.json`.

  The same texts and settings give the same tokenizer every time (see the module
  docstring). The trained vocabulary can be smaller than `vocab_size` on a small
  corpus; use `tokenizer.get_vocab_size()` for the model.
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise DataConfigError(
        f'data.vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}')
  if not texts:
    raise InputError('cannot train a tokenizer on no text')
  tokenizer = new_tokenizer(lowercase)
  alphabet = _alphabet(tokenizer, texts)
  if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
    raise DataConfigError(f'data.vocab_size={vocab_size} leaves no room for merges: the text has {len(alphabet)} '
                     f'characters and continuation pieces, plus {len(SPECIAL_TOKENS)} special tokens')
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS) + alphabet, show_progress=False)
  start = time.perf_counter()
  tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
  tokenizer = _canonical(tokenizer, lowercase)
  logging.info('Trained WordPiece on %d documents in %.2fs: vocab %d (asked %d).', len(texts),
               time.perf_counter() - start, tokenizer.get_vocab_size(), vocab_size)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  meta = {'vocab_size': int(vocab_size), 'lowercase': bool(lowercase)}
  paths.write_atomically(workdir / _META_FILE, lambda tmp: tmp.write_text(json.dumps(meta), encoding='utf-8'))
  paths.write_atomically(workdir / TOKENIZER_FILE, lambda tmp: tmp.write_text(tokenizer.to_str(), encoding='utf-8'))
  return tokenizer


def _canonical(trained: Tokenizer, lowercase: bool) -> Tokenizer:
  """The trained vocabulary with fixed ids (SPECIAL_TOKENS as 0..4, the rest in code-point order), in a
  fresh tokenizer whose only special tokens are SPECIAL_TOKENS (the alphabet was special for training only).

  WordPiece encodes by greedy longest match over the vocabulary, so the ids
  never change how a text is split.
  """
  vocab = trained.get_vocab(with_added_tokens=False)
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f'the trained tokenizer lacks the special tokens {missing}')
  ordered = list(SPECIAL_TOKENS) + sorted(t for t in vocab if t not in SPECIAL_TOKENS)
  model = trained.model
  tokenizer = new_tokenizer(lowercase)
  tokenizer.model = models.WordPiece(
      {token: i for i, token in enumerate(ordered)}, unk_token=model.unk_token,
      continuing_subword_prefix=model.continuing_subword_prefix,
      max_input_chars_per_word=model.max_input_chars_per_word)
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  return tokenizer


def load_tokenizer(workdir: str | os.PathLike[str]) -> Tokenizer:
  """Loads `<workdir>/tokenizer.json`; raises FileNotFoundError naming it when absent."""
  path = pathlib.Path(workdir) / TOKENIZER_FILE
  if not path.is_file():
    raise MissingInputError(f'no tokenizer at {str(path)!r}')
  return Tokenizer.from_file(str(path))


def _check_saved_settings(workdir: pathlib.Path, vocab_size: int, lowercase: bool) -> None:
  """Raises when the saved tokenizer was trained with other settings than asked."""
  meta_path = workdir / _META_FILE
  if not meta_path.is_file():
    return  # A tokenizer.json placed by hand: trust it.
  meta = json.loads(meta_path.read_text(encoding='utf-8'))
  asked = {'vocab_size': int(vocab_size), 'lowercase': bool(lowercase)}
  if meta != asked:
    raise DataConfigError(f'{workdir / TOKENIZER_FILE} was trained with {meta} but the config asks for {asked}; '
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
    raise MissingInputError(f'no tokenizer at {str(path)!r} and no text given to train one')
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
