"""Answers by greedy decoding (jitted, KV cache), scored exactly, by operand length and test-time loops.

A problem's length is its longer operand's digit count. Batches have a fixed shape (prompts
left-padded to the longest prompt of the set, the last batch filled with repeats) so one set
compiles once per number of loops.
"""
import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from data import arith_batches
from data import arith_problems
from data import arith_tokenizer
from data.arith_problems import Problem
from models.decoder import Decoder
from models.generate import greedy_generate


def problem_length(problem: Problem) -> int:
  return max(arith_problems.num_digits(problem.a), arith_problems.num_digits(problem.b))


def target_tokens(problem: Problem, fmt: str) -> int:
  """Tokens of the target (chain of thought, answer, <end>) in format `fmt`."""
  return len(arith_tokenizer.encode(arith_problems.format_problem(*problem, fmt)[1]))


@dataclasses.dataclass
class Answers:
  """Generated completions of a set of problems and what they score."""
  problems: list[Problem]
  completions: list[str]  # Decoded generation up to and including <end> (or all it wrote).
  answers: list[int | None]  # Parsed answer, None when malformed.

  @property
  def correct(self) -> np.ndarray:
    return np.array([ans == arith_problems.answer(*p) for p, ans in zip(self.problems, self.answers)], bool)

  def by_length(self) -> dict[int, tuple[int, float]]:
    """{length: (problems, exact accuracy)} in increasing length."""
    lengths = np.array([problem_length(p) for p in self.problems])
    correct = self.correct
    return {int(n): (int(np.sum(lengths == n)), float(np.mean(correct[lengths == n]))) for n in np.unique(lengths)}

  @property
  def exact(self) -> float:
    return float(np.mean(self.correct)) if self.problems else 0.0


def generate(model: Decoder, params: Any, problems: Sequence[Problem], fmt: str, *, batch_size: int,
             equals_row: bool, loops: int | None = None, abacus_offset: int = 0, extra_tokens: int = 4) -> Answers:
  """Greedy completions of `problems`: at most the longest target + `extra_tokens` new tokens each.

  `abacus_offset` is added to every digit position, of the prompt and of what is written (training
  draws such offsets with data.abacus_max_offset; 0 is the usual evaluation). `equals_row` (no default,
  so no caller forgets it): the model was trained with model.abacus_equals_row (the '=' has a row and every
  digit one more).
  """
  problems = list(problems)
  if not problems:
    return Answers([], [], [])
  max_new = max(target_tokens(p, fmt) for p in problems) + extra_tokens
  width = max(len(arith_tokenizer.encode(f'{a}{op}{b}=')) for a, b, op in problems)
  loops = (loops or model.config.loops) if model.config.looped else None
  completions = []
  for i in range(0, len(problems), batch_size):
    chunk = problems[i:i + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    prompts = arith_batches.encode_prompts(padded, fmt, pad_to=width, equals_row=equals_row)
    tokens_BxP = jnp.asarray(prompts['tokens'])
    digit_pos_BxP = np.where(prompts['digit_pos'] > 0, prompts['digit_pos'] + abacus_offset, 0).astype(np.int32)
    out_BxN = greedy_generate(model, params, tokens_BxP, tokens_BxP != arith_tokenizer.PAD_ID,
                              max_new_tokens=max_new, end_id=arith_tokenizer.END_ID,
                              digit_ids=tuple(arith_tokenizer.DIGIT_IDS),
                              prompt_digit_pos_BxP=jnp.asarray(digit_pos_BxP), loops=loops,
                              digit_offset=jnp.int32(abacus_offset + equals_row))
    for row in np.asarray(out_BxN)[:len(chunk)]:
      ends = np.flatnonzero(row == arith_tokenizer.END_ID)
      completions.append(arith_tokenizer.decode(row[:ends[0] + 1] if len(ends) else row))
  answers = [arith_problems.parse_answer(f'{a}{op}{b}={text}', fmt) for (a, b, op), text in zip(problems, completions)]
  return Answers(problems, completions, answers)


def loops_to_try(trained: int, multiplier: int) -> list[int]:
  """Test-time loops 1 .. multiplier x trained: powers of two, and each multiple of the trained count."""
  top = max(trained * multiplier, 1)
  values = {1, top} | {2**i for i in range(top.bit_length()) if 2**i <= top}
  values |= {trained * m for m in range(1, multiplier + 1)}
  return sorted(values)
