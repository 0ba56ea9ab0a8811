r"""Memory options of small-GPU training on configs/lm.py:tiny (8 x 512, vocabulary 32768, 512-token sequences):
each option's peak memory of the compiled train step, optimizer-state bytes and step time, against float32
AdamW without rematerialisation measured in the same run.

  python bench/lm_memory.py                    # batch 8 (runs on a CPU; the config's batch is 64)
  python bench/lm_memory.py --batch=64 --steps=10
  python bench/lm_memory.py --quick            # a much smaller model: a smoke test in seconds

The train step is the trainer's (train/loop.py init_state and jit_train_step, with the state donated, on the
objective of train/tasks/lm/objective.py make_objective) on a batch of random tokens. Peak memory is from XLA's
`compiled.memory_analysis()` of that step: argument + output + temp bytes - alias bytes (the outputs that reuse
a donated argument's buffers), i.e. the buffers live at once at the worst point of the step by XLA's own buffer
assignment, without the allocator's fragmentation or XLA's generated code. Optimizer state is the sum of the
`nbytes` of the opt_state leaves. Step time is the median of --steps steps after the compile (on a CPU it says
what the options cost in compute, not what they cost on a GPU). XLA:CPU drops the optimisation barriers that
jax.checkpoint puts around a rematerialised block and common-subexpression elimination then merges the
recomputation back into the forward pass: on a CPU, remat neither saves memory nor costs time (the table says
so); its figures mean something on a GPU.
"""
import argparse
import dataclasses
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

import models
from configs import lm as lm_configs
from data import lm_batches
from train import host_memory
from train import loop
from train import optim
from train import sharding
from train import sweep
from train.tasks.lm import objective as lm_objective

# Option name -> (what the table calls it, model fields, train fields), each against the baseline's.
OPTIONS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    'baseline': ('float32 AdamW, no remat (baseline)', {}, {}),
    'remat_full': ('remat full', {'remat': 'full'}, {}),
    'remat_dots': ('remat dots', {'remat': 'dots'}, {}),
    'bf16_compute': ('bf16 compute (float32 params)', {'dtype': 'bfloat16'}, {}),
    'bf16_moments': ('bf16 moments', {}, {'moments_dtype': 'bfloat16'}),
    'adamw_8bit': ('8-bit AdamW', {}, {'optimizer': 'adamw_8bit'}),
    # 8-bit moments take the place of bfloat16 ones (the two are exclusive).
    'all': ('all: remat full + bf16 compute + 8-bit AdamW', {'remat': 'full', 'dtype': 'bfloat16'},
            {'optimizer': 'adamw_8bit'}),
}
_MIB = 2.0 ** 20


@dataclasses.dataclass
class Row:
  option: str
  peak_bytes: int  # argument + output + temp - alias of the compiled step.
  opt_state_bytes: int
  step_seconds: float


