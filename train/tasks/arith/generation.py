"""Answers by greedy decoding (jitted, KV cache), scored exactly, by operand length and test-time loops; the
`generation` evaluator.

A problem's length is its longer operand's digit count. Batches have a fixed shape (prompts
left-padded to the longest prompt of the set, the last batch filled with repeats) so one set
compiles once per number of loops.
"""
import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import arith_batches
from data import arith_files
from data import arith_problems
from data import arith_tokenizer
from data.arith_problems import Problem
from models import generate as generate_lib
from models.decoder import Decoder
from train import evaluators
from train import flops as flops_lib
from train import tables
from train.tasks.arith import objective
from train.tasks.arith import report
from train.tasks.arith import settings


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

  @property
  def generated_tokens(self) -> float:
    """Mean tokens written per problem (chain of thought, answer, <end>)."""
    return float(np.mean([len(arith_tokenizer.encode(c)) for c in self.completions])) if self.problems else 0.0

  @property
  def thought_tokens(self) -> float:
    """Mean chain-of-thought tokens written per problem (between <think> and </think>; 0 for a model
    that answers without one, as an internalised model does)."""
    if not self.problems:
      return 0.0
    return float(np.mean([arith_problems.thought_tokens(c) for c in self.completions]))


def generate(model: Decoder, params: Any, problems: Sequence[Problem], fmt: str, *, batch_size: int,
             equals_row: bool, loops: int | None = None, abacus_offset: int = 0, extra_tokens: int = 4) -> Answers:
  """Greedy completions of `problems`: at most the longest target + `extra_tokens` new tokens each.

  `abacus_offset` is added to every digit position, of the prompt and of what is written (training
  draws such offsets with data.abacus_max_offset; 0 is the usual evaluation). `equals_row` (no default,
  so no caller forgets it): the model was trained with data.abacus_equals_row (the '=' has a row and every
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
    out_BxN = generate_lib.generate(model, params, tokens_BxP, tokens_BxP != arith_tokenizer.PAD_ID,
                                    max_new_tokens=max_new, end_id=arith_tokenizer.END_ID,
                                    digit_positions=generate_lib.DigitPositions(tuple(arith_tokenizer.DIGIT_IDS)),
                                    prompt_digit_pos_BxP=jnp.asarray(digit_pos_BxP),
                                    prefill_kwargs=(('loops', loops),), digit_offset=jnp.int32(abacus_offset + equals_row))
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


def inference_flops(model: Decoder, params: Any, length: int, loops: int | None) -> float:
  """XLA-counted FLOPs of one forward pass over `length` tokens (the work of writing one problem's
  prompt and completion with a KV cache, up to the attention's bookkeeping), loops unrolled."""
  tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)

  def forward(p, t):
    return model.apply({'params': p}, t, digit_pos_BxL=jnp.zeros_like(t), scan_unroll=True,
                       **objective.loops_arg(model, loops))
  return flops_lib.function_flops(forward, abstract, tokens)


def _mean_tokens(problems: list, fmt: str, removed: int = 0) -> int:
  """Mean prompt + target tokens per problem (the chain of thought less the `removed` tokens an internalised
  run no longer writes): what one problem costs at inference when the model writes its target."""
  return int(round(np.mean([len(arith_tokenizer.encode('{}{}{}='.format(p.a, p.op, p.b))) + len(
      arith_tokenizer.encode(arith_problems.internalize(arith_problems.format_problem(*p, fmt)[1], removed)))
                            for p in problems])))


def _test_sets(config: ml_collections.ConfigDict) -> dict[str, list]:
  spec = objective.data_spec(config)
  lengths = range(1, int(config.eval.max_digits) + 1)
  return dict(
      test=arith_batches.eval_set(spec, 'test', int(config.eval.num_test)),
      by_length=[p for n in lengths for p in arith_batches.eval_set(
          spec, 'test', int(config.eval.num_per_length), min_digits=n, max_digits=n)])


