"""The `gsm8k` evaluator: a language model's accuracy on GSM8K, prompted and scored as the community does
(data/gsm8k.py: lm-evaluation-harness's `gsm8k` and `gsm8k_cot`, or zero shot in the chat template).

  config.evals.gsm8k = dict(type='gsm8k', format='gsm8k_cot', limit=0)
  python launch.py --config=configs/lm.py:smollm2 --workdir=runs/smollm2 --mode=eval \
      --config.eval.file_evaluator=gsm8k --config.data.eval_file={shared}/gsm8k/test.jsonl

Batched greedy generation with the KV cache (prompts sorted by length, left-padded to a multiple of 64 tokens so
that few shapes compile), each row ending at the end token or a stop string; one JSONL line per problem
(prompt, completion, extracted answers, target, correct) in the run's directory; accuracy with a 95% Wilson interval.
"""
import json
import math
import pathlib
import time
from typing import Any

from data import gsm8k
from data import paths
from train import evaluators
from train.errors import ConfigError
from train.tasks.lm import generation
from models import generate as generate_lib


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """The 95% Wilson score interval of a proportion."""
  if n == 0:
    return 0.0, 1.0
  p = correct / n
  centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


class GSM8KEval(evaluators.Evaluator):
  """Accuracy on GSM8K problems: `strict_match` (the format's own answer pattern) and `flexible_extract` (the
  last number written), as lm-evaluation-harness reports them."""
  options = dict(format='gsm8k', shots=5, limit=0, batch_size=8, max_new_tokens=256, seed=1234,
                 train_file='{shared}/gsm8k/train.jsonl', problems_file='', context=0)
  headline = 'flexible_extract'
  file_help = 'GSM8K problems, JSONL: {"question": ..., "answer": "... #### N"} a line'

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    opt = self.options
    self.format = str(opt['format'])
    if self.format not in gsm8k.FORMATS:
      raise ConfigError(f'evals.<gsm8k>.format={self.format!r}; choose from {gsm8k.FORMATS}')
    for key in ('batch_size', 'max_new_tokens'):
      if int(opt[key]) < 1:
        raise ConfigError(f'evals.<gsm8k>.{key}={opt[key]!r} must be >= 1')
    file = self.file or str(opt['problems_file'])  # --mode=eval's file, else its own (in training).
    if not file:
      raise ConfigError('the gsm8k evaluator scores a file: give it problems_file, or run it with --mode=eval '
                        '--config.eval.file_evaluator=<its name> --config.data.eval_file={shared}/gsm8k/test.jsonl')
    self.problems = gsm8k.read(paths.expand(file), int(opt['limit']))
    shots = int(opt['shots']) if self.format == 'gsm8k' else 0  # gsm8k_cot has its 8 exemplars, chat none.
    train = gsm8k.read(paths.expand(str(opt['train_file']))) if shots else []
    if shots < 0 or shots > len(train):
      raise ConfigError(f'evals.<gsm8k>.shots={shots} must be in 0..{len(train)} (the problems of train_file)')
    vocab = self.context.vocab(self.config.data)
    self.tokenizer, self.specials = vocab.tokenizer, vocab.specials
    if self.format == 'chat' and not self.specials.chat:
      raise ConfigError('evals.<gsm8k>.format=chat needs a tokenizer with chat markers (<|im_start|>, <|im_end|>)')
    system = str(self.config.generate.get('system', '') or '')
    self.prompts, self.ids = [], []
    context = int(opt['context']) or int(self.config.data.seq_len)  # The tokens the model may read in all.
    limit = generation.prompt_limit(context, int(opt['max_new_tokens']))
    for i, problem in enumerate(self.problems):
      text = gsm8k.prompt(problem, self.format, gsm8k.few_shot(train, shots, i, int(opt['seed'])))
      if self.format == 'chat':
        ids, _ = generation.chat_prompt(self.tokenizer, [('user', text)], 10 ** 9, system)
      else:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
      if len(ids) > limit:
        raise ConfigError(f'{problem.where}: its {self.format} prompt has {len(ids)} tokens, more than the '
                          f'{limit} that a context of {context} (evals.<gsm8k>.context, 0 = data.seq_len) leaves '
                          f'beside max_new_tokens={opt["max_new_tokens"]}')
      self.prompts.append(text)
      self.ids.append(ids)
    self.settings = generation.Settings(int(opt['max_new_tokens']), generate_lib.GREEDY, 0,
                                        gsm8k.STOPS[self.format])
    self.end_id = self.specials.im_end if self.format == 'chat' else self.specials.end_of_text

  def __call__(self, params: Any) -> dict[str, Any]:
    order = sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
    batch = int(self.options['batch_size'])
    completions: dict[int, str] = {}
    start = time.time()
    for lo in range(0, len(order), batch):
      rows = order[lo:lo + batch]
      prompts = [self.ids[i] for i in rows] + [self.ids[rows[-1]]] * (batch - len(rows))  # One batch shape.
      width = -(-max(len(p) for p in prompts) // 64) * 64
      texts = generation.complete(self.model, params, self.tokenizer, prompts, self.settings, end_id=self.end_id,
                                  pad_id=self.specials.pad, width=width)
      completions.update(zip(rows, texts))
      done, seconds = len(completions), time.time() - start
      print(f'gsm8k {self.format}: {done}/{len(order)} problems, {seconds / done:.2f} s each, about '
            f'{seconds / done * (len(order) - done) / 60:.1f} min left', flush=True)
    strict = flexible = new_tokens = 0
    lines = []
    for i, problem in enumerate(self.problems):
      completion = completions[i]
      got_strict, got_flexible = gsm8k.extract(completion, self.format)
      ok_strict, ok_flexible = gsm8k.is_correct(got_strict, problem.target), gsm8k.is_correct(got_flexible,
                                                                                              problem.target)
      strict, flexible = strict + ok_strict, flexible + ok_flexible
      new_tokens += len(self.tokenizer.encode(completion, add_special_tokens=False).ids)
      lines.append(json.dumps(dict(index=i, where=problem.where, prompt=self.prompts[i], completion=completion,
                                   extracted_strict=got_strict, extracted_flexible=got_flexible,
                                   target=problem.target, correct_strict=ok_strict, correct_flexible=ok_flexible)))
    self.out = pathlib.Path(self.run_dir or self.context.workdir) / f'gsm8k_{self.format}.jsonl'
    paths.write_atomically(self.out, lambda tmp: tmp.write_text('\n'.join(lines) + '\n', encoding='utf-8'))
    n = len(self.problems)
    figures = dict(strict_match=strict / n, flexible_extract=flexible / n, problems=n,
                   new_tokens_per_problem=new_tokens / n, seconds=time.time() - start, format=self.format)
    figures['strict_match_ci95'] = list(wilson(strict, n))
    figures['flexible_extract_ci95'] = list(wilson(flexible, n))
    return figures

  def table(self, figures: dict[str, Any]) -> str:
    rows = [f'GSM8K, {self.format} format: {figures["problems"]} problems in {figures["seconds"]:.0f} s, '
            f'{figures["new_tokens_per_problem"]:.0f} tokens written per problem; each problem in {self.out}', '| extraction | accuracy | 95% interval |', '|---|---|---|']
    for key in ('strict_match', 'flexible_extract'):
      lo, hi = figures[f'{key}_ci95']
      rows.append(f'| {key} | {figures[key]:.4f} | {lo:.4f} - {hi:.4f} |')
    return '\n'.join(rows)

  def final_line(self, figures: dict[str, Any]) -> str:
    return (f'strict_match={figures["strict_match"]:.4f} flexible_extract={figures["flexible_extract"]:.4f} '
            f'problems={figures["problems"]}')