def cpu_name() -> str:
  """The CPU's model name as `lscpu` gives it (else the platform's word for it)."""
  try:
    out = subprocess.run(['lscpu'], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
      if line.startswith('Model name:'):
        return line.split(':', 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return platform.processor() or 'unknown CPU'


def base_config(quick: bool, batch: int) -> ml_collections.ConfigDict:
  """configs/lm.py:tiny's llama (or a much smaller model with --quick), float32 compute, float32 AdamW."""
  cfg = sweep.point_config(lm_configs.get_config('tiny'), sweep.Point('', (('model', 'llama'),)))
  cfg.model.update(dtype='float32', remat='none')
  cfg.train.update(optimizer='adamw', moments_dtype='float32', steps=1000, batch_size=batch)
  if quick:
    cfg.model.update(width=64, num_layers=1, num_heads=4, num_kv_heads=2)
    cfg.data.update(vocab_size=8192, seq_len=64)
  return cfg


def peak_bytes(compiled: Any) -> int:
  """argument + output + temp - alias bytes of a compiled program's memory analysis."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
          - stats.alias_size_in_bytes)


def measure(cfg: ml_collections.ConfigDict, steps: int) -> tuple[int, int, float]:
  """(peak bytes, optimizer-state bytes, median step seconds) of the trainer's step for `cfg`."""
  vocab, seq, batch = int(cfg.data.vocab_size), int(cfg.data.seq_len), int(cfg.train.batch_size)
  model = models.build(cfg.model, vocab_size=vocab)
  rows = np.random.default_rng(0).integers(0, vocab, (batch, seq + 1)).astype(np.int32)
  data = lm_batches.LMData(None, None, vocab, rows, rows, None, None, None, None)
  objective = lm_objective.make_objective(cfg, model, data)
  mesh = sharding.make_mesh()
  tx, schedule = optim.make_optimizer(cfg.train)
  state = loop.init_state(model, objective, cfg, tx, mesh)
  opt_bytes = sum(int(x.nbytes) for x in jax.tree.leaves(state.opt_state))
  batch_arrays = sharding.put_batch(objective.train_batch(0, batch, 0, 1), mesh)
  compiled = loop.jit_train_step(objective, tx, schedule, cfg, mesh).lower(state, batch_arrays).compile()
  peak = peak_bytes(compiled)
  state, metrics = compiled(state, batch_arrays)  # A first step (warm-up), not timed.
  jax.block_until_ready(metrics)
  times = []
  for _ in range(max(steps, 1)):
    start = time.perf_counter()
    state, metrics = compiled(state, batch_arrays)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  if not np.isfinite(float(metrics['loss'])):
    raise FloatingPointError(f'non-finite loss {float(metrics["loss"])}')
  return peak, opt_bytes, statistics.median(times)


def run(quick: bool = False, batch: int = 8, steps: int = 5, options: tuple[str, ...] = tuple(OPTIONS),
        out: Callable[[str], None] = print) -> list[Row]:
  """Measures each option (the baseline first, always), writes the table through `out`, returns its rows."""
  unknown = [o for o in options if o not in OPTIONS]
  if unknown:
    raise ValueError(f'unknown options {unknown}; known: {list(OPTIONS)}')
  options = ('baseline',) + tuple(o for o in options if o != 'baseline')
  base = base_config(quick, batch)
  out(f'CPU: {cpu_name()}; JAX device: {jax.devices()[0].device_kind} ({jax.default_backend()})')
  out(f'model: {"--quick: " if quick else "configs/lm.py:tiny, "}llama {base.model.num_layers} x '
      f'{base.model.width}, vocabulary {base.data.vocab_size}, {base.data.seq_len} tokens a row, batch {batch}; '
      f'step time: median of {steps} steps after the compile')
  out('peak = argument + output + temp - alias bytes of the compiled train step (XLA memory_analysis); '
      'optimizer state = sum of the opt_state leaves\' nbytes; x = ratio to the baseline')
  out('')
  out('| option | peak (MiB) | x | optimizer state (MiB) | x | step (ms) | x |')
  out('|---|---|---|---|---|---|---|')
  rows: list[Row] = []
  for option in options:
    label, model_fields, train_fields = OPTIONS[option]
    cfg = ml_collections.ConfigDict(base.to_dict())
    cfg.model.update(**model_fields)
    cfg.train.update(**train_fields)
    row = Row(option, *measure(cfg, steps))
    rows.append(row)
    ref = rows[0]
    out(f'| {label} | {row.peak_bytes / _MIB:,.1f} | {row.peak_bytes / ref.peak_bytes:.2f} | '
        f'{row.opt_state_bytes / _MIB:,.2f} | {row.opt_state_bytes / ref.opt_state_bytes:.2f} | '
        f'{row.step_seconds * 1e3:,.1f} | {row.step_seconds / ref.step_seconds:.2f} |')
  if jax.default_backend() == 'cpu' and any(OPTIONS[o][1].get('remat', 'none') != 'none' for o in options):
    out('\nnote: XLA:CPU drops the optimisation barriers of jax.checkpoint and CSE merges the recomputation '
        'back: remat rows show no saving on a CPU (run this on a GPU for them)')
  return rows


def main(argv: list[str] | None = None) -> list[Row]:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=8, help='sequences a step (the config trains 64)')
  p.add_argument('--steps', type=int, default=5, help='timed steps after the compile (median)')
  p.add_argument('--quick', action='store_true', help='a much smaller model (a smoke test in seconds)')
  p.add_argument('--options', default=','.join(OPTIONS), help=f'comma-separated, of {list(OPTIONS)}')
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  return run(args.quick, args.batch, args.steps, tuple(o for o in args.options.split(',') if o))


if __name__ == '__main__':
  host_memory.reuse_cpu_scratch_memory()
  main()
