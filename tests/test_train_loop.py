"""The task-agnostic loop on a toy regression task: resume, NaN check, corrupt checkpoints."""
import dataclasses
import pathlib
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import linen as nn

import models
from train import checkpoint as ckpt_lib
from train import loop
from train import workdir as workdir_lib
from train.errors import NonFiniteLossError


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(x)[..., 0]


class _ToyTask:
  """y = x . w_true; batch t is a pure function of t."""

  def __init__(self, model, poison_at: int | None = None):
    self.model = model
    self.poison_at = poison_at
    self.validated = []

  def example_inputs(self):
    return np.zeros((2, 4), np.float32)

  def loss_fn(self, params, batch, rng):
    del rng
    pred = self.model.apply({'params': params}, batch['x'])
    loss = jnp.mean((pred - batch['y']) ** 2) * batch['scale'][0]
    return loss, {'acc': -loss}

  def train_batch(self, step, batch_size, process_index, process_count):
    rng = np.random.default_rng([7, step, process_index])
    x = rng.normal(size=(batch_size // process_count, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    scale = np.full((batch_size // process_count,), np.nan if step == self.poison_at else 1.0, np.float32)
    return {'x': x, 'y': y, 'scale': scale}

  def validate(self, params, step):
    self.validated.append(step)
    return {'score': float(step)}

  def objective(self) -> loop.Objective:
    return loop.Objective(loss_fn=self.loss_fn, train_batch=self.train_batch, example_inputs=self.example_inputs(),
                          progress_metrics=('loss', 'acc'))

  def evaluators(self, every: int = 4) -> list[loop.Scheduled]:
    return [loop.Scheduled('val', self.validate, every, select='score')]


def _train(config, workdir, task):
  return loop.train(config, workdir, task.model, task.objective(), task.evaluators(int(config.eval_every)))


def _config(steps: int = 12) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=0, model=dict(name='toy'), eval_every=4,
      train=dict(steps=steps, batch_size=8, lr=0.05, warmup_steps=2, schedule='cosine', final_lr_fraction=0.1,
                 weight_decay=0.0, b1=0.9, b2=0.99, grad_clip=1.0, ema_decay=0.9, log_every=2,
                 checkpoint_every=4, keep_checkpoints=2)))


def _params(result):
  return jax.tree.map(np.asarray, jax.device_get(result.state.params))


def test_loss_decreases_and_checkpoints_written(tmp_path: pathlib.Path):
  task = _ToyTask(_Linear())
  result = _train(_config(40), tmp_path, task)
  result.checkpoints.close()
  rows = [l for l in (tmp_path / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]
  import json
  losses = [json.loads(r)['loss'] for r in rows]
  assert losses[-1] < 0.5 * losses[0]
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps == [36, 40]  # keep_checkpoints=2
  assert task.validated == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
  assert (tmp_path / 'best').is_dir()


def test_resume_continues_bit_for_bit(tmp_path: pathlib.Path):
  """A run stopped at step 8 and resumed ends with exactly the uninterrupted run's params."""
  task = _ToyTask(_Linear())
  full = _train(_config(12), tmp_path / 'full', task)
  full.checkpoints.close()
  # Simulate an interruption: train to 8 with the same schedule, by writing the step-8 checkpoint of
  # a run with steps=12 (eval/checkpoint every 4), then delete the later ones.
  part = _train(_config(12), tmp_path / 'part', task)
  part.checkpoints.close()
  for p in (tmp_path / 'part' / 'checkpoints').iterdir():
    if p.name == '12':
      import shutil
      shutil.rmtree(p)
  resumed = _train(_config(12), tmp_path / 'part', task)
  resumed.checkpoints.close()
  assert resumed.restored_step == 8
  for a, b in zip(jax.tree.leaves(_params(full)), jax.tree.leaves(_params(resumed))):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path: pathlib.Path):
  task = _ToyTask(_Linear(), poison_at=6)
  with pytest.raises(NonFiniteLossError, match=r'step 7.*last good checkpoint \(step 4\)'):
    _train(_config(12), tmp_path, task)
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps == [4]


