"""A new task is a small spec (train/task.py), and the core runs it from start to finish: steps from a FLOP
budget, evaluators picked by name with their own cadence, the best checkpoint, final scores, results.json,
--mode=eval on a file. The task below (reversing a bit string, docs/adding_a_task.md) is everything it takes."""
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import models
import train
from configs import common
from train import evaluators
from train import loop
from train import task as task_lib
from train.errors import ConfigError

LENGTH = 8


def _bits(seed: int, step: int, count: int) -> np.ndarray:
  return np.random.default_rng([seed, step]).integers(0, 2, (count, LENGTH)).astype(np.int32)


def _loss(params, batch, rng, *, model):
  del rng
  _, out = models.unroll(model, {'params': params}, batch['bits'], 1)
  target = batch['bits'][:, ::-1]
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out['logits'][-1], target))
  return loss, dict(acc=jnp.mean(jnp.argmax(out['logits'][-1], -1) == target))


class Accuracy(evaluators.Evaluator):
  """Per-bit accuracy of the reversed string, on `count` held-out strings or on a file of them (one a line)."""
  options = dict(count=64)
  headline = 'accuracy'
  file_help = 'one bit string a line'

  def __call__(self, params):
    bits = (np.array([[int(c) for c in line] for line in pathlib.Path(self.file).read_text().split()], np.int32)
            if self.file else _bits(999, 0, int(self.options['count'])))
    _, out = models.unroll(self.model, {'params': params}, bits, 1)
    return dict(accuracy=float(jnp.mean(jnp.argmax(out['logits'][-1], -1) == bits[:, ::-1])))


@task_lib.register('reverse')
class ReverseTask(task_lib.Task):
  summary_metrics = (('accuracy', 'max'),)
  evaluators = {'accuracy': Accuracy}

  def build_model(self, config, context):
    return models.build(config.model, vocab_size=2, num_classes=2, seq_len=LENGTH)

  def objective(self, config, model, context, scan_unroll=1):
    return loop.Objective(loss_fn=functools.partial(_loss, model=model),
                          train_batch=lambda step, size, i, n: {'bits': _bits(int(config.data.seed), step, size // n)},
                          example_inputs=_bits(0, 0, 2))


def _config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  common.run_fields(config, 'reverse')
  config.flops_budget = 4e8
  config.sweep = common.sweep()
  config.data = ml_collections.ConfigDict(dict(seed=0, eval_file=''))
  config.model = common.recurrent_model(width=16, num_heads=2, num_layers=1)
  config.train = common.train(batch_size=16, lr=3e-3, warmup_steps=5, log_every=5, checkpoint_every=10)
  config.eval = ml_collections.ConfigDict(dict(checkpoint='best', file_evaluator='test'))
  config.evals = ml_collections.ConfigDict(dict(val=dict(type='accuracy', every=10, select='accuracy', count=32),
                                                test=dict(type='accuracy', final=True)))
  return config


def test_the_core_runs_a_new_task_from_its_spec_alone(tmp_path):
  config = _config()
  (record,) = train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved == json.loads(json.dumps(record))
  assert saved['train_steps'] == round(4e8 / saved['flops_per_step']) > 10  # Steps from the FLOP budget.
  assert saved['warmup_steps'] == 5 and saved['params'] > 0 and saved['accuracy'] > 0.9  # It learns.
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  val_steps = [r['step'] for r in rows if r['kind'] == 'val']
  assert val_steps[:2] == [10, 20] and val_steps[-1] == saved['train_steps']  # Its cadence, and the last step.
  best = max((r for r in rows if r['kind'] == 'val'), key=lambda r: r['accuracy'])
  assert saved['checkpoint_step'] == best['step']  # Scored with the checkpoint its `select` kept.
  strings = tmp_path / 'strings.txt'
  strings.write_text('01101001\n11110000\n')
  with config.unlocked():
    config.data.eval_file = str(strings)
  (result,) = train.evaluate(config, str(tmp_path)).values()
  assert json.loads((tmp_path / 'eval_strings.txt.json').read_text())['accuracy'] == result.figures['accuracy']


def test_a_misnamed_evaluator_or_option_is_refused_before_any_work(tmp_path):
  config = _config()
  config.evals.val.type = 'acuracy'
  with pytest.raises(ConfigError, match=r"evals.val.type='acuracy' is not an evaluator of task 'reverse'"):
    train.train_and_evaluate(config, str(tmp_path))
  config = _config()
  config.evals.val.select = 'acuracy'  # Known only once the evaluator has run: at the first evaluation.
  with pytest.raises(ConfigError, match=r"evals.val.select='acuracy' is not a figure it gives \(accuracy\)"):
    train.train_and_evaluate(config, str(tmp_path / 'select'))
  config = _config()
  config.evals.val.cunt = 3
  with pytest.raises(ConfigError, match=r"evals.val: unknown key cunt; 'accuracy' takes type, every, select, final, count"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()
