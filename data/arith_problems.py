"""Arithmetic problems of the addition/multiplication study: sampling, splits, answer formats, parsing.

A problem is (a, b, op) with non-negative Python ints a, b (any number of
digits: 100-digit operands work) and op '+' or '*'. A number's length is its
count of decimal digits with no leading zero; 0 is the one-digit number '0'.

Sampling (`sample_problems`): the two operand lengths are drawn independently
and uniformly in [min_digits, max_digits], then each operand uniformly among the
numbers of its length (0..9 for one digit, 10**(n-1)..10**n - 1 for n > 1).

Splits (`split_of`): a problem's split comes from a blake2b hash of the salt and
its canonical key (min(a, b), max(a, b), op), so a problem and its commuted
twin always share a split, whatever their lengths; the val and test shares are
`val_fraction` and `test_fraction` of all problems. A training stream that
keeps only 'train' problems never shows a val/test problem or its twin.

Formats (`format_problem` -> (prompt, target) strings over the tokens of
`data.arith_tokenizer`). Every format has the prompt `a+b=` (or `a*b=`):
  plain     target = the answer, then <end>:                 99+21= -> 120<end>
  reversed  target = the answer's digits units first, <end>:  99+21= -> 021<end>
  cot       target = <think>STEPS</think>, the answer in normal order, <end>.
    '+': one step per digit position, units first, `x+y+c=s`: x, y the digits
      of a and b there (0 past a shorter number's end), c the carry in (0/1),
      s = x+y+c written in full (one or two digits); steps separated by one
      space. 99+21= -> <think>9+1+0=10 9+2+1=12</think>120<end>
      (An earlier project note gave `<think>9+1=10 9+2+1=11 0+1=1 1+0=1</think>110<end>`
      for 99+21; its arithmetic is wrong, as is its answer, and it is not used.)
    '*': first the partial products, one per digit d_j of b (j = 0 at the
      units): `A*D=P` with A = a as written, D = the digit d_j followed by j
      zeros (so a zero digit of b at the tens reads `00`), P = a*d_j*10**j as
      a number (so `0` when a or d_j is 0); then, for each partial product after
      the first, the running sum `S+P=T` (S the sum so far, starting at the
      first partial product, T = S+P); all separated by one space. With a
      one-digit b the steps are the single partial product.
      123*45= -> <think>123*5=615 123*40=4920 615+4920=5535</think>5535<end>
      12*305= -> <think>12*5=60 12*00=0 12*300=3600 60+0=60 60+3600=3660</think>3660<end>
  cot_rev   the chain of thought of Deng et al. 2024 (implicit CoT), every number units first and padded
    with zeros to a width fixed by the operand lengths, so each digit is found by its significance.
    '*' with n-digit a and m-digit b: the partial products P_j = a * d_j * 10**j (d_j the digit of b at
      10**j) and the running sums S_j = P_0 + ... + P_j, P_j and S_j both n+1+j digits wide:
      `<think>P_0+P_1=S_1+P_2=S_2+...+P_{m-1}</think>` then the answer S_{m-1}, n+m digits, then <end>.
      Each sum S_j is read off the two runs before it: S_{j-1} and P_j (S_0 = P_0).
      123*45= -> <think>5160+02940</think>53550<end>  (615 + 4920 = 5535; no S_j before the answer)
      3719*3349= -> <think>17433+067841=132281+0075111=1397921+00075111</think>13945421<end>
      With a one-digit b: 123*4= -> <think>2940</think>2940<end>.
    '+' with n- and m-digit operands: no chain of thought; the sum units first, max(n, m)+1 digits wide:
      99+21= -> 021<end>; 5+3= -> 80<end>.
    The answer (after </think>, or after '=' where there is no chain of thought) is read units first;
    zeros at its end are padding. Internalising the chain of thought (`internalize`) removes its first
    tokens; with all removed the target is the answer alone, as above for '+'.
The looped (weight-tied, latent) model is trained on one of these formats; there is no format of its own.
"""
from collections.abc import Sequence
import hashlib
import re
from typing import NamedTuple

