"""Arithmetic batches: the on-the-fly training stream, fixed evaluation sets, prompt encodings.

Config fields (`config.data`, listed in BATCH_FIELDS; defaults in DEFAULTS):
  ops                '+', '*' or '+*' (each example's op uniform among them).
  min_digits         smallest operand length, >= 1.
  max_digits         largest operand length, >= min_digits.
  format             answer format: 'plain', 'reversed' or 'cot' (see data.arith_problems).
  seq_len            padded length L of `tokens`; at least required_seq_len(cfg).
  val_fraction       share of all problems in the val split, in [0, 1).
  test_fraction      share in the test split, in [0, 1); val + test below 1.
  split_salt         str or int mixed into the split hash (another salt, another split).
  abacus_max_offset  int >= 0: training adds one offset, uniform in [0, abacus_max_offset],
                     to every nonzero digit_pos of an example (Abacus embeddings).
  abacus_equals_row  bool: the prompt's '=' gets digit_pos 1 and every digit moves up one row, so
                     the '=' sits in the row before the units (see `_digit_positions`).
  internalize_every  int >= 0: stepwise internalisation of the chain of thought (Deng et al. 2024): one
                     more of its first tokens is removed from the targets every this many steps
                     (0 = never; `removed_at`). Needs format 'cot' or 'cot_rev'.
  internalize_start  int >= 0: the step where removal starts (explicit chain of thought before it).
  internalize_smoothing  float >= 0: Deng's removal smoothing lambda: each example removes o more tokens,
                     P(o) proportional to exp(-lambda o) (0 = off, every example removes the scheduled count).

Batches are dicts of NumPy arrays, B examples of length L:
  tokens      int32[B, L]    prompt then target, right-padded with <pad> (id 0).
  loss_mask   float32[B, L]  1.0 at the target tokens (answer, CoT, <end>); 0 at prompt and padding.
                             Position t is scored for the prediction of tokens[t] from tokens[:t].
  digit_pos   int32[B, L]    0 at non-digits; in the prompt a digit's significance in its operand
                             (units 1, tens 2, ...); after the prompt's '=' the digit's index in its
                             run of consecutive digits, left to right from 1 (the significance for a
                             reversed answer; what an incremental decoder can compute). With
                             abacus_equals_row, the prompt's '=' is 1 and every digit 1 more.
  prompt_len  int32[B]       tokens in the prompt `a+b=`.
  running_sum, running_sum_mask  float32[B, L] (on request, format 'reversed'): at each answer digit, the running
                             sum it is the units of (arith_problems.running_sums; Bai et al.'s auxiliary
                             target), and 1.0 there (0 elsewhere).
  a_len       int32[B]       digits of a; b_len likewise.
`train_batch` is a pure function of (cfg, seed, step, batch_size, process_index).
"""
from collections.abc import Mapping, Sequence
import dataclasses
import functools
import numbers
import re
from typing import Any

import numpy as np

from data import arith_problems
from data import arith_tokenizer
from data.arith_problems import FORMATS, Problem
from data.errors import DataConfigError

Batch = dict[str, np.ndarray]
DEFAULTS = dict(ops='+', min_digits=1, max_digits=6, format='plain', seq_len=24, val_fraction=0.02,
                test_fraction=0.02, split_salt='arith-v1', abacus_max_offset=0,
                abacus_equals_row=False, internalize_every=0, internalize_start=0, internalize_smoothing=0.0)
COT_FORMATS = ('cot', 'cot_rev')  # Formats with a chain of thought to internalise.
ALL_REMOVED = 1 << 30  # A removal count beyond any chain of thought: the answer alone.
BATCH_FIELDS = tuple(DEFAULTS)
_MAX_ROUNDS = 1000  # Rejection-sampling rounds before a training batch is given up as impossible.
_ENUMERATE_UP_TO = 50_000  # eval_set lists every problem of a (len_a, len_b) stratum up to this many.


