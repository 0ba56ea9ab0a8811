"""The arithmetic task: a tiny decoder learns multi-digit + and *; answer formats and looped depth.

A run trains one decoder (model.name 'llama', stacked, or 'looped': one weight-tied core applied
model.loops times) to write the answer of `a+b=` (or `a*b=`) in the format data.format ('plain',
'reversed' or 'cot', data/arith_problems.py), with the loss on the answer tokens only
(objective.py). Validation picks the checkpoint by teacher-forced exact match; the test problems,
each operand length up to eval.max_digits (beyond training: length generalisation) and, for looped
models, every test-time number of loops are scored by greedy decoding with the KV cache
(generation.py). A run writes results.md, accuracy_vs_length.png (and, looped, accuracy_vs_loops.png
and accuracy_vs_length_by_loops.png); a sweep adds accuracy_vs_compute.png and
accuracy_vs_inference_flops.png over its runs (report.py).
"""
import pathlib
import sys
from typing import Any, TextIO

import ml_collections

import models
from data import arith_files
from data import arith_tokenizer
from train import task as task_lib
from train import workdir as workdir_lib
from train.tasks.arith import generation
from train.tasks.arith import objective
from train.tasks.arith import report
from train.tasks.arith import settings


@task_lib.register('arith')
class ArithTask(task_lib.Task):
  """Registered as config.task='arith'."""
  summary_metrics = (('test_exact', 'max'), ('ood_exact', 'max'), ('token_acc', 'max'), ('train_seconds', 'min'))
  evaluators = {'teacher_forced': objective.TeacherForcedEval, 'generation': generation.GenerationEval}
  free_fields = ('data.eval_file',)

  def check(self, config: ml_collections.ConfigDict) -> None:
    settings.check(config)

  def build_model(self, config: ml_collections.ConfigDict, context: Any):
    return models.build(config.model, vocab_size=arith_tokenizer.VOCAB_SIZE)

  def objective(self, config, model, context: Any, scan_unroll: int | bool = 1):
    return objective.make_objective(config, model, scan_unroll)

  def label(self, config: ml_collections.ConfigDict) -> str:
    return settings.run_label(config)

  def record(self, config: ml_collections.ConfigDict, run: Any) -> dict[str, Any]:
    return dict(format=str(config.data.format), looped=config.model.name == 'looped',
                trained_loops=int(config.model.loops), max_train_digits=int(config.data.max_digits))

  def report_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    report.write_run(run_dir, record)
    print(report.run_summary(record), flush=True)

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: Any) -> None:
    report.write_sweep(workdir, records)

  def interactive(self, config: ml_collections.ConfigDict, model: Any, params: Any, checkpoint: str, context: Any,
                  stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Reads expressions (`12+34=` or `12+34`) and prints each completion, laid out, and its answer."""
    del context
    fmt = str(config.data.format)
    print(f'{settings.run_label(config)}, {checkpoint}. Type a problem like 12+34= (quit, exit or '
          'Ctrl-D to end).', file=stdout, flush=True)
    while True:
      print('> ', end='', file=stdout, flush=True)
      line = stdin.readline()
      if not line or line.strip() in ('quit', 'exit'):
        print('', file=stdout, flush=True)
        return
      if not line.strip():
        continue
      try:
        problem, _ = arith_files.parse_line(line.strip())
      except ValueError as e:
        print(f'not a problem: {e}', file=stdout, flush=True)
        continue
      if problem.op not in str(config.data.ops):
        print(f'not a problem this model learned: it was trained on {" and ".join(str(config.data.ops))} only, '
              f'never on {problem.op}', file=stdout, flush=True)
        continue
      longest = generation.problem_length(problem)
      if longest > int(config.data.max_digits):
        print(f'note: a {longest}-digit operand lies outside training (operands of {config.data.min_digits}-'
              f'{config.data.max_digits} digits); the answer may be wrong', file=stdout, flush=True)
      answer = generation.generate(model, params, [problem], fmt, batch_size=1, loops=settings.trained_loops(config),
                                   **settings.abacus_rows(config))
      print(report.layout(problem, answer.completions[0], answer.answers[0], fmt), file=stdout, flush=True)

  def normalize_settings(self, settings_: dict[str, Any]) -> dict[str, Any]:
    """Earlier releases: the answer format, the '=' row and random loops under `model`; `model.looped`."""
    settings_ = dict(settings_)
    if 'model.looped' in settings_:
      settings_['model.name'] = 'looped' if settings_.pop('model.looped') else 'llama'
    return workdir_lib.rename_fields(settings_, {'model.format': 'data.format',
                                                 'model.abacus_equals_row': 'data.abacus_equals_row',
                                                 'model.random_loops': 'train.random_loops'})