import numpy as np

from data import arith_tokenizer
from data.errors import DataConfigError, InputError

OPS = ('+', '*')
FORMATS = ('plain', 'reversed', 'cot', 'cot_rev')
UNITS_FIRST = ('reversed', 'cot_rev')  # Formats that write the answer units first.
SPLITS = ('train', 'val', 'test')
_CHUNK_DIGITS = 18  # Numbers below 10**18 fit int64; longer ones are built from 18-digit chunks.


class Problem(NamedTuple):
  """One problem: a op b."""
  a: int
  b: int
  op: str


def answer(a: int, b: int, op: str) -> int:
  """The true result of a op b."""
  if op == '+':
    return a + b
  if op == '*':
    return a * b
  raise ValueError(f'unknown operator {op!r}; expected one of {OPS}')


def num_digits(n: int) -> int:
  """The decimal length of a non-negative int (1 for 0)."""
  return len(str(n))


def count_of_length(length: int) -> int:
  """How many numbers have `length` digits: 10 for one digit, 9 * 10**(length-1) beyond."""
  return 10 if length == 1 else 9 * 10**(length - 1)


def sample_numbers(rng: np.random.Generator, lengths: Sequence[int] | np.ndarray) -> list[int]:
  """One uniform number of each given length (Python ints, any length)."""
  lengths_N = np.asarray(lengths, np.int64).reshape(-1)
  if lengths_N.size and lengths_N.min() < 1:
    raise ValueError(f'number lengths must be >= 1, got {lengths_N.min()}')
  chunks_N = (lengths_N - 1) // _CHUNK_DIGITS
  head_len_N = lengths_N - _CHUNK_DIGITS * chunks_N  # 1..18 leading digits, then whole 18-digit chunks.
  low_N = np.where(lengths_N == 1, 0, 10**(head_len_N - 1))
  values = rng.integers(low_N, 10**head_len_N).tolist()
  max_chunks = int(chunks_N.max(initial=0))
  if max_chunks:
    tails_NxC = rng.integers(0, 10**_CHUNK_DIGITS, (lengths_N.size, max_chunks)).tolist()
    for i in np.flatnonzero(chunks_N).tolist():
      value = values[i]
      for chunk in tails_NxC[i][:chunks_N[i]]:
        value = value * 10**_CHUNK_DIGITS + chunk
      values[i] = value
  return values


def sample_problems(rng: np.random.Generator, ops: str, min_digits: int, max_digits: int, n: int) -> list[Problem]:
  """n problems: op uniform among `ops`, lengths independently uniform in [min_digits, max_digits]."""
  op_N = rng.integers(0, len(ops), n).tolist()
  len_a_N = rng.integers(min_digits, max_digits + 1, n)
  len_b_N = rng.integers(min_digits, max_digits + 1, n)
  a_N = sample_numbers(rng, len_a_N)
  b_N = sample_numbers(rng, len_b_N)
  return [Problem(a, b, ops[o]) for a, b, o in zip(a_N, b_N, op_N)]


