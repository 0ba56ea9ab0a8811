r"""Peer check: our BERT MLM vs HF transformers' BertForMaskedLM (PyTorch, CPU), same everything.

Both train the same architecture (post-norm BERT, exact GELU, biases, LayerNorm
eps 1e-12, MLM head tied to the word embeddings with its own bias, no dropout)
from the same WordPiece tokenizer, on the same batches and masks (`data.mlm.
train_batch` via the study's MLMTask), with AdamW, the same warmup + cosine
schedule and gradient clipping, for the same number of steps; then both are
scored on the study's fixed eval masks. Prints the final MLM loss of both
(goal: within 3%) and the step-time ratio ours / HF (goal: <= 0.7).

  pip install torch==2.13.0 transformers   # bench-only dependencies (CPU build)
  python bench/mlm_vs_hf.py                # the quick scale's BERT: hidden 64, 4 layers, vocab 2048, seq 64,
                                           # batch 32, 600 steps, seeds 0,1,2 (about 4 min on 2 cores)
  python bench/mlm_vs_hf.py --hidden=256 --vocab=8192 --seq_len=128 --steps=1000   # larger

Each implementation trains once per init seed (same batches and masks for all);
the losses compared are the means over seeds, printed beside their spread, since
the step where MLM leaves the unigram plateau varies from one init to another.

Timing covers one optimizer step (device transfer, forward, backward, update)
and excludes making the batch (shared by both). The two trainings run one after
the other, never at the same time.
"""
import math
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import mlm as mlm_configs  # pylint: disable=wrong-import-position
from data import mlm as mlm_data  # pylint: disable=wrong-import-position
from data import paths  # pylint: disable=wrong-import-position
from train import loop  # pylint: disable=wrong-import-position
from train import host_memory  # pylint: disable=wrong-import-position
from train import mlm as mlm_lib  # pylint: disable=wrong-import-position
from train import mlm_run  # pylint: disable=wrong-import-position
from train import optim  # pylint: disable=wrong-import-position
from train import sharding  # pylint: disable=wrong-import-position

_TEXT = paths.shared_data_dir() / 'text'
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/mlm_vs_hf', 'Tokenizer and token caches.')
_FILES = flags.DEFINE_string('files', f'{_TEXT / "wiki.test.tokens"},{_TEXT / "enwiki_sample.txt"}', 'Training text.')
_EVAL_FILES = flags.DEFINE_string('eval_files', str(_TEXT / 'wiki.valid.tokens'), 'Evaluation text.')
_HIDDEN = flags.DEFINE_integer('hidden', 64, 'Hidden size.')
_LAYERS = flags.DEFINE_integer('layers', 4, 'Transformer layers.')
_HEADS = flags.DEFINE_integer('heads', 4, 'Attention heads.')
_VOCAB = flags.DEFINE_integer('vocab', 2048, 'WordPiece vocabulary asked.')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 64, 'Sequence length.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 600, 'Optimizer steps.')
_LR = flags.DEFINE_float('lr', 1e-3, 'Peak learning rate.')
_WARMUP = flags.DEFINE_integer('warmup', 60, 'Linear warmup steps (then cosine to 0.1 x lr).')
_EVAL_SEQUENCES = flags.DEFINE_integer('eval_sequences', 512, 'Eval sequences (fixed masks).')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch intra-op threads (JAX uses every core).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Init seeds; each model trains once per seed.')
_REUSE_SCRATCH = flags.DEFINE_bool(
    'reuse_cpu_scratch', True, 'Reuse XLA:CPU scratch memory across steps (train/host_memory.py); applies to both.')

DIFFERENCES = (
    'ours reads out only the masked positions (HF computes the MLM head on every position; the loss is the same)',
    'HF adds a learned token-type embedding (all type 0): a constant vector before the embedding LayerNorm, '
    'which ours folds into the position embeddings',
    'ours carries an unused halting head (hidden + 1 params) that gets no gradient',
    'initialisation draws differ (both N(0, 0.02) weights, zero biases, unit LayerNorm; HF zeroes the [PAD] row)',
)


def make_config(seed: int = 0):
  """The study config set to the bench's sizes (BERT only, matching HF's BERT)."""
  config = mlm_configs.get_config('quick')
  with config.unlocked():
    config.data.files = _FILES.value
    config.data.eval_files = _EVAL_FILES.value
    config.data.vocab_size = _VOCAB.value
    config.data.seq_len = _SEQ_LEN.value
    config.data.num_eval_sequences = _EVAL_SEQUENCES.value
    config.models.bert = mlm_configs._bert(_HIDDEN.value, _LAYERS.value, _HEADS.value)  # pylint: disable=protected-access
    config.seed = seed
    config.train.batch_size = _BATCH.value
    config.train.steps = _STEPS.value
    config.train.lr = _LR.value
    config.train.warmup_steps = _WARMUP.value
    config.eval.batch_size = 64
  return mlm_run.config_for_model(config, 'bert')