def _corrupt(step_dir: pathlib.Path, how: str) -> None:
  """Damages a saved step as a crash or a user could: data cut short, or a metadata file deleted."""
  if how == 'truncated':
    for f in (step_dir / 'state').rglob('*'):
      if f.is_file() and 'd' in f.parts and f.stat().st_size > 0:
        f.write_bytes(f.read_bytes()[:20])
  else:
    (step_dir / 'state' / how).unlink()


@pytest.mark.parametrize('how', ['truncated', 'manifest.ocdbt', '_METADATA'])
def test_unreadable_latest_checkpoint_is_set_aside_and_the_older_step_resumes(tmp_path, capsys, how):
  """Resuming past an unreadable newest step: a warning names it, it is moved (not deleted), the
  older step resumes, and the run ends with the uninterrupted run's params."""
  task = _ToyTask(_Linear())
  full = _train(_config(12), tmp_path / 'full', task)
  full.checkpoints.close()
  config = _config(12)
  config.train.keep_checkpoints = 3
  part = _train(config, tmp_path / 'part', task)  # Steps 4, 8 and 12 kept: 12 goes, 8 is damaged.
  part.checkpoints.close()
  shutil.rmtree(tmp_path / 'part' / 'checkpoints' / '12')
  _corrupt(tmp_path / 'part' / 'checkpoints' / '8', how)
  capsys.readouterr()
  resumed = _train(config, tmp_path / 'part', task)
  resumed.checkpoints.close()
  out = capsys.readouterr().out
  assert resumed.restored_step == 4
  assert f'{tmp_path / "part" / "checkpoints" / "8"} cannot be read' in out and 'older step 4' in out
  assert (tmp_path / 'part' / 'unreadable_checkpoints' / 'checkpoints_8' / 'state').is_dir()
  for a, b in zip(jax.tree.leaves(_params(full)), jax.tree.leaves(_params(resumed))):
    np.testing.assert_array_equal(a, b)


def test_no_readable_checkpoint_is_one_error_naming_each_step_and_changes_nothing(tmp_path: pathlib.Path):
  task = _ToyTask(_Linear())
  result = _train(_config(8), tmp_path, task)
  result.checkpoints.close()
  _corrupt(tmp_path / 'checkpoints' / '8', '_METADATA')
  _corrupt(tmp_path / 'checkpoints' / '4', 'truncated')
  with pytest.raises(ckpt_lib.CheckpointError, match=r'checkpoints can be read: 8 \(state/_METADATA missing\); 4 '
                     r'\(.*\)\. Nothing was changed') as e:
    _train(_config(12), tmp_path, task)
  assert '\n' not in str(e.value) and 'TensorStore' not in str(e.value)
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['4', '8']
  assert not (tmp_path / 'unreadable_checkpoints').exists()


def test_evaluation_with_an_unreadable_best_checkpoint_uses_the_latest(tmp_path: pathlib.Path, capsys):
  task = _ToyTask(_Linear())
  result = _train(_config(8), tmp_path, task)
  result.checkpoints.close()
  best_step = next(p for p in (tmp_path / 'best').iterdir() if p.name.isdigit())
  _corrupt(best_step, 'manifest.ocdbt')
  from train import sharding  # pylint: disable=g-import-not-at-top
  params, step, which = ckpt_lib.restore_eval_params(tmp_path, 'best', sharding.make_mesh())
  assert (step, which) == (8, 'latest') and jax.tree.leaves(params)
  out = capsys.readouterr().out
  assert f'warning: {best_step} cannot be read (state/manifest.ocdbt missing); evaluating the latest' in out
  assert (best_step / 'state').is_dir()  # Evaluation is read-only: left in place.


