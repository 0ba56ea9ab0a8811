"""The arithmetic task: a tiny decoder learns multi-digit + and *; answer formats and looped depth.

A run trains one decoder (stacked, or looped: one weight-tied core applied model.loops times) to
write the answer of `a+b=` (or `a*b=`) in the format model.format ('plain', 'reversed' or 'cot',
data/arith_problems.py), with the loss on the answer tokens only. Training steps come from
train.steps, or from flops_budget and the XLA-counted FLOPs of one step. Then it scores, by greedy
decoding with the KV cache: the held-out test problems of the trained lengths, each operand length
up to eval.max_digits (beyond training: length generalisation) and, for looped models, every
test-time number of loops up to eval.loop_multiplier x the trained one, on the test set and on each
length. It writes results.json, results.md, accuracy_vs_length.png (and, looped, accuracy_vs_loops.png
and accuracy_vs_length_by_loops.png) into the run directory. A sweep adds accuracy_vs_compute.png and
accuracy_vs_inference_flops.png over its runs (report.py).
"""
import dataclasses
import json
import pathlib
import sys
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import arith_batches
from data import arith_files
from data import arith_tokenizer
from models.decoder import Decoder, DecoderConfig
from train import checkpoint as ckpt_lib
from train import flops as flops_lib
from train import loop
from train import registry
from train import sharding
from train import tables
from train.errors import ConfigError
from train.tasks.arith import generation
from train.tasks.arith import objective as objective_lib
from train.tasks.arith import report as report_lib
from train.workdir import write_json

MODEL_TASK_KEYS = ('format', 'random_loops', 'abacus_equals_row')  # Keys of config.model the task reads (not DecoderConfig's).


def _check_model_data_fields(config: ml_collections.ConfigDict) -> None:
  """model.format and model.abacus_equals_row, named as model fields (the data check would say data.)."""
  if config.model.format not in arith_batches.FORMATS:
    raise ConfigError(f'model.format={config.model.format!r} must be one of {", ".join(arith_batches.FORMATS)}')
  if not isinstance(config.model.abacus_equals_row, (bool, np.bool_)):
    raise ConfigError(f'model.abacus_equals_row must be True or False, got {config.model.abacus_equals_row!r}')


def build_model(config: ml_collections.ConfigDict) -> Decoder:
  _check_model_data_fields(config)
  return Decoder(DecoderConfig.from_config(config.model, allowed_extra=MODEL_TASK_KEYS), arith_tokenizer.VOCAB_SIZE)


def run_label(config: ml_collections.ConfigDict) -> str:
  """'reversed', 'cot', 'plain', or 'reversed, looped x8' for a looped model; ', = row' with model.abacus_equals_row."""
  fmt = str(config.model.format) + (', = row' if config.model.abacus_equals_row else '')
  if not config.model.looped:
    return fmt
  random_loops = int(config.model.random_loops)
  return f'{fmt}, looped x{config.model.loops}' + (f' (trained at 1-{random_loops})' if random_loops else '')