def _progress(who: str, done: int, total: int, loss: float, times: list[float]) -> None:
  if done % 50 == 0 or done == total:
    print(f'  {who}: step {done}/{total} loss {loss:.4f}, {np.median(times[-50:]) * 1000:.0f} ms/step', flush=True)


def run_ours(cfg, data, batches, eval_batches):
  """Trains our BERT with the study's train step; returns losses, step times, eval scores."""
  mesh = sharding.make_mesh()
  model = mlm_run.build_model(cfg, data.vocab_size)
  task = mlm_lib.MLMTask(cfg, model, data)
  tx, schedule = optim.make_optimizer(cfg.train)
  state = loop.init_state(model, task, cfg, tx, mesh)
  step_fn = loop.jit_train_step(task, tx, schedule, cfg, mesh)
  losses, times = [], []
  for batch in batches:
    start = time.perf_counter()
    state, metrics = step_fn(state, sharding.put_batch(batch, mesh))
    loss = float(metrics['loss'])  # Blocks until the step is done.
    times.append(time.perf_counter() - start)
    losses.append(loss)
    _progress('ours', len(losses), len(batches), loss, times)
  scores = mlm_lib.Evaluator(model, 1, eval_batches, mesh)(state.params)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  return losses, times, scores, n_params


def _labels(batch, torch):
  """HF labels: the target at every kept masked position, -100 elsewhere."""
  labels_BxL = np.full(batch['tokens'].shape, -100, np.int64)
  rows_BxM = np.broadcast_to(np.arange(len(labels_BxL))[:, None], batch['positions'].shape)
  keep_BxM = batch['weights'] > 0
  labels_BxL[rows_BxM[keep_BxM], batch['positions'][keep_BxM]] = batch['targets'][keep_BxM]
  return torch.from_numpy(labels_BxL)