def test_resume_rewinds_metrics_log_so_each_step_appears_once(tmp_path: pathlib.Path):
  import json
  import shutil
  task = _ToyTask(_Linear())
  _train(_config(12), tmp_path, task).checkpoints.close()
  shutil.rmtree(tmp_path / 'checkpoints' / '12')  # As if killed after step 8's checkpoint.
  _train(_config(12), tmp_path, task).checkpoints.close()
  steps = [json.loads(l)['step'] for l in (tmp_path / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]
  assert steps == [2, 4, 6, 8, 10, 12]


def test_restart_from_scratch_moves_old_metrics_and_best_aside(tmp_path: pathlib.Path, capsys):
  import shutil
  task = _ToyTask(_Linear())
  _train(_config(8), tmp_path, task).checkpoints.close()
  shutil.rmtree(tmp_path / 'checkpoints')
  _train(_config(4), tmp_path, task).checkpoints.close()
  out = capsys.readouterr().out
  assert 'metrics.jsonl.old' in out and 'best.old' in out
  assert (tmp_path / 'best.old').is_dir() and (tmp_path / 'metrics.jsonl.old').is_file()


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path: pathlib.Path):
  """The event file is read back with its own record format (length, crc, Event proto, crc)."""
  import struct
  from tensorboardX.proto import event_pb2
  task = _ToyTask(_Linear())
  _train(_config(8), tmp_path, task).checkpoints.close()
  (events,) = tmp_path.glob('events.out.tfevents.*')
  data, tags = events.read_bytes(), {}
  while data:
    (length,) = struct.unpack('<Q', data[:8])
    event = event_pb2.Event.FromString(data[12:12 + length])
    data = data[12 + length + 4:]
    for value in event.summary.value:
      tags.setdefault(value.tag, []).append((event.step, value.simple_value))
  assert [s for s, _ in tags['train/loss']] == [2, 4, 6, 8]
  assert [s for s, _ in tags['val/score']] == [4, 8]
  assert tags['val/score'][-1][1] == 8.0


def test_settings_check_refuses_other_settings_and_other_tasks(tmp_path: pathlib.Path):
  from train.errors import WorkdirError
  config = _config(8)
  settings = workdir_lib.settings_of(config, 'toy', free=('train.steps',))
  workdir_lib.check_settings(tmp_path, settings, record=True)
  longer = _config(20)  # train.steps is free: resuming to more steps is fine.
  workdir_lib.check_settings(tmp_path, workdir_lib.settings_of(longer, 'toy', ('train.steps',)), record=True)
  with config.unlocked():
    config.train.lr = 0.5
    config.train.log_every = 1  # Cadences are always free.
  with pytest.raises(WorkdirError, match=r'train.lr: 0.05 -> 0.5'):
    workdir_lib.check_settings(tmp_path, workdir_lib.settings_of(config, 'toy', ('train.steps',)), record=True)
  with pytest.raises(WorkdirError, match="belongs to task 'toy'"):
    workdir_lib.check_settings(tmp_path, workdir_lib.settings_of(_config(8), 'other', ()), record=True)


def test_lock_stops_a_second_holder_and_takes_over_a_stale_lock(tmp_path: pathlib.Path):
  import json
  import os
  import socket
  from train.errors import WorkdirError
  with workdir_lib.Lock(tmp_path):
    with pytest.raises(WorkdirError, match=f'in use by pid {os.getpid()}'):
      with workdir_lib.Lock(tmp_path):
        pass
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps({'pid': 2 ** 22 + 12345, 'host': socket.gethostname()}))
  with workdir_lib.Lock(tmp_path):  # Its holder is gone: taken over.
    assert json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())['pid'] == os.getpid()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


class _SowingLinear(nn.Module):
  """A model with an auxiliary loss and a statistic (as an MoE router has), sown per layer."""

  @nn.compact
  def __call__(self, x):
    dense = nn.Dense(1, name='dense')
    y = dense(x)[..., 0]
    kernel = dense.variables['params']['kernel']
    for layer in range(2):
      self.sow(models.aux.LOSSES, 'penalty', 0.05 * jnp.sum(kernel ** 2))
      self.sow(models.aux.STATS, 'spread', jnp.std(y) + layer)
    return y