class GenerationEval(evaluators.Evaluator):
  """The `generation` evaluator: greedy answers of the held-out test problems (the headline exact accuracy),
  teacher-forced token accuracy, each operand length up to eval.max_digits and, for a looped model, every
  test-time number of loops up to eval.loop_multiplier x the trained one; on a file (--mode=eval), the
  file's problems at each number of loops, the best reported."""
  headline = 'exact_accuracy'
  file_help = 'one problem per line: 12+34, 12+34= or 12+34=46; also *'

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    if self.file is not None:  # Read and checked before any checkpoint is restored.
      records = arith_files.read_problem_file(self.file)
      self.wrong_given = arith_files.count_wrong_given(records)
      if self.wrong_given:
        print(f'warning: {self.wrong_given} of {len(records)} lines of {self.file} give a wrong answer; every line '
              'is scored against the true answer', flush=True)
      self.problems = [p for p, _ in records]
      settings.check_file_fits_abacus_table(self.config, self.problems, self.file,
                                            [problem_length(p) for p in self.problems])

  def __call__(self, params: Any) -> dict[str, Any]:
    return self._score_file(params) if self.file is not None else self._score_test_sets(params)

  def _score_test_sets(self, params: Any) -> dict[str, Any]:
    """Generation on the test set, per length, per test-time loops; teacher-forced token accuracy."""
    cfg, model = self.config, self.model
    fmt, bs, rows = str(cfg.data.format), int(cfg.eval.batch_size), settings.abacus_rows(cfg)
    sets = _test_sets(cfg)
    trained = settings.trained_loops(cfg)
    test = generate(model, params, sets['test'], fmt, batch_size=bs, loops=trained, **rows)
    seq_len = int(objective.data_spec(cfg)['seq_len'])
    removed = arith_batches.check_config(objective.data_spec(cfg)).eval_removed
    forced = objective.TeacherForced(model, sets['test'], fmt, seq_len, bs, removed=removed, **rows)(params)
    by_length = generate(model, params, sets['by_length'], fmt, batch_size=bs, loops=trained, **rows)
    lengths = by_length.by_length()
    max_train = int(cfg.data.max_digits)
    ood = [acc for n, (_, acc) in lengths.items() if n > max_train]
    mean_tokens = _mean_tokens(sets['test'], fmt, removed)
    record = dict(test_exact=test.exact, test_problems=len(test.problems), token_acc=forced['token_acc'],
                  generated_tokens=test.generated_tokens, thought_tokens=test.thought_tokens,
                  exact_by_length={str(n): acc for n, (_, acc) in lengths.items()},
                  problems_by_length={str(n): count for n, (count, _) in lengths.items()},
                  mean_tokens=mean_tokens, abacus_offset=rows['abacus_offset'],
                  abacus_equals_row=rows['equals_row'],
                  inference_flops=inference_flops(model, params, mean_tokens, trained),
                  examples=[f'{p.a}{p.op}{p.b}={c}' for p, c in zip(test.problems[-3:], test.completions[-3:])])
    if ood:  # Mean exact accuracy over the lengths beyond training (absent when eval.max_digits is not beyond).
      record['ood_exact'] = float(np.mean(ood))
    if trained is not None:  # Every test-time depth, on the test set and on each operand length.
      curve, length_curves = {}, {}
      for k in loops_to_try(trained, int(cfg.eval.loop_multiplier)):
        test_k, lengths_k = ((test, by_length) if k == trained else
                             (generate(model, params, sets[name], fmt, batch_size=bs, loops=k, **rows)
                              for name in ('test', 'by_length')))
        curve[str(k)] = test_k.exact
        length_curves[str(k)] = {str(n): acc for n, (_, acc) in lengths_k.by_length().items()}
        ood_k = [acc for n, acc in length_curves[str(k)].items() if int(n) > max_train]
        print(f'  loops {k}: exact {curve[str(k)]:.4f}' + (f', beyond {max_train} digits {np.mean(ood_k):.4f}'
                                                          if ood_k else ''), flush=True)
      record['exact_by_loops'] = curve
      record['exact_by_length_by_loops'] = length_curves
      record['inference_flops_by_loops'] = {k: inference_flops(model, params, mean_tokens, int(k)) for k in curve}
    return record

  def _score_file(self, params: Any) -> dict[str, Any]:
    cfg = self.config
    fmt, bs = str(cfg.data.format), int(cfg.eval.batch_size)
    trained = settings.trained_loops(cfg)
    tries = loops_to_try(trained, int(cfg.eval.loop_multiplier)) if trained is not None else [None]
    abacus = settings.abacus_rows(cfg)
    results = {k: generate(self.model, params, self.problems, fmt, batch_size=bs, loops=k, **abacus) for k in tries}
    best_loops = max(results, key=lambda k: (results[k].exact, k == trained)) if trained is not None else None
    best = results[best_loops]
    self.tries = tries
    return dict(problems=len(self.problems), exact_accuracy=best.exact, loops=best_loops, trained_loops=trained,
                generated_tokens=best.generated_tokens, thought_tokens=best.thought_tokens,
                exact_by_length={str(n): acc for n, (_, acc) in best.by_length().items()},
                problems_by_length={str(n): count for n, (count, _) in best.by_length().items()},
                exact_by_loops={str(k): r.exact for k, r in results.items()} if trained is not None else None,
                wrong_given=self.wrong_given, abacus_offset=abacus['abacus_offset'],
                abacus_equals_row=abacus['equals_row'])

  def table(self, figures: dict[str, Any]) -> str:
    trained, offset = figures['trained_loops'], figures['abacus_offset']
    rows = [[n, figures['problems_by_length'][n], f'{acc:.4f}'] for n, acc in figures['exact_by_length'].items()]
    return (f'{self.file}: {figures["problems"]} problems, {settings.run_label(self.config)}'
            + (f', best of loops {self.tries} (trained {trained})' if trained is not None else '')
            + (f', Abacus offset {offset}' if offset else '')
            + (f'; {figures["generated_tokens"]:.1f} tokens written per problem, {figures["thought_tokens"]:.1f} of '
               'chain of thought' if 'generated_tokens' in figures else '') + '\n'
            + tables.markdown_table(('digits (longer operand)', 'problems', 'exact'), rows))

  def final_line(self, figures: dict[str, Any]) -> str:
    return report.final_line(figures)
