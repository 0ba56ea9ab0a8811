r"""Step time, puzzles/s and achieved FLOP/s of a Sudoku config's train step on whatever device is present.

  python bench/sudoku_step.py --config=configs/sudoku.py:9x9_cpu [--config.train.batch_size=128] [--steps=10]

FLOPs per step come from XLA's cost analysis of the compiled step; MFU is printed when
--peak_tflops (the device's dense peak, e.g. 989 for an H100 SXM in bf16) is given.
"""
import pathlib
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # Runs from a checkout too.

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

import models
from train import flops as flops_lib
from train import host_memory
from train import loop
from train import optim
from train import sharding
from train.tasks.sudoku import losses

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/sudoku.py:9x9_cpu', 'Sudoku config.',
                                          lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (after one compile step).')
_PEAK = flags.DEFINE_float('peak_tflops', 0.0, 'Device peak TFLOP/s for MFU (0 = skip).')
_REUSE_SCRATCH = flags.DEFINE_bool('reuse_cpu_scratch', True, 'Reuse XLA:CPU scratch memory across steps (train/host_memory.py).')


def random_puzzles(config, model, scan_unroll: int | bool = 1) -> loop.Objective:
  """The Sudoku objective on random puzzles of the right shape: the step's cost does not depend on them."""
  size = int(config.data.size)
  splits = SimpleNamespace(train=SimpleNamespace(puzzles=np.zeros((2, size ** 2), np.int32)))
  objective = losses.make_objective(config, model, splits, scan_unroll=scan_unroll)

  def train_batch(step, batch_size, process_index, process_count):
    rng = np.random.default_rng(step)
    n = batch_size // process_count
    return {'puzzle': rng.integers(0, size + 1, (n, size ** 2)).astype(np.int32),
            'solution': rng.integers(1, size + 1, (n, size ** 2)).astype(np.int32)}

  objective.train_batch = train_batch
  return objective


def main(argv):
  del argv
  if _REUSE_SCRATCH.value:
    host_memory.reuse_cpu_scratch_memory()
  config = _CONFIG.value
  size = int(config.data.size)
  model = models.build(config.model, vocab_size=size + 1, num_classes=size, seq_len=size * size)
  task = random_puzzles(config, model)
  mesh = sharding.make_mesh()
  tx, schedule = optim.make_optimizer(config.train)
  state = loop.init_state(model, task, config, tx, mesh)
  step_fn = loop.jit_train_step(task, tx, schedule, config, mesh)
  batch = sharding.put_batch(task.train_batch(0, int(config.train.batch_size), 0, 1), mesh)
  # XLA counts a loop body once: FLOPs come from the same step with the depth loops unrolled.
  counting_task = random_puzzles(config, model, scan_unroll=True)
  flops = flops_lib.compiled_flops(loop.jit_train_step(counting_task, tx, schedule, config, mesh), state, batch)
  t0 = time.perf_counter()
  state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t0) / _STEPS.value
  batch_size = int(config.train.batch_size)
  params = models.count_params(state.params)
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()}  model: {config.model.name} '
        f'({params:,} params, depth {config.model.depth}, act={config.train.act}, dtype {config.model.dtype})')
  print(f'first step (compile + run): {compile_s:.1f} s')
  print(f'step: {step_s * 1e3:.1f} ms  puzzles/s: {batch_size / step_s:,.0f}  (batch {batch_size})')
  if flops:  # XLA's cost analysis of a program partitioned over N devices counts one device's share.
    share = f' (one device of {jax.device_count()})' if jax.device_count() > 1 else ''
    print(f'XLA FLOPs/step{share}: {flops:.3g}  achieved: {flops / step_s / 1e12:.3f} TFLOP/s'
          + (f'  MFU: {100 * flops / step_s / 1e12 / _PEAK.value:.1f}%' if _PEAK.value else ''))


if __name__ == '__main__':
  app.run(main)