def test_auxiliary_losses_are_added_to_the_loss_and_logged(tmp_path: pathlib.Path):
  """models.apply_with_aux: a sown loss (summed over layers) joins the objective's loss, a sown statistic
  (averaged) is logged beside it; a model that sows nothing leaves the loss as it was."""
  import json
  task = _ToyTask(_SowingLinear())
  params = task.model.init(jax.random.key(0), np.ones((2, 4), np.float32))['params']
  batch = task.train_batch(0, 8, 0, 1)
  out, aux = models.apply_with_aux(task.model, {'params': params}, batch['x'])
  penalty = 2 * 0.05 * float(jnp.sum(params['dense']['kernel'] ** 2))
  assert float(aux.losses['penalty']) == pytest.approx(penalty, rel=1e-6)
  assert float(aux.stats['spread']) == pytest.approx(float(jnp.std(out)) + 0.5, rel=1e-6)
  mse = float(jnp.mean((out - batch['y']) ** 2))
  assert float(aux.add_to(jnp.float32(mse))) == pytest.approx(mse + penalty, rel=1e-6)
  plain = _Linear()
  _, none = models.apply_with_aux(plain, plain.init(jax.random.key(0), batch['x']), batch['x'])
  loss = jnp.float32(mse)
  assert none.losses == {} and none.add_to(loss) is loss

  def loss_fn(p, b, rng):
    del rng
    pred, aux = models.apply_with_aux(task.model, {'params': p}, b['x'])
    loss = jnp.mean((pred - b['y']) ** 2)
    return aux.add_to(loss), dict(mse=loss, **aux.metrics())

  objective = loop.Objective(loss_fn=loss_fn, train_batch=task.train_batch, example_inputs=task.example_inputs())
  loop.train(_config(4), tmp_path, task.model, objective).checkpoints.close()
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]
  assert rows and all({'penalty', 'spread', 'mse'} <= set(r) for r in rows)
  assert all(r['loss'] == pytest.approx(r['mse'] + r['penalty'], rel=1e-5) for r in rows)


class _ResettingTask(_ToyTask):
  """The toy task whose objective restarts the optimizer's moments before steps 4 and 8 (a curriculum's stages)."""

  def objective(self) -> loop.Objective:
    return dataclasses.replace(super().objective(), reset_optimizer_at=lambda step: step in (4, 8))


def test_optimizer_reset_restarts_the_moments_keeps_the_schedule_and_resumes_bit_for_bit(tmp_path: pathlib.Path):
  plain = _train(_config(12), tmp_path / 'plain', _ToyTask(_Linear()))
  plain.checkpoints.close()
  full = _train(_config(12), tmp_path / 'full', _ResettingTask(_Linear()))
  full.checkpoints.close()
  adam = lambda result: [s for s in jax.tree.leaves(result.state.opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)][0]  # pylint: disable=unnecessary-lambda-assignment
  counts = [s.count for s in jax.tree.leaves(full.state.opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByScheduleState)) if isinstance(s, optax.ScaleByScheduleState)]
  assert int(adam(plain).count) == 12 and int(adam(full).count) == 4  # Adam restarted before step 8 ...
  assert [int(c) for c in counts] == [12]  # ... the lr schedule did not.
  assert not np.allclose(_params(plain)['Dense_0']['kernel'], _params(full)['Dense_0']['kernel'])
  # Stopped at the step-8 checkpoint (8 steps done): the resumed loop resets before step 8, as the whole run did.
  part = _train(_config(12), tmp_path / 'part', _ResettingTask(_Linear()))
  part.checkpoints.close()
  shutil.rmtree(tmp_path / 'part' / 'checkpoints' / '12')
  resumed = _train(_config(12), tmp_path / 'part', _ResettingTask(_Linear()))
  resumed.checkpoints.close()
  assert resumed.restored_step == 8
  for a, b in zip(jax.tree.leaves(_params(full)), jax.tree.leaves(_params(resumed))):
    np.testing.assert_array_equal(a, b)