def abacus_rows(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The Abacus keywords of generation.generate and TeacherForced: eval.abacus_offset, model.abacus_equals_row."""
  return dict(abacus_offset=int(config.eval.abacus_offset), equals_row=bool(config.model.abacus_equals_row))


def _highest_row(config: ml_collections.ConfigDict, longest: int, offset: int) -> int:
  """The highest Abacus position of numbers of `longest` digits at `offset` (one more with the '=' row)."""
  return longest + offset + int(bool(config.model.abacus_equals_row))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Data, model and eval fields, before any work (one line naming the key)."""
  _check_model_data_fields(config)
  arith_batches.check_config(objective_lib.data_spec(config))
  build_model(config)
  for key in ('num_val', 'num_test', 'num_per_length', 'batch_size', 'max_digits', 'loop_multiplier'):
    if int(config.eval[key]) < 1:
      raise ConfigError(f'eval.{key}={config.eval[key]} must be >= 1')
  offset = int(config.eval.abacus_offset)
  if offset < 0:
    raise ConfigError(f'eval.abacus_offset={offset} must be >= 0')
  if offset and 'abacus' not in str(config.model.position):
    raise ConfigError(f'eval.abacus_offset={offset} needs Abacus positions (model.position={config.model.position!r})')
  if config.model.abacus_equals_row and 'abacus' not in str(config.model.position):
    raise ConfigError(f'model.abacus_equals_row=True needs Abacus positions (model.position={config.model.position!r})')
  if 'abacus' in str(config.model.position):
    _check_abacus_table(config)
  if float(config.flops_budget) < 0:
    raise ConfigError(f'flops_budget={config.flops_budget} must be >= 0 (0: train.steps as given)')


def _check_abacus_table(config: ml_collections.ConfigDict) -> None:
  """Training and evaluation digit positions, offsets included, fit model.max_digit_pos (else they would be clipped)."""
  ops, fmt, table = str(config.data.ops), str(config.model.format), int(config.model.max_digit_pos)
  for what, digits_key, digits, offset_key, offset in (
      ('training', 'data.max_digits', config.data.max_digits, 'data.abacus_max_offset', config.data.abacus_max_offset),
      ('evaluation', 'eval.max_digits', config.eval.max_digits, 'eval.abacus_offset', config.eval.abacus_offset)):
    longest = arith_batches.longest_number(ops, int(digits), fmt)
    highest = _highest_row(config, longest, int(offset))
    if highest > table:
      raise ConfigError(f'model.max_digit_pos={table} is too small: {what} writes numbers of {longest} digits '
                        f'({digits_key}={digits}) at {offset_key}={offset}, positions up to {highest}'
                        + (' with model.abacus_equals_row' if config.model.abacus_equals_row else '')
                        + f'; set model.max_digit_pos >= {highest}')


def _check_file_fits_abacus_table(config: ml_collections.ConfigDict, problems: list) -> None:
  """The eval file's longest number, at eval.abacus_offset, fits model.max_digit_pos (Abacus models)."""
  if 'abacus' not in str(config.model.position) or not problems:
    return
  fmt, offset, table = str(config.model.format), int(config.eval.abacus_offset), int(config.model.max_digit_pos)
  longest = max(arith_batches.longest_number(p.op, generation.problem_length(p), fmt) for p in problems)
  highest = _highest_row(config, longest, offset)
  if highest > table:
    raise ConfigError(f'model.max_digit_pos={table} is too small for {config.data.eval_file}: its problems write numbers '
                      f'of up to {longest} digits, at eval.abacus_offset={offset} positions up to {highest}'
                      + (' with model.abacus_equals_row' if config.model.abacus_equals_row else ''))


@dataclasses.dataclass
class ArithContext:
  """What the runs of a workdir share: FLOPs per step, measured once per program (not per seed or budget)."""
  workdir: pathlib.Path
  flops: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)


def _restore(config: ml_collections.ConfigDict, run_dir: pathlib.Path, which: str) -> tuple[Any, int, str]:
  return ckpt_lib.restore_eval_params(run_dir, which, sharding.make_mesh())


def _test_sets(config: ml_collections.ConfigDict) -> dict[str, list]:
  spec = objective_lib.data_spec(config)
  lengths = range(1, int(config.eval.max_digits) + 1)
  return dict(
      test=arith_batches.eval_set(spec, 'test', int(config.eval.num_test)),
      by_length=[p for n in lengths for p in arith_batches.eval_set(
          spec, 'test', int(config.eval.num_per_length), min_digits=n, max_digits=n)])


def inference_flops(model: Decoder, params: Any, length: int, loops: int | None) -> float:
  """XLA-counted FLOPs of one forward pass over `length` tokens (the work of writing one problem's
  prompt and completion with a KV cache, up to the attention's bookkeeping), loops unrolled."""
  tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)

  def forward(p, t):
    return model.apply({'params': p}, t, digit_pos_BxL=jnp.zeros_like(t), scan_unroll=True,
                       **objective_lib.loops_arg(model, loops))
  return flops_lib.function_flops(forward, abstract, tokens)


def _mean_tokens(problems: list, fmt: str) -> int:
  return int(round(np.mean([len(arith_tokenizer.encode('{}{}{}='.format(p.a, p.op, p.b)))
                            + generation.target_tokens(p, fmt) for p in problems])))