@dataclasses.dataclass(frozen=True)
class Spec:
  """The checked values of a `config.data` section."""
  ops: str
  min_digits: int
  max_digits: int
  format: str
  seq_len: int
  val_fraction: float
  test_fraction: float
  split_salt: str | int
  abacus_max_offset: int
  abacus_equals_row: bool
  internalize_every: int = 0
  internalize_start: int = 0
  internalize_smoothing: float = 0.0

  def removed_at(self, step: int) -> int:
    """Chain-of-thought tokens the schedule removes at training step `step` (before smoothing)."""
    if not self.internalize_every or step < self.internalize_start:
      return 0
    return (step - self.internalize_start) // self.internalize_every

  def removal_changes_at(self, step: int) -> bool:
    """Whether step `step` removes one more token than step - 1 (a stage begins: the optimizer resets)."""
    return bool(self.internalize_every) and step > self.internalize_start and (
        (step - self.internalize_start) % self.internalize_every == 0)

  @property
  def eval_removed(self) -> int:
    """Tokens removed from the targets that evaluation scores: all of them for an internalising run."""
    return ALL_REMOVED if self.internalize_every else 0


def _field(cfg: Any, name: str) -> Any:
  try:
    return cfg[name] if isinstance(cfg, Mapping) else getattr(cfg, name)
  except (KeyError, AttributeError):
    raise DataConfigError(f'data.{name} is missing (the arithmetic data needs all of {", ".join(BATCH_FIELDS)})'
                          ) from None


def _int_field(cfg: Any, name: str, low: int, low_text: str | None = None) -> int:
  value = _field(cfg, name)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise DataConfigError(f'data.{name} must be an integer >= {low_text or low}, got {value!r}')
  return int(value)


def _bool_field(cfg: Any, name: str) -> bool:
  value = _field(cfg, name)
  if not isinstance(value, (bool, np.bool_)):
    raise DataConfigError(f'data.{name} must be True or False, got {value!r}')
  return bool(value)


def _check_ops(value: Any) -> str:
  ops = ''.join(value) if isinstance(value, (list, tuple)) else value
  if not isinstance(ops, str) or not ops or set(ops) - set(arith_problems.OPS) or len(set(ops)) != len(ops):
    raise DataConfigError(f"data.ops must be '+', '*' or '+*', got {value!r}")
  return ops


def _optional(cfg: Any, name: str) -> Any:
  """A field that configs of earlier releases lack: its default there."""
  try:
    return _field(cfg, name)
  except DataConfigError:
    return DEFAULTS[name]


