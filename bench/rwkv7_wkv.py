r"""RWKV-7's chunked training form against the plain token-by-token `lax.scan` recurrence and against our
transformer of about the same parameters: one forward + backward of the next-token loss at sequence lengths
256, 1k and 4k, its time (median of --repeats after compiling) and XLA's peak memory of the compiled program.

  python bench/rwkv7_wkv.py                                   # configs/lm.py:quick's width (128 x 4 blocks)
  python bench/rwkv7_wkv.py --width=512 --layers=12 --lengths=512,2048 --batch=1

Peak memory is XLA's `memory_analysis()` of the compiled step: arguments + outputs + temporaries (the
activations kept for the backward pass among them), less the bytes aliased between arguments and outputs.
The transformer is `llama` with the same width and blocks, GQA and SwiGLU, and its FlashAttention-style
gradient (models/attention.py 'flash'), whose memory is linear in the length too.
"""
import statistics
import subprocess
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

import models

_LENGTHS = flags.DEFINE_string('lengths', '256,1024,4096', 'Sequence lengths.')
_WIDTH = flags.DEFINE_integer('width', 128, 'Model width.')
_LAYERS = flags.DEFINE_integer('layers', 4, 'Blocks.')
_HEAD = flags.DEFINE_integer('head_size', 32, 'RWKV head size (and the transformer\'s head width).')
_BATCH = flags.DEFINE_integer('batch', 1, 'Sequences per step.')
_VOCAB = flags.DEFINE_integer('vocab', 2048, 'Vocabulary.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed steps per model and length (the median is shown).')
_FORMS = flags.DEFINE_string('forms', 'chunked,scan,llama', 'Which to run: chunked, scan (RWKV-7) and llama.')


def _cpu_name() -> str:
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
    return next(line.split(':', 1)[1].strip() for line in out.splitlines() if line.startswith('Model name'))
  except (OSError, StopIteration):
    return 'unknown CPU'


def _model(form: str):
  width, layers, head = _WIDTH.value, _LAYERS.value, _HEAD.value
  if form == 'llama':
    cfg = dict(name='llama', width=width, num_layers=layers, num_heads=width // head, num_kv_heads=max(width // head // 2, 1),
               position='rope', attention_grad='flash', tie_embeddings=False)
  else:
    cfg = dict(name='rwkv7', width=width, num_layers=layers, head_size=head, wkv=form, tie_embeddings=False)
  return models.build(cfg, vocab_size=_VOCAB.value)


def _measure(form: str, length: int) -> dict[str, float]:
  model = _model(form)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, _VOCAB.value, (_BATCH.value, length + 1)), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), tokens[:, :8])['params']

  def loss(p, t):
    logits = model.apply({'params': p}, t[:, :-1])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, t[:, 1:]))

  step = jax.jit(jax.value_and_grad(loss))
  compiled = step.lower(params, tokens).compile()
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes) if mem is not None else float('nan')
  jax.block_until_ready(compiled(params, tokens))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, tokens))
    times.append(time.perf_counter() - start)
  return dict(params=models.count_params(params), seconds=statistics.median(times), peak=peak)


def main(argv):
  del argv
  forms = _FORMS.value.split(',')
  print(f'{_cpu_name()}, {jax.devices()[0].platform}; width {_WIDTH.value} x {_LAYERS.value} blocks, head '
        f'{_HEAD.value}, batch {_BATCH.value}, vocab {_VOCAB.value}; forward + backward of the loss')
  print('| length | model | params | step (s) | vs chunked | peak memory (MiB) | vs chunked |')
  print('|---|---|---|---|---|---|---|')
  for length in (int(x) for x in _LENGTHS.value.split(',')):
    results = {form: _measure(form, length) for form in forms}
    base = results.get('chunked')
    for form, r in results.items():
      name = {'chunked': 'rwkv7 chunked', 'scan': 'rwkv7 lax.scan', 'llama': 'llama (flash grad)'}[form]
      ratio = lambda key: f'{r[key] / base[key]:.2f}x' if base else '-'  # pylint: disable=unnecessary-lambda-assignment,cell-var-from-loop
      print(f'| {length} | {name} | {r["params"]:,} | {r["seconds"]:.3f} | {ratio("seconds")} | '
            f'{r["peak"] / 2**20:.1f} | {ratio("peak")} |', flush=True)


if __name__ == '__main__':
  app.run(main)
