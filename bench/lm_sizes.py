r"""The one-GPU sizes of configs/lm.py (micro, tiny, small): parameters, XLA-counted FLOPs per train step, one
step's time and tokens/s on this machine, and what their FLOP budgets would take on a GPU (an estimate).

  python bench/lm_sizes.py                     # every size, batch 8 on the CPU (the configs' batch is 64)
  python bench/lm_sizes.py --sizes=micro --batch=64

A GPU estimate is FLOPs / (peak x utilisation): the study's budgets (sweep.grid) summed over its models,
at --gpu_tflops (H100 SXM dense bf16: 989) and --mfu (40% is what well-tuned small-model training reaches).
"""
import time

from absl import app
from absl import flags
import jax
import numpy as np

import models
from configs import lm as lm_configs
from data import lm_batches
from train import flops as flops_lib
from train import host_memory
from train import loop
from train import optim
from train import sharding
from train import sweep
from train.tasks.lm import objective as lm_objective

_SIZES = flags.DEFINE_string('sizes', 'micro,tiny,small', 'Variants of configs/lm.py.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Batch of the timed step (tokens/s scale with it on a CPU).')
_GPU_TFLOPS = flags.DEFINE_float('gpu_tflops', 989.0, 'GPU peak TFLOP/s for the estimate (H100 SXM, dense bf16).')
_MFU = flags.DEFINE_float('mfu', 0.4, 'Model FLOPs utilisation assumed for the estimate.')


def main(argv):
  del argv
  host_memory.reuse_cpu_scratch_memory()
  print(f'device: {jax.devices()[0].device_kind}; one step at batch {_BATCH.value}; GPU estimate at '
        f'{_GPU_TFLOPS.value:g} TFLOP/s x {_MFU.value:.0%}')
  print('| size | params | seq | FLOPs/step (config batch) | step here (s) | tokens/s here | study budgets | GPU hours |')
  print('|---|---|---|---|---|---|---|---|')
  for size in _SIZES.value.split(','):
    config = lm_configs.get_config(size)
    cfg = sweep.point_config(config, sweep.Point('', (('model', 'llama'),)))
    vocab, seq = int(cfg.data.vocab_size), int(cfg.data.seq_len)
    model = models.build(cfg.model, vocab_size=vocab)
    rows = np.random.default_rng(0).integers(0, vocab, (max(_BATCH.value, int(cfg.train.batch_size)), seq + 1)).astype(np.int32)
    data = lm_batches.LMData(None, None, vocab, rows, rows, None, None, None, None)
    with cfg.unlocked():
      cfg.train.steps = 1000
    full, params = flops_lib.train_step_flops(cfg, model, lm_objective.make_objective(cfg, model, data, scan_unroll=True))
    with cfg.unlocked():
      cfg.train.batch_size = _BATCH.value
    objective = lm_objective.make_objective(cfg, model, data)
    mesh = sharding.make_mesh()
    tx, schedule = optim.make_optimizer(cfg.train)
    state = loop.init_state(model, objective, cfg, tx, mesh)
    step = loop.jit_train_step(objective, tx, schedule, cfg, mesh)
    batch = sharding.put_batch(objective.train_batch(0, _BATCH.value, 0, 1), mesh)
    state, metrics = step(state, batch)  # Compiles.
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    budgets = [float(v) for axis in config.sweep.grid.split(';') if axis.strip().startswith('flops_budget=')
               for v in axis.split('=', 1)[1].split(',')]
    points = len(config.models) * len(budgets)
    total = sum(budgets) * len(config.models)
    gpu_hours = total / (_GPU_TFLOPS.value * 1e12 * _MFU.value) / 3600
    print(f'| {size} | {params:,} | {seq} | {full:.3g} (batch {config.train.batch_size}) | {seconds:.2f} | '
          f'{_BATCH.value * seq / seconds:,.0f} | {points} runs, {total:.3g} FLOPs | {gpu_hours:.2f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
