"""The GSM8K task: supervised fine-tuning of a (pretrained) language model on GSM8K train, the loss on the answer
only, in one of three answer formats (data/gsm8k.py: the natural-language solution, the equations only, the final
number only), scored on GSM8K test by the `gsm8k` evaluator (greedy, strict and flexible extraction).

Everything else is the language-model task's: the model and its pretrained weights (train.init_from), LoRA
(train.lora_rank), the tokenizer, generation, chat (--mode=interactive) and export (--mode=export). A sweep over
`data.answer` at matched fine-tuning FLOPs writes accuracy against FLOPs and against tokens written per problem.
"""
import functools
import pathlib
import sys
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import gsm8k
from data import paths
from models import generate as generate_lib
from train import loop
from train import task as task_lib
from train.errors import ConfigError
from train.tasks import lm as lm_task
from train.tasks.gsm8k import report
from train.tasks.lm import generation
from train.tasks.lm import objective as lm_objective


def answer_loss(params: Any, batch: dict[str, Any], rng: jax.Array, *, model: Any) -> tuple[jax.Array, dict]:
  """Mean cross-entropy over the answer tokens (batch['weights'] = 1 there)."""
  del rng
  tokens_BxW, weights_BxL = batch['tokens'], batch['weights']
  logits_BxLxV, aux = lm_objective._logits(params, tokens_BxW[:, :-1], model=model)  # pylint: disable=protected-access
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV.astype(jnp.float32), tokens_BxW[:, 1:])
  loss = jnp.sum(ce_BxL * weights_BxL) / jnp.maximum(jnp.sum(weights_BxL), 1.0)
  return aux.add_to(loss), dict(ce=loss, **aux.metrics())


@task_lib.register('gsm8k')
class GSM8KTask(lm_task.LMTask):
  """Registered as config.task='gsm8k'."""
  summary_metrics = (('flexible_extract', 'max'), ('strict_match', 'max'), ('train_seconds', 'min'))

  def check(self, config: ml_collections.ConfigDict) -> None:
    if str(config.data.answer) not in gsm8k.ANSWER_FORMATS:
      raise ConfigError(f'data.answer={config.data.answer!r}; choose from {gsm8k.ANSWER_FORMATS}')
    if not str(config.data.tokenizer):
      raise ConfigError('data.tokenizer must name the model\'s tokenizer (a tokenizer.json, an HF directory or a '
                        '.gguf), usually the path of train.init_from')
    if int(config.data.seq_len) < 8:
      raise ConfigError(f'data.seq_len={config.data.seq_len} must be >= 8')

  def rows(self, config: ml_collections.ConfigDict, context: lm_task.LMContext) -> tuple[np.ndarray, np.ndarray]:
    data = config.data
    key = ('sft', str(data.train_file), str(data.answer), int(data.seq_len), int(data.train_limit),
           str(data.tokenizer))

    def build() -> tuple[np.ndarray, np.ndarray]:
      vocab = context.vocab(data)
      problems = gsm8k.read(paths.expand(str(data.train_file)), int(data.train_limit))
      tokens, weights, dropped = gsm8k.sft_rows(problems, vocab.tokenizer, str(data.answer), int(data.seq_len),
                                                vocab.specials.end_of_text, vocab.specials.pad)
      print(f'GSM8K fine-tuning: {len(tokens):,} problems with {data.answer} answers, '
            f'{int(weights.sum()):,} answer tokens' + (f'; {dropped} longer than data.seq_len={data.seq_len} '
                                                       'left out' if dropped else ''), flush=True)
      return tokens, weights
    return context.memo(key, build)

  def objective(self, config, model, context: lm_task.LMContext, scan_unroll: int | bool = 1) -> loop.Objective:
    del scan_unroll  # No loops to unroll: the stacked decoder.
    tokens_NxW, weights_NxL = self.rows(config, context)
    seed = int(config.data.seed)

    def train_batch(step: int, batch_size: int, process_index: int, process_count: int) -> dict[str, np.ndarray]:
      """Batch `step`: rows of a seeded shuffle of every problem, epoch after epoch (a pure function of step)."""
      local = batch_size // process_count
      start = (step * batch_size + process_index * local)
      index = [_epoch_order(seed, (start + i) // len(tokens_NxW), len(tokens_NxW))[(start + i) % len(tokens_NxW)]
               for i in range(local)]
      return {'tokens': tokens_NxW[index], 'weights': weights_NxL[index]}

    return loop.Objective(loss_fn=functools.partial(answer_loss, model=model), train_batch=train_batch,
                          example_inputs=tokens_NxW[:2, :-1].astype(np.int32), progress_metrics=('loss',))

  def label(self, config: ml_collections.ConfigDict) -> str:
    lora = int(config.train.get('lora_rank', 0) or 0)
    return f'{config.data.answer}, ' + (f'LoRA r{lora}' if lora else 'full')

  def record(self, config: ml_collections.ConfigDict, run: Any) -> dict[str, Any]:
    tokens, weights = self.rows(config, run.context)
    return dict(answer=str(config.data.answer), lora_rank=int(config.train.get('lora_rank', 0) or 0),
                problems_trained=int(config.train.steps) * int(config.train.batch_size),
                train_set=len(tokens), answer_tokens_per_problem=float(weights.sum() / len(tokens)))

  def report_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    print(report.summary_line(record), flush=True)

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: Any) -> None:
    report.write_sweep(workdir, records)


  def interactive(self, config: ml_collections.ConfigDict, model: Any, params: Any, checkpoint: str,
                  context: lm_task.LMContext, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """Reasoning mode: a word problem a line; the model's answer as it was fine-tuned to write it (greedy), laid
    out a step a line, then the number parsed from it (strict "#### N", else the last number)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    vocab = context.vocab(config.data)
    settings = generation.Settings(int(config.generate.max_new_tokens), generate_lib.GREEDY, 0, gsm8k.STOPS['gsm8k'])
    limit = generation.prompt_limit(int(config.data.seq_len), settings.max_new_tokens)
    say = lambda *a: print(*a, file=stdout, flush=True)  # pylint: disable=unnecessary-lambda-assignment
    say(f'{self.label(config)}, {checkpoint}. Type a word problem (quit, exit or Ctrl-D ends).')
    while True:
      print('> ', end='', file=stdout, flush=True)
      line = stdin.readline()
      if not line or line.strip() in ('quit', 'exit'):
        say('')
        return
      if not line.strip():
        continue
      question = gsm8k.Problem(line.strip(), '#### 0', 'stdin')
      ids, cut = generation.fit(vocab.tokenizer.encode(gsm8k.prompt(question, 'gsm8k'), add_special_tokens=False).ids,
                                limit)
      if cut:
        say(f'(the problem is longer than {limit} tokens: its start is left out)')
      (text,) = generation.complete(model, params, vocab.tokenizer, [ids], settings,
                                    end_id=vocab.specials.end_of_text, pad_id=vocab.specials.pad)
      say(report.layout(text))


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)