def check_fractions(val_fraction: float, test_fraction: float) -> None:
  """Raises DataConfigError unless both are in [0, 1) and their sum is below 1."""
  for name, value in (('val_fraction', val_fraction), ('test_fraction', test_fraction)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
      raise DataConfigError(f'data.{name} must be a number in [0, 1), got {value!r}')
  if val_fraction + test_fraction >= 1.0:
    raise DataConfigError(f'data.val_fraction + data.test_fraction must be below 1 (some problems must train), '
                          f'got {val_fraction} + {test_fraction}')


def split_value(a: int, b: int, op: str, salt: str | int = '') -> float:
  """The problem's hash as a number in [0, 1), the same for a op b and b op a."""
  low, high = (a, b) if a <= b else (b, a)
  digest = hashlib.blake2b(f'{salt}|{low}{op}{high}'.encode('ascii'), digest_size=8).digest()
  return (int.from_bytes(digest, 'big') >> 11) / 2.0**53  # 53 bits: exact in a float, below 1.


def split_of(a: int, b: int, op: str, salt: str | int = '', val_fraction: float = 0.02,
             test_fraction: float = 0.02) -> str:
  """'val', 'test' or 'train', from the hash of (salt, min(a, b), max(a, b), op)."""
  check_fractions(val_fraction, test_fraction)
  value = split_value(a, b, op, salt)
  if value < val_fraction:
    return 'val'
  if value < val_fraction + test_fraction:
    return 'test'
  return 'train'


# ---------------------------------------------------------------------------- formats


def _prompt(a: int, b: int, op: str) -> str:
  if op not in OPS or a < 0 or b < 0:
    raise ValueError(f'not a problem of this study: {a!r} {op!r} {b!r} (non-negative ints, op in {OPS})')
  return f'{a}{op}{b}='


def _add_steps(a: int, b: int) -> list[str]:
  digits_a, digits_b = str(a)[::-1], str(b)[::-1]
  steps, carry = [], 0
  for i in range(max(len(digits_a), len(digits_b))):
    x = int(digits_a[i]) if i < len(digits_a) else 0
    y = int(digits_b[i]) if i < len(digits_b) else 0
    total = x + y + carry
    steps.append(f'{x}+{y}+{carry}={total}')
    carry = total // 10
  return steps


def _mul_steps(a: int, b: int) -> list[str]:
  steps, partials = [], []
  for j, digit in enumerate(str(b)[::-1]):
    partial = a * int(digit) * 10**j
    steps.append(f'{a}*{digit}{"0" * j}={partial}')
    partials.append(partial)
  total = partials[0]
  for partial in partials[1:]:
    steps.append(f'{total}+{partial}={total + partial}')
    total += partial
  return steps


def _units_first(value: int, width: int) -> str:
  """`value`'s digits units first, padded with zeros to `width` digits."""
  return str(value)[::-1].ljust(width, '0')


def _mul_steps_rev(a: int, b: int) -> str:
  """The cot_rev chain of thought of a*b: P_0+P_1=S_1+P_2=S_2+...+P_{m-1} (module docstring)."""
  n = num_digits(a)
  text, total = '', 0
  for j, digit in enumerate(str(b)[::-1]):
    partial = a * int(digit) * 10**j
    if j:
      text += '+' + _units_first(partial, n + 1 + j)
      if j < num_digits(b) - 1:
        text += '=' + _units_first(total + partial, n + 1 + j)
    else:
      text = _units_first(partial, n + 1)
    total += partial
  return text


def format_problem(a: int, b: int, op: str, fmt: str) -> tuple[str, str]:
  """(prompt, target) text of the problem in format `fmt` (see the module docstring)."""
  prompt = _prompt(a, b, op)
  result = answer(a, b, op)
  if fmt == 'plain':
    return prompt, f'{result}<end>'
  if fmt == 'reversed':
    return prompt, f'{str(result)[::-1]}<end>'
  if fmt == 'cot':
    steps = _add_steps(a, b) if op == '+' else _mul_steps(a, b)
    return prompt, f'<think>{" ".join(steps)}</think>{result}<end>'
  if fmt == 'cot_rev':
    n, m = num_digits(a), num_digits(b)
    if op == '+':
      return prompt, f'{_units_first(result, max(n, m) + 1)}<end>'
    return prompt, f'<think>{_mul_steps_rev(a, b)}</think>{_units_first(result, n + m)}<end>'
  raise ValueError(f'unknown format {fmt!r}; expected one of {FORMATS}')


_PROMPT_RE = re.compile(r'(?:<pad>)*[0-9]+[+*][0-9]+')


def running_sums(a: int, b: int, op: str) -> list[int]:
  """The running sum behind each answer digit, units first (Bai et al. 2025): r_k = s_k + floor(r_{k-1} / 10)
  with s_k = a_k + b_k for '+' and the sum of a_i * b_j over i + j = k for '*' (digits units first, 0 past a
  number's end); answer digit k is r_k mod 10. One per digit of the answer."""
  digits_a, digits_b = [int(d) for d in str(a)[::-1]], [int(d) for d in str(b)[::-1]]
  sums, carry = [], 0
  for k in range(num_digits(answer(a, b, op))):
    if op == '+':
      column = (digits_a[k] if k < len(digits_a) else 0) + (digits_b[k] if k < len(digits_b) else 0)
    else:
      column = sum(digits_a[i] * digits_b[k - i] for i in range(len(digits_a)) if 0 <= k - i < len(digits_b))
    sums.append(column + carry)
    carry = sums[-1] // 10
  return sums


def internalize(target: str, removed: int) -> str:
  """`target` (a format_problem target) with the first `removed` tokens of its chain of thought taken out
  (Deng et al. 2024): `<think>` + the rest + `</think>` + answer, or the answer alone once none is left.
  Formats without a chain of thought, or removed=0, give `target` unchanged."""
  if removed < 0:
    raise ValueError(f'removed must be >= 0, got {removed}')
  if not removed or not target.startswith(arith_tokenizer.THINK):
    return target
  thought, rest = target[len(arith_tokenizer.THINK):].split(arith_tokenizer.END_THINK, 1)
  if removed >= len(arith_tokenizer.encode(thought)):
    return rest
  return f'{arith_tokenizer.THINK}{thought[removed:]}{arith_tokenizer.END_THINK}{rest}'


def thought_tokens(target: str) -> int:
  """Tokens of the chain of thought in `target` (between <think> and </think>; 0 without one)."""
  if not target.startswith(arith_tokenizer.THINK):
    return 0
  return len(arith_tokenizer.encode(target[len(arith_tokenizer.THINK):].split(arith_tokenizer.END_THINK, 1)[0]))


def parse_answer(generated: str | Sequence[int] | np.ndarray, fmt: str) -> int | None:
  """The answer in a generated text or token ids, or None when malformed.

  `generated` is the generation alone or the prompt followed by it (left
  padding allowed). It is cut at its first <end> (None without one). The
  answer is what follows </think> for 'cot' (and 'cot_rev' when it wrote
  <think>), and the prompt's '=' for the others (when there is an '=', what
  precedes it must be a prompt); it must be digits only, with no leading zero
  in normal order (for 'reversed': no trailing zero), and is read units first
  for 'reversed' and 'cot_rev' (whose zeros at the end are padding). Token ids
  outside the vocabulary before the <end> make it malformed.
  """
  if fmt not in FORMATS:
    raise ValueError(f'unknown format {fmt!r}; expected one of {FORMATS}')
  if isinstance(generated, str):
    text = generated
  else:
    ids = generated.tolist() if isinstance(generated, np.ndarray) else list(generated)
    if arith_tokenizer.END_ID not in ids:
      return None
    try:
      text = arith_tokenizer.decode(ids[:ids.index(arith_tokenizer.END_ID) + 1])
    except InputError:
      return None
  end = text.find(arith_tokenizer.END)
  if end < 0:
    return None
  text = text[:end]
  if fmt == 'cot' or (fmt == 'cot_rev' and arith_tokenizer.THINK in text):
    start = text.find(arith_tokenizer.END_THINK)
    if start < 0:
      return None
    digits = text[start + len(arith_tokenizer.END_THINK):]
  else:
    start = text.find('=')
    if start >= 0 and not _PROMPT_RE.fullmatch(text, 0, start):
      return None
    digits = text[start + 1:]
  if not digits or not digits.isascii() or not digits.isdigit():
    return None
  if fmt == 'cot_rev':  # Units first, padded with zeros at the end: any number of them.
    return int(digits[::-1])
  if fmt == 'reversed':
    digits = digits[::-1]
  if len(digits) > 1 and digits[0] == '0':
    return None
  return int(digits)
