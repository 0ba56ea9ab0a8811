r"""Our `llama` decoder against HF transformers' LlamaForCausalLM (PyTorch, CPU), same sizes: training tokens/s,
generation tokens/s with the cache, and the peak memory of each (issue: causal language modelling).

  python bench/lm_vs_hf.py                        # two sizes, both peers, ratios at the end
  python bench/lm_vs_hf.py --sizes=256x8 --steps=20

Needs the bench extra (`pip install -e ".[bench]"`: torch 2.13.0 CPU, transformers). Both peers live in one
process and take turns (training steps, then generations), so that both see the same machine; the medians and
their ratio are printed with the CPU's name. Peak memory comes from a process per peer that only trains. Same model: width, layers, heads and key/value
heads, SwiGLU width, vocabulary, RoPE, RMSNorm, tied embeddings, float32; the same batch of random tokens;
AdamW (lr 1e-3, betas 0.9/0.95, weight decay 0.1) with global-norm clipping 1.0 on both sides.
"""
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

# torch's OpenMP threads spin for a while after each parallel region; in a process shared with XLA (the peers take
# turns) that spinning takes the cores from the next JAX step. Passive threads sleep instead.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

_SIZES = flags.DEFINE_string('sizes', '128x4,256x6', 'Model sizes, widthxlayers, comma-separated.')
_HEADS = flags.DEFINE_integer('heads', 4, 'Query heads.')
_KV_HEADS = flags.DEFINE_integer('kv_heads', 2, 'Key/value heads.')
_VOCAB = flags.DEFINE_integer('vocab', 2048, 'Vocabulary.')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 128, 'Training sequence length.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Training batch.')
_STEPS = flags.DEFINE_integer('steps', 30, 'Timed training steps (after 3 untimed).')
_GEN_BATCH = flags.DEFINE_integer('gen_batch', 8, 'Generation batch.')
_PROMPT = flags.DEFINE_integer('prompt_len', 32, 'Prompt tokens.')
_NEW = flags.DEFINE_integer('new_tokens', 64, 'Generated tokens per sequence.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Rounds of turns (3 training turns and 2 generations each a round).')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: "ours" or "hf": train --steps steps, print the peak memory.')
_WIDTH = flags.DEFINE_integer('width', 128, 'Internal: the worker\'s width.')
_LAYERS = flags.DEFINE_integer('layers', 4, 'Internal: the worker\'s layers.')