def run_hf(cfg, data, batches, eval_batches):
  """Trains transformers' BertForMaskedLM on the same batches; returns losses, step times, eval scores."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(_THREADS.value)
  torch.manual_seed(int(cfg.seed))
  model_cfg = cfg.model
  hf_config = transformers.BertConfig(
      vocab_size=data.vocab_size, hidden_size=model_cfg.hidden, num_hidden_layers=model_cfg.num_layers,
      num_attention_heads=model_cfg.num_heads, intermediate_size=int(model_cfg.mlp_ratio * model_cfg.hidden),
      hidden_act='gelu', hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      max_position_embeddings=int(cfg.data.seq_len), type_vocab_size=1, initializer_range=0.02,
      layer_norm_eps=float(model_cfg.norm_eps), pad_token_id=data.special_ids.pad, tie_word_embeddings=True)
  model = transformers.BertForMaskedLM(hf_config)
  model.train()
  _, schedule = optim.make_optimizer(cfg.train)
  tcfg = cfg.train
  opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg.lr), betas=(float(tcfg.b1), float(tcfg.b2)),
                          eps=1e-8, weight_decay=float(tcfg.weight_decay))
  losses, times = [], []
  for step, batch in enumerate(batches):
    start = time.perf_counter()
    for group in opt.param_groups:
      group['lr'] = float(schedule(step))  # optax's lr for update `step` (0 at the first step).
    out = model(input_ids=torch.from_numpy(batch['tokens'].astype(np.int64)), labels=_labels(batch, torch))
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if float(tcfg.grad_clip) > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg.grad_clip))
    opt.step()
    times.append(time.perf_counter() - start)
    losses.append(float(out.loss.detach()))
    _progress('HF', len(losses), len(batches), losses[-1], times)
  model.eval()
  ce_sum = correct = count = 0.0
  with torch.no_grad():
    for batch in eval_batches:
      logits_BxLxC = model(input_ids=torch.from_numpy(batch['tokens'].astype(np.int64))).logits
      rows_BxM = torch.arange(logits_BxLxC.shape[0])[:, None]
      logits_BxMxC = logits_BxLxC[rows_BxM, torch.from_numpy(batch['positions'].astype(np.int64))]
      targets_BxM = torch.from_numpy(batch['targets'].astype(np.int64))
      weights_BxM = torch.from_numpy(batch['weights'])
      ce_BxM = torch.nn.functional.cross_entropy(logits_BxMxC.transpose(1, 2), targets_BxM, reduction='none')
      ce_sum += float((ce_BxM * weights_BxM).sum())
      correct += float(((logits_BxMxC.argmax(-1) == targets_BxM) * weights_BxM).sum())
      count += float(weights_BxM.sum())
  scores = dict(mlm_loss=ce_sum / count, masked_accuracy=correct / count, perplexity=math.exp(ce_sum / count))
  n_params = sum(p.numel() for p in model.parameters())
  return losses, times, scores, n_params, transformers.__version__, torch.__version__


def _mean_std(values: list[float]) -> str:
  return f'{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}'


def main(argv):
  del argv
  if _REUSE_SCRATCH.value:
    host_memory.reuse_cpu_scratch_memory()
  seeds = [int(s) for s in _SEEDS.value]
  cfg = make_config(seeds[0])
  data = mlm_data.prepare(cfg.data, _WORKDIR.value)
  task = mlm_lib.MLMTask(cfg, mlm_run.build_model(cfg, data.vocab_size), data)
  batches = [task.train_batch(step, int(cfg.train.batch_size), 0, 1) for step in range(int(cfg.train.steps))]
  eval_batches = mlm_lib.eval_set(data.eval_tokens_NxL, cfg.data, int(cfg.eval.batch_size), data.vocab_size,
                                  data.special_ids)
  print(f'config: hidden {cfg.model.hidden}, {cfg.model.num_layers} layers, {cfg.model.num_heads} heads, '
        f'intermediate {int(cfg.model.mlp_ratio * cfg.model.hidden)}, vocab {data.vocab_size}, seq {cfg.data.seq_len}, '
        f'batch {cfg.train.batch_size}, {cfg.train.steps} steps, AdamW lr {cfg.train.lr:g} (warmup '
        f'{cfg.train.warmup_steps}, cosine to {cfg.train.final_lr_fraction:g}x), betas ({cfg.train.b1}, '
        f'{cfg.train.b2}), wd {cfg.train.weight_decay}, clip {cfg.train.grad_clip}; eval: '
        f'{sum(int((b["weights"] > 0).sum()) for b in eval_batches):,} fixed masked positions; seeds {seeds}',
        flush=True)

  ours, hf = [], []
  for seed in seeds:
    cfg = make_config(seed)
    losses, times, scores, n_params = run_ours(cfg, data, batches, eval_batches)
    ours.append(dict(losses=losses, times=times, scores=scores, params=n_params))
    print(f'ours seed {seed}: {n_params:,} params, eval MLM loss {scores["mlm_loss"]:.4f}', flush=True)
    losses, times, scores, n_params, hf_version, torch_version = run_hf(cfg, data, batches, eval_batches)
    hf.append(dict(losses=losses, times=times, scores=scores, params=n_params))
    print(f'HF seed {seed}: {n_params:,} params, eval MLM loss {scores["mlm_loss"]:.4f}', flush=True)

  skip = min(5, len(batches) - 1)  # Compilation / warm-up steps.
  ours_step = float(np.median([t for r in ours for t in r['times'][skip:]]))
  hf_step = float(np.median([t for r in hf for t in r['times'][skip:]]))
  tail = max(1, len(batches) // 10)
  column = lambda runs, fn: _mean_std([fn(r) for r in runs])
  ours_loss = float(np.mean([r['scores']['mlm_loss'] for r in ours]))
  hf_loss = float(np.mean([r['scores']['mlm_loss'] for r in hf]))
  rel = abs(ours_loss - hf_loss) / hf_loss
  print(f'\nHF transformers {hf_version}, torch {torch_version} ({_THREADS.value} threads); JAX {jax.__version__} '
        f'on {jax.devices()[0].platform}; mean ± std over {len(seeds)} seeds')
  print('| | ours (JAX/Flax) | HF BertForMaskedLM |')
  print('|---|---|---|')
  print(f'| params | {ours[0]["params"]:,} | {hf[0]["params"]:,} |')
  last = lambda r: float(np.mean(r['losses'][-tail:]))
  print(f'| train loss, mean of last {tail} steps | {column(ours, last)} | {column(hf, last)} |')
  for key, label in (('mlm_loss', 'eval MLM loss (fixed masks)'), ('masked_accuracy', 'eval masked accuracy')):
    print(f'| {label} | {column(ours, lambda r: r["scores"][key])} | {column(hf, lambda r: r["scores"][key])} |')
  per_seed = lambda runs: ', '.join(f'{r["scores"]["mlm_loss"]:.4f}' for r in runs)
  print(f'| eval MLM loss per seed | {per_seed(ours)} | {per_seed(hf)} |')
  print(f'| median step time | {ours_step * 1000:.0f} ms | {hf_step * 1000:.0f} ms |')
  print(f'| first step (compile) | {ours[0]["times"][0]:.1f} s | {hf[0]["times"][0]:.1f} s |')
  print('\nDifferences that remain:\n' + '\n'.join(f'- {d}' for d in DIFFERENCES))
  print(f'\nfinal_mlm_loss ours={ours_loss:.4f} hf={hf_loss:.4f} '
        f'rel_diff={rel:.2%} ({"within" if rel <= 0.03 else "NOT within"} 3%)')
  print(f'step_time_ratio ours/hf={ours_step / hf_step:.3f} (goal <= 0.7)')


if __name__ == '__main__':
  app.run(main)