@registry.register('arith')
class ArithTask:
  """Registered as config.task='arith'."""
  free_fields = ('train.steps', 'train.log_every', 'train.eval_every', 'train.checkpoint_every',
                 'train.keep_checkpoints', 'data.eval_file', 'eval')
  eval_free_fields = ('data.eval_file', 'eval')
  summary_metrics = (('test_exact', 'max'), ('ood_exact', 'max'), ('token_acc', 'max'), ('train_seconds', 'min'))

  def name_part(self, path: str, value: Any) -> str | None:
    del path, value
    return None

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> ArithContext:
    check_config(config)
    return ArithContext(pathlib.Path(workdir))

  def _steps(self, config: ml_collections.ConfigDict, model: Decoder,
             context: ArithContext) -> tuple[ml_collections.ConfigDict, float, int]:
    """The run's config (train.steps from flops_budget when set), FLOPs per step and parameters."""
    key = json.dumps([config.model.to_dict(), objective_lib.data_spec(config), int(config.train.batch_size)],
                     sort_keys=True, default=str)
    if key not in context.flops:
      context.flops[key] = flops_lib.train_step_flops(
          config, model, objective_lib.make_objective(config, model, scan_unroll=True))
    flops_per_step, params = context.flops[key]
    cfg = ml_collections.ConfigDict(config.to_dict())
    if float(config.flops_budget) > 0:
      cfg.train.steps = flops_lib.steps_for_budget(float(config.flops_budget), flops_per_step)
      cfg.train.warmup_steps = min(int(cfg.train.warmup_steps), max(int(cfg.train.steps) // 10, 1))
    return cfg, flops_per_step, params

  def train_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                context: ArithContext) -> dict[str, Any]:
    check_config(config)
    model = build_model(config)
    cfg, flops_per_step, n_params = self._steps(config, model, context)
    steps = int(cfg.train.steps)
    fmt = str(cfg.model.format)
    print(f'{run_label(cfg)}: {n_params:,} params, {flops_per_step:.4g} FLOPs per step (XLA), {steps} steps'
          + (f' (budget {float(cfg.flops_budget):.3g})' if float(cfg.flops_budget) > 0 else ''), flush=True)
    write_json(run_dir / 'config.json', cfg.to_dict())
    spec = objective_lib.data_spec(cfg)
    val = objective_lib.TeacherForced(model, arith_batches.eval_set(spec, 'val', int(cfg.eval.num_val)), fmt,
                                      int(spec['seq_len']), int(cfg.eval.batch_size),
                                      equals_row=bool(cfg.model.abacus_equals_row))

    def validate(params: Any, step: int) -> dict[str, Any]:
      del step
      scores = val(params)
      # Exact match ranks; among equal ones (a small set saturates) the lower loss wins.
      return dict(scores, score=scores['exact_tf'] - 1e-3 * min(scores['loss'], 1.0))

    result = loop.train(cfg, run_dir, model, objective_lib.make_objective(cfg, model),
                        [loop.Evaluator('val', validate, int(cfg.train.eval_every), select='score')],
                        label=run_label(cfg))
    result.checkpoints.close()
    params, used_step, _ = _restore(cfg, run_dir, 'best')
    record = self._score(cfg, model, params, run_dir)
    record.update(model=run_label(cfg), format=fmt, looped=bool(cfg.model.looped), trained_loops=int(cfg.model.loops),
                  params=n_params, seed=int(cfg.seed), train_steps=steps, batch_size=int(cfg.train.batch_size),
                  flops_per_step=flops_per_step, train_flops=steps * flops_per_step, checkpoint_step=used_step,
                  train_seconds=result.train_seconds, max_train_digits=int(cfg.data.max_digits))
    write_json(run_dir / 'results.json', record)
    if jax.process_index() == 0:
      report_lib.write_run(run_dir, record)
    print(report_lib.run_summary(record), flush=True)
    return record

  def _score(self, cfg: ml_collections.ConfigDict, model: Decoder, params: Any, run_dir: pathlib.Path) -> dict[str, Any]:
    """Generation on the test set, per length, per test-time loops; teacher-forced token accuracy."""
    fmt, bs, rows = str(cfg.model.format), int(cfg.eval.batch_size), abacus_rows(cfg)
    sets = _test_sets(cfg)
    trained_loops = int(cfg.model.loops) if cfg.model.looped else None
    test = generation.generate(model, params, sets['test'], fmt, batch_size=bs, loops=trained_loops, **rows)
    seq_len = int(objective_lib.data_spec(cfg)['seq_len'])
    forced = objective_lib.TeacherForced(model, sets['test'], fmt, seq_len, bs, **rows)(params)
    by_length = generation.generate(model, params, sets['by_length'], fmt, batch_size=bs, loops=trained_loops, **rows)
    lengths = by_length.by_length()
    max_train = int(cfg.data.max_digits)
    ood = [acc for n, (_, acc) in lengths.items() if n > max_train]
    mean_tokens = _mean_tokens(sets['test'], fmt)
    record = dict(test_exact=test.exact, test_problems=len(test.problems), token_acc=forced['token_acc'],
                  exact_by_length={str(n): acc for n, (_, acc) in lengths.items()},
                  problems_by_length={str(n): count for n, (count, _) in lengths.items()},
                  mean_tokens=mean_tokens, abacus_offset=rows['abacus_offset'],
                  abacus_equals_row=rows['equals_row'],
                  inference_flops=inference_flops(model, params, mean_tokens, trained_loops),
                  examples=[f'{p.a}{p.op}{p.b}={c}' for p, c in zip(test.problems[-3:], test.completions[-3:])])
    if ood:  # Mean exact accuracy over the lengths beyond training (absent when eval.max_digits is not beyond).
      record['ood_exact'] = float(np.mean(ood))
    if cfg.model.looped:  # Every test-time depth, on the test set and on each operand length.
      curve, length_curves = {}, {}
      for k in generation.loops_to_try(trained_loops, int(cfg.eval.loop_multiplier)):
        test_k, lengths_k = ((test, by_length) if k == trained_loops else
                             (generation.generate(model, params, sets[name], fmt, batch_size=bs, loops=k, **rows)
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

  def evaluate_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path,
                   context: ArithContext) -> dict[str, Any]:
    """Scores config.data.eval_file (one problem per line) with the run's best checkpoint."""
    del context
    if not config.data.eval_file:
      raise ConfigError('--mode=eval needs --config.data.eval_file=FILE (one problem per line: 12+34, 12+34= or '
                        '12+34=46; also *)')
    records = arith_files.read_problem_file(config.data.eval_file)
    wrong = arith_files.count_wrong_given(records)
    if wrong:
      print(f'warning: {wrong} of {len(records)} lines of {config.data.eval_file} give a wrong answer; every line '
            'is scored against the true answer', flush=True)
    problems = [p for p, _ in records]
    _check_file_fits_abacus_table(config, problems)
    model = build_model(config)
    params, step, which = _restore(config, run_dir, str(config.eval.checkpoint))
    print(f'restored {which} checkpoint (step {step}) from {run_dir}', flush=True)
    fmt, bs = str(config.model.format), int(config.eval.batch_size)
    trained = int(config.model.loops) if config.model.looped else None
    tries = (generation.loops_to_try(trained, int(config.eval.loop_multiplier)) if config.model.looped else [None])
    abacus = abacus_rows(config)
    offset = abacus['abacus_offset']
    results = {k: generation.generate(model, params, problems, fmt, batch_size=bs, loops=k, **abacus) for k in tries}
    best_loops = max(results, key=lambda k: (results[k].exact, k == trained)) if config.model.looped else None
    best = results[best_loops]
    rows = [[n, count, f'{acc:.4f}'] for n, (count, acc) in best.by_length().items()]
    print(f'{config.data.eval_file}: {len(problems)} problems, {run_label(config)}'
          + (f', best of loops {tries} (trained {trained})' if config.model.looped else '')
          + (f', Abacus offset {offset}' if offset else ''))
    print(tables.markdown_table(('digits (longer operand)', 'problems', 'exact'), rows), flush=True)
    out = dict(file=str(config.data.eval_file), problems=len(problems), exact_accuracy=best.exact,
               loops=best_loops if config.model.looped else None, trained_loops=trained,
               exact_by_length={str(n): acc for n, (_, acc) in best.by_length().items()},
               exact_by_loops={str(k): r.exact for k, r in results.items()} if config.model.looped else None,
               wrong_given=wrong, abacus_offset=offset, abacus_equals_row=abacus['equals_row'],
               checkpoint=which, checkpoint_step=step, model=run_label(config))
    write_json(run_dir / f'eval_{pathlib.Path(config.data.eval_file).name}.json', out)
    return out

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: ArithContext) -> None:
    del config, context
    report_lib.write_sweep(workdir, records)

  def report_evaluation(self, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                        results: dict[str, dict[str, Any]], context: ArithContext) -> None:
    del config, workdir, context
    for name, res in results.items():
      if len(results) > 1:
        print(f'{name}: {report_lib.final_line(res)}', flush=True)
    best = max(results.values(), key=lambda res: res['exact_accuracy'])
    print(report_lib.final_line(best), flush=True)

  def interactive(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, context: ArithContext,
                  stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Reads expressions (`12+34=` or `12+34`) and prints each completion, laid out, and its answer."""
    del context
    model = build_model(config)
    params, step, which = _restore(config, run_dir, str(config.eval.checkpoint))
    fmt = str(config.model.format)
    loops = int(config.model.loops) if config.model.looped else None
    print(f'{run_label(config)}, {which} checkpoint (step {step}). Type a problem like 12+34= (quit, exit or '
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
      answer = generation.generate(model, params, [problem], fmt, batch_size=1, loops=loops, **abacus_rows(config))
      print(report_lib.layout(problem, answer.completions[0], answer.answers[0]), file=stdout, flush=True)