def _mlp_width(width: int) -> int:
  return -(-8 * width // 24) * 8  # Our decoder's SwiGLU width (8/3 width, a multiple of 8).


def _rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tokens(batch: int, length: int, seed: int = 0):
  import numpy as np  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return np.random.default_rng(seed).integers(0, _VOCAB.value, (batch, length)).astype(np.int32)


class Ours:
  """Our `llama` with the LM task's loss and the core's jitted train step (AdamW on the matrices, clipping)."""

  def __init__(self, width: int, layers: int):
    import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    import ml_collections  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    import models  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    from configs import common  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    from models import generate as generate_lib  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    from train import loop, optim, sharding  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    from train.tasks.lm import objective as lm_objective  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    self.jax, self.jnp, self.generate_lib = jax, jnp, generate_lib
    cfg = common.decoder_model(name='llama', width=width, num_layers=layers, num_heads=_HEADS.value,
                               num_kv_heads=_KV_HEADS.value, position='rope', tie_embeddings=True, init='gpt',
                               attention_grad='flash')
    config = ml_collections.ConfigDict(dict(seed=0, model=cfg, train=common.train(
        steps=1000, batch_size=_BATCH.value, weight_decay=0.1, decay_on='matrices', b2=0.95, warmup_steps=10)))
    self.model = models.build(cfg, vocab_size=_VOCAB.value)
    batch = {'tokens': _tokens(_BATCH.value, _SEQ_LEN.value + 1)}
    objective = loop.Objective(loss_fn=lambda p, b, r: lm_objective.next_token_loss(p, b, r, model=self.model),
                               train_batch=lambda *a: batch, example_inputs=batch['tokens'][:2, :-1])
    mesh = sharding.make_mesh()
    tx, schedule = optim.make_optimizer(config.train)
    self.state = loop.init_state(self.model, objective, config, tx, mesh)
    self.step_fn = loop.jit_train_step(objective, tx, schedule, config, mesh)
    self.batch = sharding.put_batch(batch, mesh)
    self.prompt = jnp.asarray(_tokens(_GEN_BATCH.value, _PROMPT.value, 1))
    self.params = models.count_params(self.state.params)

  def train_step(self) -> None:
    self.state, metrics = self.step_fn(self.state, self.batch)
    self.jax.block_until_ready(metrics)

  def generate(self) -> None:
    self.generate_lib.generate(self.model, self.state.params, self.prompt, self.jnp.ones_like(self.prompt, bool),
                               max_new_tokens=_NEW.value, end_id=-1).block_until_ready()


class HF:
  """transformers' LlamaForCausalLM of the same size, with torch's AdamW on the matrices and clipping."""

  def __init__(self, width: int, layers: int):
    import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    import transformers  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    torch.manual_seed(0)
    self.torch = torch
    self.versions = f'torch {torch.__version__} with {torch.get_num_threads()} threads, transformers {transformers.__version__}'
    config = transformers.LlamaConfig(
        vocab_size=_VOCAB.value, hidden_size=width, intermediate_size=_mlp_width(width), num_hidden_layers=layers,
        num_attention_heads=_HEADS.value, num_key_value_heads=_KV_HEADS.value,
        max_position_embeddings=_SEQ_LEN.value + _PROMPT.value + _NEW.value + 1, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    self.model = transformers.LlamaForCausalLM(config)
    named = list(self.model.named_parameters())
    self.opt = torch.optim.AdamW([{'params': [p for _, p in named if p.ndim >= 2], 'weight_decay': 0.1},
                                  {'params': [p for _, p in named if p.ndim < 2], 'weight_decay': 0.0}],
                                 lr=1e-3, betas=(0.9, 0.95))
    self.tokens = torch.from_numpy(_tokens(_BATCH.value, _SEQ_LEN.value + 1).astype('int64'))
    self.prompt = torch.from_numpy(_tokens(_GEN_BATCH.value, _PROMPT.value, 1).astype('int64'))
    self.params = sum(p.numel() for p in self.model.parameters())

  def train_step(self) -> None:
    torch = self.torch
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    logits = self.model(input_ids=self.tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.tokens[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.opt.step()

  def generate(self) -> None:
    self.model.eval()
    with self.torch.no_grad():
      self.model.generate(self.prompt, max_new_tokens=_NEW.value, min_new_tokens=_NEW.value, do_sample=False,
                          use_cache=True, pad_token_id=0, attention_mask=self.torch.ones_like(self.prompt))


def _in_turns(peers: dict, method: str, turns: int, per_turn: int) -> dict[str, list[float]]:
  """Seconds per call of `method`, the peers taking turns (`per_turn` calls each), so both see the same
  machine: on a shared VM the speed of 2-thread work drifts for seconds at a time."""
  times = {name: [] for name in peers}
  for peer in peers.values():  # Compiles, allocates, warms up.
    for _ in range(2):
      getattr(peer, method)()
  for _ in range(turns):
    for name, peer in peers.items():
      for _ in range(per_turn):
        start = time.perf_counter()
        getattr(peer, method)()
        times[name].append(time.perf_counter() - start)
  return times


def _peak_memory(peer: str, width: int, layers: int, passthrough: list[str]) -> float:
  """Peak resident memory (MiB) of a process that builds the peer and trains it --steps steps."""
  proc = subprocess.run([sys.executable, __file__, f'--worker={peer}', f'--width={width}', f'--layers={layers}',
                         *passthrough], capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.exit(f'{peer} worker failed:\n{proc.stderr[-3000:]}')
  return float(proc.stdout.strip().splitlines()[-1])


def _cpu() -> str:
  try:
    for line in open('/proc/cpuinfo', encoding='utf-8'):
      if line.startswith('model name'):
        name = line.split(':', 1)[1].strip()
        flags_line = next((l for l in open('/proc/cpuinfo', encoding='utf-8') if l.startswith('flags')), '')  # pylint: disable=consider-using-with
        return f'{name}, {os.cpu_count()} cores, ' + ('AVX-512' if 'avx512f' in flags_line else 'AVX2 only')
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def main(argv):
  del argv
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
  from train import host_memory  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  host_memory.reuse_cpu_scratch_memory()  # As launch.py does, before JAX starts (train/host_memory.py).
  if _WORKER.value:  # One peer trained in a process of its own: its peak resident memory.
    peer = (Ours if _WORKER.value == 'ours' else HF)(_WIDTH.value, _LAYERS.value)
    for _ in range(_STEPS.value):
      peer.train_step()
    print(_rss_mib())
    return
  print(f'CPU: {_cpu()}; batch {_BATCH.value} x {_SEQ_LEN.value} tokens, vocab {_VOCAB.value}, heads {_HEADS.value}/'
        f'{_KV_HEADS.value}; generation: batch {_GEN_BATCH.value}, prompt {_PROMPT.value}, {_NEW.value} new tokens',
        flush=True)
  passthrough = [f'--{f.name}={f.value}' for f in (_HEADS, _KV_HEADS, _VOCAB, _SEQ_LEN, _BATCH, _STEPS, _GEN_BATCH,
                                                   _PROMPT, _NEW)]
  sizes = [tuple(int(x) for x in size.split('x')) for size in _SIZES.value.split(',')]
  # Before any peer is built here: a child's peak memory starts from this process's at its fork.
  memory = {(w, l): {name: _peak_memory(worker, w, l, passthrough) for name, worker in (('ours', 'ours'), ('HF', 'hf'))}
            for w, l in sizes}
  for width, layers in sizes:
    peers = {'ours': Ours(width, layers), 'HF': HF(width, layers)}
    train = _in_turns(peers, 'train_step', _REPEATS.value * 3, max(_STEPS.value // 3, 1))
    gen = _in_turns(peers, 'generate', _REPEATS.value * 2, 1)
    rows = {'training tokens/s': {n: _BATCH.value * _SEQ_LEN.value / statistics.median(t) for n, t in train.items()},
            'training step (ms, median)': {n: 1e3 * statistics.median(t) for n, t in train.items()},
            'generation tokens/s (cache, greedy)': {n: _GEN_BATCH.value * _NEW.value / statistics.median(t)
                                                    for n, t in gen.items()},
            'peak resident memory of a training process (MiB)': memory[(width, layers)]}
    print(f'\nwidth {width} x {layers} layers ({peers["ours"].params:,} params ours, {peers["HF"].params:,} HF; '
          f'{peers["HF"].versions}); {len(train["ours"])} timed steps each, in turns')
    print('| | ours | HF | ours / HF |\n|---|---|---|---|')
    for label, values in rows.items():
      print(f'| {label} | {values["ours"]:,.1f} | {values["HF"]:,.1f} | {values["ours"] / max(values["HF"], 1e-9):.2f}x |',
            flush=True)
    del peers


if __name__ == '__main__':
  app.run(main)
