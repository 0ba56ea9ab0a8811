"""Byte-level BPE for language models: trained on the training text with HF `tokenizers`, or a pretrained one by
path (a `tokenizer.json`, an HF directory, or rebuilt from a GGUF file); kept in the workdir (`lm_tokenizer.json`)
and reused on resume.

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


@dataclasses.dataclass(frozen=True)
class Vocab:
  """A tokenizer with the ids a language model needs: what generation, chat and export use."""
  tokenizer: Tokenizer
  specials: Specials
  vocab_size: int  # Tokens, added ones included.

  @classmethod
  def of(cls, tokenizer: Tokenizer) -> 'Vocab':
    return cls(tokenizer, specials(tokenizer), tokenizer.get_vocab_size(with_added_tokens=True))


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


def from_gguf(path: str | pathlib.Path) -> Tokenizer:
  """The byte-level BPE a llama.cpp GGUF file carries (`tokenizer.ggml.*`: tokens, merges, token types), rebuilt
  with HF `tokenizers`: GPT-2's byte map, digits split one by one first where the file says so (`pre` 'smollm',
  'llama-bpe'), its control tokens as special tokens."""
  import gguf  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  reader = gguf.GGUFReader(str(path))
  fields = reader.fields

  def strings(key: str) -> list[str]:
    if key not in fields:
      raise InputError(f'{path} carries no {key} (no byte-level BPE tokenizer)')
    field = fields[key]
    return [bytes(field.parts[i]).decode('utf-8') for i in field.data]

  kind = strings('tokenizer.ggml.model')[0]
  if kind != 'gpt2':
    raise InputError(f'{path}: tokenizer.ggml.model={kind!r}; only byte-level BPE ("gpt2") tokenizers are rebuilt')
  tokens = strings('tokenizer.ggml.tokens')
  merges = [tuple(m.split(' ', 1)) for m in strings('tokenizer.ggml.merges')]
  types = [int(fields['tokenizer.ggml.token_type'].parts[i][0]) for i in fields['tokenizer.ggml.token_type'].data]
  pre = strings('tokenizer.ggml.pre')[0] if 'tokenizer.ggml.pre' in fields else 'default'
  tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tokenizer.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                             if pre in ('smollm', 'llama-bpe', 'llama3') else byte_level)
  tokenizer.decoder = decoders.ByteLevel()
  control = [t for t, kind in zip(tokens, types) if kind == 3]  # llama.cpp's CONTROL tokens.
  tokenizer.add_special_tokens(control)
  return tokenizer


def load_file(path: str | pathlib.Path) -> Tokenizer:
  """A tokenizer from a `tokenizer.json`, an HF checkpoint directory holding one, or a GGUF file."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / 'tokenizer.json'
  if path.suffix == '.gguf':
    return from_gguf(path)
  if not path.is_file():
    raise MissingInputError(f'{path} is not a file (a tokenizer.json, an HF directory with one, or a .gguf)')
  try:
    return Tokenizer.from_file(str(path))
  except Exception as e:  # pylint: disable=broad-except  # tokenizers raises plain Exceptions for bad files.
    raise InputError(f'{path} is not a tokenizers JSON file ({e})') from None


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
    try:
      tokenizer = load_file(wanted['tokenizer'])
      specials(tokenizer, wanted['tokenizer'])
      check_byte_level(tokenizer, wanted['tokenizer'])
    except (InputError, MissingInputError) as e:
      raise type(e)(f'data.tokenizer={data_cfg.tokenizer!r}: {e}') from None
  else:
    tokenizer = train(train_texts(), int(data_cfg.vocab_size))
  paths.write_atomically(path, lambda tmp: tmp.write_text(tokenizer.to_str(), encoding='utf-8'))
  paths.write_atomically(meta_path, lambda tmp: tmp.write_text(json.dumps(wanted), encoding='utf-8'))
  return tokenizer


def check_byte_level(tokenizer: Tokenizer, where: str) -> None:
  """Bits per byte counts a token's bytes from its characters (GPT-2's byte map): only byte-level BPE qualifies."""
  decoder = json.loads(tokenizer.to_str()).get('decoder') or {}
  kinds = {decoder.get('type')} | {d.get('type') for d in decoder.get('decoders') or []}
  if 'ByteLevel' not in kinds:
    raise InputError(f'{where} is not a byte-level BPE (its decoder is {decoder.get("type")!r}); the language-model '
                     'task counts bits per byte from byte-level tokens')


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
