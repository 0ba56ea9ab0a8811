"""Character tokenizer of the arithmetic study: 18 tokens, four of them multi-character.

Ids: <pad>=0, <end>=1, <think>=2, </think>=3, '0'..'9'=4..13, '+'=14, '*'=15,
'='=16, ' '=17. `encode` reads the multi-character tokens wherever they are
spelled out; any other character outside the vocabulary (a lone '<', a
newline, a letter) raises `InputError`. `decode` maps every id back and cuts
nothing: the caller stops at <end>.
"""
from collections.abc import Iterable, Sequence
import operator

import numpy as np

from data.errors import InputError

PAD, END, THINK, END_THINK = '<pad>', '<end>', '<think>', '</think>'
VOCAB = (PAD, END, THINK, END_THINK, *'0123456789', '+', '*', '=', ' ')
VOCAB_SIZE = len(VOCAB)
vocab_size = VOCAB_SIZE  # The name the study's code uses; same value.
PAD_ID, END_ID, THINK_ID, END_THINK_ID = 0, 1, 2, 3
DIGIT_IDS = tuple(range(4, 14))  # Ids of '0'..'9' in order: the id of digit d is DIGIT_IDS[0] + d.
PLUS_ID, TIMES_ID, EQUALS_ID, SPACE_ID = 14, 15, 16, 17

# Internally each multi-character token becomes one control character, so a whole text maps through one
# byte table. Those control characters are not in the vocabulary, so a raw text holding one is refused first.
_SPECIAL_CHARS = {PAD: '\x00', END: '\x01', THINK: '\x02', END_THINK: '\x03'}
_SEPARATOR = '\n'  # Joins the texts of a batch; not in the vocabulary either.
_SEPARATOR_CODE = -2
_BYTE_TO_ID = np.full(256, -1, np.int16)
for _token, _char in _SPECIAL_CHARS.items():
  _BYTE_TO_ID[ord(_char)] = VOCAB.index(_token)
for _id, _token in enumerate(VOCAB):
  if len(_token) == 1:
    _BYTE_TO_ID[ord(_token)] = _id
_BYTE_TO_ID[ord(_SEPARATOR)] = _SEPARATOR_CODE


def _unknown_character(text: str, position: int) -> InputError:
  """The error for text[position], an unknown character."""
  shown = text if len(text) <= 80 else text[:77] + '...'
  return InputError(f'unknown character {text[position]!r} at position {position + 1} of {shown!r} '
                    f'(the arithmetic vocabulary is digits, "+*= ", <end>, <think>, </think>, <pad>)')


def _map_to_ids(text: str) -> np.ndarray:
  """int16 ids of `text`, with the separator as _SEPARATOR_CODE; raises on unknown characters."""
  if not text.isascii():
    raise _unknown_character(text, next(i for i, c in enumerate(text) if not c.isascii()))
  for char in _SPECIAL_CHARS.values():
    if char in text:
      raise _unknown_character(text, text.index(char))
  mapped = text
  for token, char in _SPECIAL_CHARS.items():
    if token in mapped:
      mapped = mapped.replace(token, char)
  ids = _BYTE_TO_ID[np.frombuffer(mapped.encode('ascii'), np.uint8)]
  if (ids == -1).any():
    index = int(np.argmax(ids == -1))  # In `mapped`; each special token before it is one character there.
    extra = sum(mapped.count(char, 0, index) * (len(token) - 1) for token, char in _SPECIAL_CHARS.items())
    raise _unknown_character(text, index + extra)
  return ids


def encode(text: str) -> list[int]:
  """Token ids of `text`; an unknown character raises InputError naming it."""
  if _SEPARATOR in text:
    raise _unknown_character(text, text.index(_SEPARATOR))
  return _map_to_ids(text).tolist()


def encode_padded(texts: Sequence[str], min_length: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Encodes texts into right-padded int32[B, L] ids and their int32[B] lengths.

  L is the longest text's length or `min_length`, whichever is larger; the
  caller checks the lengths against its limit.
  """
  joined = _SEPARATOR.join(texts)
  if joined.count(_SEPARATOR) != max(len(texts) - 1, 0):
    text = next(t for t in texts if _SEPARATOR in t)
    raise _unknown_character(text, text.index(_SEPARATOR))
  try:
    flat_T = _map_to_ids(joined) if texts else np.zeros(0, np.int16)
  except InputError:
    for text in texts:
      encode(text)  # Raises the error naming the text that holds the character.
    raise
  is_sep_T = flat_T == _SEPARATOR_CODE
  starts_B = np.concatenate([[0], np.flatnonzero(is_sep_T) + 1]) if texts else np.zeros(0, np.int64)
  lengths_B = np.diff(np.append(starts_B, flat_T.size + 1)) - 1
  width = max(int(lengths_B.max(initial=0)), int(min_length))
  ids_BxL = np.full((len(texts), width), PAD_ID, np.int32)
  rows_T = np.cumsum(is_sep_T)
  keep_T = ~is_sep_T
  cols_T = np.arange(flat_T.size) - starts_B[rows_T] if texts else np.zeros(0, np.int64)
  ids_BxL[rows_T[keep_T], cols_T[keep_T]] = flat_T[keep_T]
  return ids_BxL, lengths_B.astype(np.int32)


def decode(ids: Iterable[int]) -> str:
  """The text of `ids` (a list or an integer array); an id outside the vocabulary raises InputError."""
  ids = ids.tolist() if isinstance(ids, np.ndarray) else [operator.index(i) for i in ids]
  for i in ids:
    if not 0 <= i < VOCAB_SIZE:
      raise InputError(f'token id {i} is outside the arithmetic vocabulary (0..{VOCAB_SIZE - 1})')
  return ''.join([VOCAB[i] for i in ids])
