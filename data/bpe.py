"""Byte-level BPE for language models: trained on the training text with HF `tokenizers`, or a `tokenizer.json`
given by path; kept in the workdir (`lm_tokenizer.json`) and reused on resume.

A trained tokenizer splits text into bytes (GPT-2's byte-to-character map: every string has a tokenization),
pre-tokenizes on words, digits and punctuation like GPT-2, and merges the most frequent pairs up to
`data.vocab_size`; training on the same text gives the same vocabulary every time. Its special tokens:
END_OF_TEXT between documents, PAD, and ChatML's role markers for chat (`<|im_start|>user ... <|im_end|>`).
A workdir's tokenizer is refused, by name, when the config asks for another one.
"""
from collections.abc import Sequence
import dataclasses
import json
import pathlib
import shutil

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from data import paths
from data.errors import DataConfigError, InputError, MissingInputError

END_OF_TEXT, PAD, IM_START, IM_END = '<|endoftext|>', '<|pad|>', '<|im_start|>', '<|im_end|>'
SPECIAL_TOKENS = (END_OF_TEXT, PAD, IM_START, IM_END)  # Ids 0..3 in a trained tokenizer.
TOKENIZER_FILE = 'lm_tokenizer.json'
_META_FILE = 'lm_tokenizer_meta.json'


@dataclasses.dataclass(frozen=True)
class Specials:
  """Ids of the special tokens a language model needs (chat markers: None when the tokenizer has none)."""
  end_of_text: int
  pad: int
  im_start: int | None
  im_end: int | None

  @property
  def chat(self) -> bool:
    return self.im_start is not None and self.im_end is not None


def specials(tokenizer: Tokenizer, where: str = 'the tokenizer') -> Specials:
  ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
  if ids[END_OF_TEXT] is None:
    raise InputError(f'{where} has no {END_OF_TEXT} token (the document separator a language model needs)')
  return Specials(ids[END_OF_TEXT], ids[PAD] if ids[PAD] is not None else ids[END_OF_TEXT], ids[IM_START],
                  ids[IM_END])


def train(texts: Sequence[str], vocab_size: int) -> Tokenizer:
  """A byte-level BPE of `vocab_size` tokens (fewer on a small text) trained on `texts`."""
  floor = len(SPECIAL_TOKENS) + 256
  if vocab_size <= floor:
    raise DataConfigError(f'data.vocab_size={vocab_size} must exceed {floor} (the special tokens and the 256 bytes)')
  if not texts:
    raise InputError('cannot train a tokenizer on no text')
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
  return tokenizer


def _wanted(data_cfg) -> dict:
  path = str(data_cfg.tokenizer or '')
  return {'tokenizer': str(pathlib.Path(paths.expand(path)).expanduser().resolve()) if path else 'trained',
          'vocab_size': None if path else int(data_cfg.vocab_size)}


def _describe(meta: dict) -> str:
  return (f'the tokenizer {meta["tokenizer"]}' if meta['tokenizer'] != 'trained'
          else f'a BPE trained on the training text (data.vocab_size={meta["vocab_size"]})')


def load_or_make(data_cfg, workdir: pathlib.Path, train_texts) -> Tokenizer:
  """The workdir's tokenizer; else the one `data.tokenizer` names (copied in), else one trained on
  `train_texts()`. A workdir tokenizer other than the config asks for is refused, naming both."""
  workdir = pathlib.Path(workdir)
  path, meta_path = workdir / TOKENIZER_FILE, workdir / _META_FILE
  wanted = _wanted(data_cfg)
  if path.is_file():
    saved = json.loads(meta_path.read_text()) if meta_path.is_file() else wanted
    if saved != wanted:
      raise DataConfigError(f'{path} is {_describe(saved)}, but the config asks for {_describe(wanted)}; use a fresh '
                            '--workdir, or the data.tokenizer / data.vocab_size it was made with')
    return Tokenizer.from_file(str(path))
  workdir.mkdir(parents=True, exist_ok=True)
  if wanted['tokenizer'] != 'trained':
    source = pathlib.Path(wanted['tokenizer'])
    if not source.is_file():
      raise MissingInputError(f'data.tokenizer={data_cfg.tokenizer!r}: {source} is not a file')
    try:
      tokenizer = Tokenizer.from_file(str(source))
    except Exception as e:  # pylint: disable=broad-except  # tokenizers raises plain Exceptions for bad files.
      raise InputError(f'data.tokenizer={data_cfg.tokenizer!r}: {source} is not a tokenizers JSON file ({e})') from None
    paths.write_atomically(path, lambda tmp: shutil.copyfile(source, tmp))
  else:
    tokenizer = train(train_texts(), int(data_cfg.vocab_size))
    paths.write_atomically(path, lambda tmp: tmp.write_text(tokenizer.to_str(), encoding='utf-8'))
  specials(tokenizer, str(path))
  paths.write_atomically(meta_path, lambda tmp: tmp.write_text(json.dumps(wanted), encoding='utf-8'))
  return tokenizer


def token_bytes(tokenizer: Tokenizer) -> np.ndarray:
  """float64[V]: the UTF-8 bytes each token stands for (the end-of-text token 1, a newline's worth; other
  special tokens 0). A byte-level token is a string of GPT-2's byte characters, one per byte."""
  vocab = tokenizer.get_vocab(with_added_tokens=True)
  out = np.zeros(max(vocab.values()) + 1, np.float64)
  byte_chars = set(pre_tokenizers.ByteLevel.alphabet())
  specials_ids = specials(tokenizer)
  special = {t for t in vocab if t in SPECIAL_TOKENS} | {t.content for t in tokenizer.get_added_tokens_decoder().values()}
  for token, i in vocab.items():
    if token in special:
      continue
    out[i] = len(token) if set(token) <= byte_chars else len(tokenizer.decode([i]).encode('utf-8'))
  out[specials_ids.end_of_text] = 1.0
  return out


def encode_documents(tokenizer: Tokenizer, docs: Sequence[str], end_of_text: int, chunk: int = 20_000) -> np.ndarray:
  """int32 stream: every document's tokens followed by the end-of-text token."""
  encode = getattr(tokenizer, 'encode_batch_fast', tokenizer.encode_batch)
  pieces = [np.zeros((0,), np.int32)]
  eot = np.array([end_of_text], np.int32)
  for start in range(0, len(docs), chunk):
    for encoding in encode(list(docs[start:start + chunk]), add_special_tokens=False):
      pieces += [np.asarray(encoding.ids, np.int32), eot]
  return np.concatenate(pieces)
