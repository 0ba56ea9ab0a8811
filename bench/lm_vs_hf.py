r"""Our `llama` decoder against HF transformers' LlamaForCausalLM (PyTorch, CPU), same sizes: training tokens/s,
generation tokens/s with the cache, and the peak memory of each (issue: causal language modelling).

  python bench/lm_vs_hf.py                        # two sizes, both peers, ratios at the end
  python bench/lm_vs_hf.py --sizes=256x8 --steps=20

Needs the bench extra (`pip install -e ".[bench]"`: torch 2.13.0 CPU, transformers). Each measurement runs in a
process of its own (so its peak resident memory is its own), ours and HF's alternating `--repeats` times;
the medians and their ratio are printed with the CPU's name. Same model: width, layers, heads and key/value
heads, SwiGLU width, vocabulary, RoPE, RMSNorm, tied embeddings, float32; the same batch of random tokens;
AdamW (lr 1e-3, betas 0.9/0.95, weight decay 0.1) with global-norm clipping 1.0 on both sides.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

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
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Measurements of each peer (alternating), medians reported.')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: "ours" or "hf", run one measurement and print JSON.')
_WIDTH = flags.DEFINE_integer('width', 128, 'Internal: the worker\'s width.')
_LAYERS = flags.DEFINE_integer('layers', 4, 'Internal: the worker\'s layers.')


def _mlp_width(width: int) -> int:
  return -(-8 * width // 24) * 8  # Our decoder's SwiGLU width (8/3 width, a multiple of 8).


def _rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tokens(batch: int, length: int, seed: int = 0):
  import numpy as np  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return np.random.default_rng(seed).integers(0, _VOCAB.value, (batch, length)).astype(np.int32)


def ours() -> dict:
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
  import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import ml_collections  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import models  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from configs import common  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from models import generate as generate_lib  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from train import host_memory, loop, optim, sharding  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from train.tasks.lm import objective as lm_objective  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  host_memory.reuse_cpu_scratch_memory()
  cfg = common.decoder_model(name='llama', width=_WIDTH.value, num_layers=_LAYERS.value, num_heads=_HEADS.value,
                             num_kv_heads=_KV_HEADS.value, position='rope', tie_embeddings=True, init='gpt',
                             attention_grad='flash')
  config = ml_collections.ConfigDict(dict(seed=0, model=cfg, train=common.train(
      steps=1000, batch_size=_BATCH.value, weight_decay=0.1, decay_on='matrices', b2=0.95, warmup_steps=10)))
  model = models.build(cfg, vocab_size=_VOCAB.value)
  batch = {'tokens': _tokens(_BATCH.value, _SEQ_LEN.value + 1)}
  objective = loop.Objective(loss_fn=lambda p, b, r: lm_objective.next_token_loss(p, b, r, model=model),
                             train_batch=lambda *a: batch, example_inputs=batch['tokens'][:2, :-1])
  mesh = sharding.make_mesh()
  tx, schedule = optim.make_optimizer(config.train)
  state = loop.init_state(model, objective, config, tx, mesh)
  step = loop.jit_train_step(objective, tx, schedule, config, mesh)
  arrays = sharding.put_batch(batch, mesh)
  for _ in range(3):
    state, metrics = step(state, arrays)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = step(state, arrays)
  jax.block_until_ready(metrics)
  train_s = (time.perf_counter() - start) / _STEPS.value
  train_peak = _rss_mib()
  prompt = jnp.asarray(_tokens(_GEN_BATCH.value, _PROMPT.value, 1))
  run = lambda: generate_lib.generate(model, state.params, prompt, jnp.ones_like(prompt, bool),  # pylint: disable=unnecessary-lambda-assignment
                                      max_new_tokens=_NEW.value, end_id=-1).block_until_ready()
  run()
  start = time.perf_counter()
  run()
  gen_s = time.perf_counter() - start
  return dict(params=models.count_params(state.params), train_step_ms=1e3 * train_s,
              train_tokens_per_s=_BATCH.value * _SEQ_LEN.value / train_s, train_peak_mib=train_peak,
              gen_tokens_per_s=_GEN_BATCH.value * _NEW.value / gen_s)


def hf() -> dict:
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import transformers  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=_VOCAB.value, hidden_size=_WIDTH.value, intermediate_size=_mlp_width(_WIDTH.value),
      num_hidden_layers=_LAYERS.value, num_attention_heads=_HEADS.value, num_key_value_heads=_KV_HEADS.value,
      max_position_embeddings=_SEQ_LEN.value + _PROMPT.value + _NEW.value + 1, rms_norm_eps=1e-6, rope_theta=10000.0,
      tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
  model = transformers.LlamaForCausalLM(config)
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
  rest = [p for n, p in model.named_parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': rest, 'weight_decay': 0.0}],
                          lr=1e-3, betas=(0.9, 0.95))
  tokens = torch.from_numpy(_tokens(_BATCH.value, _SEQ_LEN.value + 1).astype('int64'))

  def step():
    opt.zero_grad(set_to_none=True)
    logits = model(input_ids=tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss)

  model.train()
  for _ in range(3):
    step()
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    step()
  train_s = (time.perf_counter() - start) / _STEPS.value
  train_peak = _rss_mib()
  model.eval()
  prompt = torch.from_numpy(_tokens(_GEN_BATCH.value, _PROMPT.value, 1).astype('int64'))
  kwargs = dict(max_new_tokens=_NEW.value, min_new_tokens=_NEW.value, do_sample=False, use_cache=True,
                pad_token_id=0, attention_mask=torch.ones_like(prompt))
  with torch.no_grad():
    model.generate(prompt, **kwargs)
    start = time.perf_counter()
    model.generate(prompt, **kwargs)
    gen_s = time.perf_counter() - start
  return dict(params=sum(p.numel() for p in model.parameters()), train_step_ms=1e3 * train_s,
              train_tokens_per_s=_BATCH.value * _SEQ_LEN.value / train_s, train_peak_mib=train_peak,
              gen_tokens_per_s=_GEN_BATCH.value * _NEW.value / gen_s, torch=torch.__version__,
              transformers=transformers.__version__,
              threads=torch.get_num_threads())


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
  if _WORKER.value:
    print(json.dumps(ours() if _WORKER.value == 'ours' else hf()))
    return
  print(f'CPU: {_cpu()}; batch {_BATCH.value} x {_SEQ_LEN.value} tokens, vocab {_VOCAB.value}, heads {_HEADS.value}/'
        f'{_KV_HEADS.value}; generation: batch {_GEN_BATCH.value}, prompt {_PROMPT.value}, {_NEW.value} new tokens',
        flush=True)
  passthrough = [f'--{f.name}={f.value}' for f in (_HEADS, _KV_HEADS, _VOCAB, _SEQ_LEN, _BATCH, _STEPS, _GEN_BATCH,
                                                   _PROMPT, _NEW)]
  for size in _SIZES.value.split(','):
    width, layers = (int(x) for x in size.split('x'))
    runs = {'ours': [], 'hf': []}
    for _ in range(_REPEATS.value):
      for peer in ('ours', 'hf'):
        proc = subprocess.run([sys.executable, __file__, f'--worker={peer}', f'--width={width}', f'--layers={layers}',
                               *passthrough], capture_output=True, text=True, check=False)
        if proc.returncode:
          sys.exit(f'{peer} worker failed:\n{proc.stderr[-3000:]}')
        runs[peer].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = {peer: {k: statistics.median(r[k] for r in rs) for k in ('train_tokens_per_s', 'train_step_ms',
                                                                     'gen_tokens_per_s', 'train_peak_mib')}
           for peer, rs in runs.items()}
    extra = runs['hf'][0]
    print(f'\nwidth {width} x {layers} layers ({runs["ours"][0]["params"]:,} params ours, {extra["params"]:,} HF; '
          f'torch {extra["torch"]} with {extra["threads"]} threads, transformers {extra["transformers"]})')
    print('| | ours | HF | ours / HF |\n|---|---|---|---|')
    for key, label in (('train_tokens_per_s', 'training tokens/s'), ('train_step_ms', 'training step (ms)'),
                       ('gen_tokens_per_s', 'generation tokens/s (cache, greedy)'),
                       ('train_peak_mib', 'peak resident memory while training (MiB, the whole process)')):
      print(f'| {label} | {med["ours"][key]:,.1f} | {med["hf"][key]:,.1f} | '
            f'{med["ours"][key] / max(med["hf"][key], 1e-9):.2f}x |', flush=True)


if __name__ == '__main__':
  app.run(main)