def check_config(cfg: Any, check_seq_len: bool = True) -> Spec:
  """The checked fields of `cfg` (a ConfigDict or a mapping); a bad value raises DataConfigError."""
  ops = _check_ops(_field(cfg, 'ops'))
  min_digits = _int_field(cfg, 'min_digits', 1)
  max_digits = _int_field(cfg, 'max_digits', min_digits, f'data.min_digits={min_digits}')
  fmt = _field(cfg, 'format')
  if fmt not in FORMATS:
    raise DataConfigError(f'data.format must be one of {", ".join(FORMATS)}; got {fmt!r}')
  val_fraction, test_fraction = _field(cfg, 'val_fraction'), _field(cfg, 'test_fraction')
  arith_problems.check_fractions(val_fraction, test_fraction)
  salt = _field(cfg, 'split_salt')
  if isinstance(salt, bool) or not isinstance(salt, (str, numbers.Integral)):
    raise DataConfigError(f'data.split_salt must be a string or an integer, got {salt!r}')
  internalize = {k: _optional(cfg, k) for k in ('internalize_every', 'internalize_start', 'internalize_smoothing')}
  for name in ('internalize_every', 'internalize_start'):
    value = internalize[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
      raise DataConfigError(f'data.{name} must be an integer >= 0, got {value!r}')
  smoothing = internalize['internalize_smoothing']
  if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing < float('inf'):
    raise DataConfigError(f'data.internalize_smoothing must be a number >= 0 (0 = off), got {smoothing!r}')
  if internalize['internalize_every'] and fmt not in COT_FORMATS:
    raise DataConfigError(f'data.internalize_every={internalize["internalize_every"]} removes chain-of-thought '
                          f'tokens, but data.format={fmt!r} has none; use one of {", ".join(COT_FORMATS)}')
  spec = Spec(ops=ops, min_digits=min_digits, max_digits=max_digits, format=fmt,
              seq_len=_int_field(cfg, 'seq_len', 1), val_fraction=float(val_fraction),
              test_fraction=float(test_fraction), split_salt=salt if isinstance(salt, str) else int(salt),
              abacus_max_offset=_int_field(cfg, 'abacus_max_offset', 0),
              abacus_equals_row=_bool_field(cfg, 'abacus_equals_row'),
              internalize_every=int(internalize['internalize_every']),
              internalize_start=int(internalize['internalize_start']),
              internalize_smoothing=float(smoothing))
  if check_seq_len:
    needed = _required_seq_len(spec.ops, spec.max_digits, spec.format)
    if spec.seq_len < needed:
      raise DataConfigError(f'data.seq_len={spec.seq_len} is too short: {spec.max_digits}-digit operands in '
                            f'format {spec.format!r} need up to {needed} tokens; set data.seq_len >= {needed}')
  return spec


@functools.lru_cache(maxsize=64)
def _required_seq_len(ops: str, max_digits: int, fmt: str) -> int:
  # All-nines operands of the longest length give the longest text in every format: each number written
  # in the prompt, the steps and the answer is then as long as it gets (and '+' carries at every digit).
  nines = 10**max_digits - 1
  return max(len(arith_tokenizer.encode(''.join(arith_problems.format_problem(nines, nines, op, fmt))))
             for op in ops)


@functools.lru_cache(maxsize=64)
def longest_number(ops: str, max_digits: int, fmt: str) -> int:
  """Digits of the longest number (operand, step or answer) that problems of up to `max_digits` digits
  write in format `fmt`: the Abacus positions they use, before any offset."""
  nines = 10**max_digits - 1
  return max(len(run) for op in ops for run in re.findall(r'[0-9]+', ''.join(
      arith_problems.format_problem(nines, nines, op, fmt))))


def required_seq_len(cfg: Any) -> int:
  """The longest prompt + target (tokens, <end> included) that `cfg`'s problems can have."""
  spec = check_config(cfg, check_seq_len=False)
  return _required_seq_len(spec.ops, spec.max_digits, spec.format)


# ---------------------------------------------------------------------------- arrays


def _digit_positions(tokens_BxL: np.ndarray, prompt_end_B: np.ndarray, equals_row: bool = False) -> np.ndarray:
  """int32[B, L] digit_pos (see the module docstring); the prompt ends before column prompt_end_B.

  With `equals_row`, the prompt's last token (its '=') gets 1 and every digit one more than without: the
  '=' then predicts the units digit from the row below it, as each digit of a reversed answer predicts
  the next one (McLeish et al. give the '=' no row, so it must find the units by their row alone, and
  that row moves with the training offset).
  """
  is_digit_BxL = (tokens_BxL >= arith_tokenizer.DIGIT_IDS[0]) & (tokens_BxL <= arith_tokenizer.DIGIT_IDS[-1])
  length = tokens_BxL.shape[1]
  columns_L = np.arange(length)
  last_other_BxL = np.maximum.accumulate(np.where(is_digit_BxL, -1, columns_L), axis=1)
  next_other_BxL = np.minimum.accumulate(np.where(is_digit_BxL, length, columns_L)[:, ::-1], axis=1)[:, ::-1]
  in_prompt_BxL = columns_L < np.asarray(prompt_end_B)[:, None]
  pos_BxL = np.where(in_prompt_BxL, next_other_BxL - columns_L, columns_L - last_other_BxL)
  if not equals_row:
    return np.where(is_digit_BxL, pos_BxL, 0).astype(np.int32)
  is_equals_BxL = columns_L == np.asarray(prompt_end_B)[:, None] - 1
  if not np.all(tokens_BxL[is_equals_BxL] == arith_tokenizer.EQUALS_ID):
    raise ValueError("equals_row: a prompt does not end in '='")
  return np.where(is_digit_BxL, pos_BxL + 1, np.where(is_equals_BxL, 1, 0)).astype(np.int32)


def _prompt_lengths(problems: Sequence[Problem]) -> tuple[list[str], np.ndarray, np.ndarray]:
  """The prompts `a+b=` with the int32[B] lengths of a and b."""
  prompts = [arith_problems.format_problem(a, b, op, 'plain')[0] for a, b, op in problems]
  a_len_B = np.array([p.index(op) for p, (_, _, op) in zip(prompts, problems)], np.int32)
  b_len_B = np.array([len(p) for p in prompts], np.int32) - a_len_B - 2
  return prompts, a_len_B, b_len_B


def encode_examples(problems: Sequence[Problem], fmt: str, seq_len: int, equals_row: bool = False,
                    removed: int | Sequence[int] = 0, running_sums: bool = False) -> Batch:
  """The arrays of `train_batch` (no digit_pos offset) for teacher-forced evaluation of `problems`.

  `equals_row`: data.abacus_equals_row (the '=' gets an Abacus row, see `_digit_positions`).
  `removed`: chain-of-thought tokens taken out of each target (one count, or one per problem;
  arith_problems.internalize). `running_sums` (format 'reversed' only) adds running_sum and its mask.

  A problem longer than `seq_len` tokens raises DataConfigError naming data.seq_len.
  """
  texts, a_len_B, b_len_B = [], [], []
  removed_B = [int(removed)] * len(problems) if isinstance(removed, numbers.Integral) else list(removed)
  for (a, b, op), cut in zip(problems, removed_B):
    prompt, target = arith_problems.format_problem(a, b, op, fmt)
    target = arith_problems.internalize(target, cut)
    a_len_B.append(prompt.index(op))
    b_len_B.append(len(prompt) - a_len_B[-1] - 2)
    texts.append(prompt + target)
  tokens_BxL, length_B = arith_tokenizer.encode_padded(texts, seq_len)
  if tokens_BxL.shape[1] > seq_len:
    i = int(np.argmax(length_B))
    a, b, op = problems[i]
    raise DataConfigError(f'data.seq_len={seq_len} is too short: {a}{op}{b} in format {fmt!r} needs '
                          f'{length_B[i]} tokens; set data.seq_len >= {length_B[i]}')
  a_len_B, b_len_B = np.array(a_len_B, np.int32), np.array(b_len_B, np.int32)
  prompt_len_B = a_len_B + b_len_B + 2  # `a+b=`: one token per character.
  columns_L = np.arange(seq_len)
  loss_mask_BxL = (columns_L >= prompt_len_B[:, None]) & (columns_L < length_B[:, None])
  batch = dict(tokens=tokens_BxL, loss_mask=loss_mask_BxL.astype(np.float32),
               digit_pos=_digit_positions(tokens_BxL, prompt_len_B, equals_row), prompt_len=prompt_len_B,
               a_len=a_len_B, b_len=b_len_B)
  if running_sums:  # The answer's digits start right after the prompt.
    if fmt != 'reversed':
      raise ValueError(f"running sums are targets of the 'reversed' format's answer digits, not of {fmt!r}")
    batch['running_sum'] = np.zeros((len(problems), seq_len), np.float32)
    batch['running_sum_mask'] = np.zeros((len(problems), seq_len), np.float32)
    for row, (a, b, op) in enumerate(problems):
      sums = arith_problems.running_sums(a, b, op)
      start = int(prompt_len_B[row])
      batch['running_sum'][row, start:start + len(sums)] = sums
      batch['running_sum_mask'][row, start:start + len(sums)] = 1.0
  return batch


def encode_prompts(problems: Sequence[Problem], fmt: str, pad_to: int | None = None,
                   equals_row: bool = False) -> Batch:
  """Left-padded prompts for generation: tokens and digit_pos int32[B, P], prompt_len, a_len, b_len int32[B].

  P is `pad_to`, or the longest prompt when None. Every format has the same
  prompt `a+b=`; `fmt` is checked so callers can pass their config's. `equals_row`: as in encode_examples.
  """
  if fmt not in FORMATS:
    raise ValueError(f'unknown format {fmt!r}; expected one of {FORMATS}')
  prompts, a_len_B, b_len_B = _prompt_lengths(problems)
  right_BxP, prompt_len_B = arith_tokenizer.encode_padded(prompts, pad_to or 0)
  width = right_BxP.shape[1]
  if pad_to is not None and width > pad_to:
    raise ValueError(f'pad_to={pad_to} is below the longest prompt ({width} tokens)')
  # Row b moves right by width - prompt_len[b]: column c takes right-padded column c - shift (or <pad>).
  shift_Bx1 = (width - prompt_len_B)[:, None]
  source_BxP = np.arange(width) - shift_Bx1
  tokens_BxP = np.where(source_BxP >= 0, np.take_along_axis(right_BxP, np.maximum(source_BxP, 0), axis=1),
                        arith_tokenizer.PAD_ID).astype(np.int32)
  return dict(tokens=tokens_BxP, digit_pos=_digit_positions(tokens_BxP, np.full(len(problems), width), equals_row),
              prompt_len=prompt_len_B, a_len=a_len_B, b_len=b_len_B)


# ---------------------------------------------------------------------------- training stream


def _train_problems(spec: Spec, rng: np.random.Generator, count: int) -> list[Problem]:
  """`count` problems of the train split, by rejection sampling."""
  held_out = spec.val_fraction + spec.test_fraction
  out: list[Problem] = []
  for _ in range(_MAX_ROUNDS):
    need = count - len(out)
    for problem in arith_problems.sample_problems(rng, spec.ops, spec.min_digits, spec.max_digits,
                                                  need + need // 8 + 4):
      if arith_problems.split_value(*problem, spec.split_salt) >= held_out:
        out.append(problem)
        if len(out) == count:
          return out
  raise DataConfigError(f'found only {len(out)} of {count} training problems with data.min_digits='
                        f'{spec.min_digits}, data.max_digits={spec.max_digits}: data.val_fraction + '
                        f'data.test_fraction={held_out} holds out (nearly) all of them; lower them or widen the range')


def train_batch(cfg: Any, seed: int, step: int, batch_size: int, process_index: int = 0,
                running_sums: bool = False) -> Batch:
  """This host's `batch_size` training examples for `step`, all of the train split (with `running_sums`, the
  running sum behind each answer digit too; encode_examples).

  Drawn with np.random.default_rng([seed, step, process_index]): a pure
  function of the arguments, so training resumes exactly from the step.
  """
  spec = check_config(cfg)
  if step < 0 or process_index < 0 or batch_size < 1:
    raise ValueError(f'bad step {step}, process_index {process_index} or batch_size {batch_size}')
  rng = np.random.default_rng([int(seed), int(step), int(process_index)])
  problems = _train_problems(spec, rng, batch_size)
  removed_B = np.full(batch_size, spec.removed_at(step), np.int64)
  if spec.internalize_smoothing and step >= spec.internalize_start and spec.internalize_every:
    # Deng et al.'s smoothing: o extra tokens with P(o) = (1 - e^-lambda) e^(-lambda o), a geometric law.
    removed_B += rng.geometric(1.0 - np.exp(-spec.internalize_smoothing), batch_size) - 1
  batch = encode_examples(problems, spec.format, spec.seq_len, spec.abacus_equals_row, removed_B.tolist(),
                          running_sums)
  if spec.abacus_max_offset:
    offset_Bx1 = rng.integers(0, spec.abacus_max_offset + 1, (batch_size, 1)).astype(np.int32)
    batch['digit_pos'] = np.where(batch['digit_pos'] > 0, batch['digit_pos'] + offset_Bx1, 0).astype(np.int32)
  return batch


# ---------------------------------------------------------------------------- evaluation sets


def _stratum(spec: Spec, split: str, op: str, len_a: int, len_b: int, num: int, seed: int) -> list[Problem]:
  """Up to `num` distinct problems of `split` with these operand lengths (all there are when fewer)."""
  bounds = (0.0, spec.val_fraction) if split == 'val' else (
      (spec.val_fraction, spec.val_fraction + spec.test_fraction) if split == 'test'
      else (spec.val_fraction + spec.test_fraction, 1.0))
  share = bounds[1] - bounds[0]

  def in_split(a: int, b: int) -> bool:
    return bounds[0] <= arith_problems.split_value(a, b, op, spec.split_salt) < bounds[1]

  rng = np.random.default_rng([seed, arith_problems.OPS.index(op), len_a, len_b])
  size = arith_problems.count_of_length(len_a) * arith_problems.count_of_length(len_b)
  low_a, low_b = (0 if n == 1 else 10**(n - 1) for n in (len_a, len_b))
  if size <= _ENUMERATE_UP_TO or size * share <= 4 * num:
    found = [Problem(a, b, op) for a in range(low_a, 10**len_a) for b in range(low_b, 10**len_b) if in_split(a, b)]
    return [found[i] for i in rng.permutation(len(found))[:num].tolist()]
  found, seen = [], set()
  for _ in range(_MAX_ROUNDS):
    draws = int(2 * (num - len(found)) / share) + 16
    for a, b in zip(arith_problems.sample_numbers(rng, [len_a] * draws),
                    arith_problems.sample_numbers(rng, [len_b] * draws)):
      if (a, b) not in seen and in_split(a, b):
        seen.add((a, b))
        found.append(Problem(a, b, op))
        if len(found) == num:
          return found
  raise RuntimeError(f'eval_set found only {len(found)} of {num} {split} problems of lengths {len_a}, {len_b}')


def eval_set(cfg: Any, split: str, num: int, *, min_digits: int | None = None, max_digits: int | None = None,
             seed: int = 0) -> list[Problem]:
  """A fixed set of distinct problems of `split`, stratified by (op, len_a, len_b).

  For each op of data.ops and each pair of operand lengths in [min_digits,
  max_digits]^2 (default: the config's; a wider range gives out-of-distribution
  lengths) it holds `num` problems, or all the split has when that is fewer
  (1-digit operands). So the set has up to num * len(ops) * (number of lengths)^2
  problems, in the order op, len_a, len_b. Each stratum depends only on (seed,
  op, len_a, len_b) and the split config, so a wider range keeps every
  stratum of a narrower one.
  """
  if split not in arith_problems.SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {arith_problems.SPLITS}')
  spec = check_config(cfg, check_seq_len=False)
  low = spec.min_digits if min_digits is None else min_digits
  high = spec.max_digits if max_digits is None else max_digits
  if not 1 <= low <= high:
    raise ValueError(f'eval_set lengths must satisfy 1 <= min_digits <= max_digits, got {low}, {high}')
  share = {'val': spec.val_fraction, 'test': spec.test_fraction}.get(split, 1.0 - spec.val_fraction -
                                                                   spec.test_fraction)
  if share == 0.0:
    raise DataConfigError(f'data.{split}_fraction is 0, so the {split} split is empty; set it in (0, 1)')
  problems = []
  for op in spec.ops:
    for len_a in range(low, high + 1):
      for len_b in range(low, high + 1):
        problems.extend(_stratum(spec, split, op, len_a, len_b, num, seed))
  return problems
