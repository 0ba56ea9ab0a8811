"""Masked language modelling: readout slots, weighted cross-entropy with deep supervision, evaluation.

Batches from `data.mlm` mark the predicted positions with `weights` over the
whole sequence. The task turns them into a fixed number M of readout slots per
group of `readout_group` consecutive sequences (`positions_GxM`, `targets_GxM`,
`weights_GxM`; a position indexes the group's tokens laid end to end), so the
output head (the largest matrix product at BERT-small sizes) runs on the ~15%
masked tokens only, as BERT's original code does. Pooling the slots of a group
(by default each device's whole batch) needs far fewer of them than one list per
sequence: the masked count of many sequences varies less, relative to its mean
(batch 32 x 64 tokens: 389 slots instead of 32 x 25 = 800). M is set high enough
that a position is dropped only with a probability around 1e-7 (the `dropped`
training metric counts them); evaluation uses the largest count of its fixed
set, so it drops none.
"""
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

import models
from data import mlm_batches
from models.unroll import unroll
from train import evaluators
from train import loop
from train import sharding
from train.errors import ConfigError, InputError

Batch = dict[str, np.ndarray]


def auto_max_predictions(seq_len: int, mask_prob: float, group: int = 1) -> int:
  """Readout slots for `group` sequences: mean + 5 standard deviations of their masked count."""
  tokens = group * seq_len
  mean = tokens * mask_prob
  std = math.sqrt(tokens * mask_prob * (1.0 - mask_prob))
  return int(min(tokens, math.ceil(mean + 5.0 * std + 1.0)))


def to_positions(batch: Batch, max_predictions: int, group: int = 1) -> Batch:
  """Gathers the chosen positions of an MLM batch into fixed-size [G, M] arrays, G = B / group.

  Returns dict(tokens int32[B, L], positions int32[G, M], targets int32[G, M],
  weights float32[G, M], dropped float32[G]). Row g holds the chosen positions
  of sequences g*group .. (g+1)*group - 1 laid end to end (sequence i of the
  group, position l -> i * L + l), in order; the rest of its M slots point at
  position 0 with weight 0. `dropped` counts chosen positions beyond M (left
  out of the loss).
  """
  weights_BxL = batch['weights']
  batch_size, seq_len = weights_BxL.shape
  if group < 1 or batch_size % group:
    raise ConfigError(f'train.readout_group={group} must divide the batch of {batch_size} sequences')
  weights_GxT = weights_BxL.reshape(batch_size // group, group * seq_len)
  if not 1 <= max_predictions <= weights_GxT.shape[1]:
    raise ConfigError(f'max_predictions={max_predictions} must be in [1, readout_group x seq_len = '
                     f'{weights_GxT.shape[1]}]')
  chosen_GxT = weights_GxT > 0
  order_GxT = np.argsort(~chosen_GxT, axis=1, kind='stable')  # Chosen positions first, in order.
  positions_GxM = order_GxT[:, :max_predictions].astype(np.int32)
  keep_GxM = np.take_along_axis(chosen_GxT, positions_GxM, axis=1)
  positions_GxM = np.where(keep_GxM, positions_GxM, 0).astype(np.int32)
  targets_GxT = batch['targets'].reshape(weights_GxT.shape)
  return dict(
      tokens=batch['tokens'].astype(np.int32),
      positions=positions_GxM,
      targets=np.take_along_axis(targets_GxT, positions_GxM, axis=1).astype(np.int32),
      weights=np.where(keep_GxM, np.take_along_axis(weights_GxT, positions_GxM, axis=1), 0.0).astype(
          np.float32),
      dropped=(chosen_GxT.sum(1) - keep_GxM.sum(1)).astype(np.float32))


def top_class(logits_Xx_C: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis (first index of the largest logit), written as two plain reductions.

  XLA:CPU lowers argmax to a variadic reduction that is not vectorised: 3.7 ms for
  the bench BERT's [32, 25, 2048] logits, against 0.9 ms for this form.
  """
  top_Xx1 = jnp.max(logits_Xx_C, axis=-1, keepdims=True)
  index_Xx_C = jax.lax.broadcasted_iota(jnp.int32, logits_Xx_C.shape, logits_Xx_C.ndim - 1)
  return jnp.min(jnp.where(logits_Xx_C == top_Xx1, index_Xx_C, logits_Xx_C.shape[-1]), axis=-1)


def mlm_loss(params: Any, batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module, depth: int,
             deep_supervision: bool, detach: bool, scan_unroll: int | bool = 1
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted CE over the masked positions, averaged over all `depth` steps or at the last.

  Metrics are of the last step: `ce` (the MLM loss), `acc` (masked accuracy).
  """
  _, out = unroll(model, {'params': params}, batch['tokens'], depth, detach=detach,
                  positions_GxM=batch['positions'], every_step=deep_supervision,
                  scan_unroll=scan_unroll, dropout_rng=rng if model.config.dropout > 0 else None)
  logits_DxGxMxC = out['logits']
  targets_GxM, weights_GxM = batch['targets'], batch['weights']
  total = jnp.maximum(jnp.sum(weights_GxM), 1.0)
  ce_DxGxM = optax.softmax_cross_entropy_with_integer_labels(logits_DxGxMxC, targets_GxM[None])
  ce_D = jnp.sum(ce_DxGxM * weights_GxM[None], axis=(1, 2)) / total
  loss = jnp.mean(ce_D)
  correct_GxM = top_class(logits_DxGxMxC[-1]) == targets_GxM
  metrics = dict(ce=ce_D[-1], acc=jnp.sum(correct_GxM * weights_GxM) / total)
  if 'dropped' in batch:
    metrics['dropped'] = jnp.sum(batch['dropped'])
  return loss, metrics


def eval_sums(params: Any, batch: dict[str, jax.Array], *, model: nn.Module,
               depth: int) -> dict[str, jax.Array]:
  """Sums over one eval batch at every depth: CE, correct predictions, predicted positions."""
  _, out = unroll(model, {'params': params}, batch['tokens'], depth, positions_GxM=batch['positions'])
  logits_DxGxMxC = out['logits']
  weights_GxM = batch['weights']
  ce_DxGxM = optax.softmax_cross_entropy_with_integer_labels(logits_DxGxMxC, batch['targets'][None])
  correct_DxGxM = top_class(logits_DxGxMxC) == batch['targets'][None]
  return dict(ce=jnp.sum(ce_DxGxM * weights_GxM[None], axis=(1, 2)),
              correct=jnp.sum(correct_DxGxM * weights_GxM[None], axis=(1, 2)),
              count=jnp.sum(weights_GxM))


def eval_set(eval_tokens_NxL: np.ndarray, data_cfg: Any, batch_size: int, vocab_size: int,
             special_ids: Any, group: int = 1) -> list[Batch]:
  """The fixed, seeded eval batches in readout form, `group` sequences a row (no masked position dropped)."""
  batches = mlm_batches.eval_batches(eval_tokens_NxL, data_cfg, batch_size, vocab_size, special_ids)
  if group < 1 or batch_size % group:
    raise ConfigError(f'the readout group ({group} sequences) must divide eval.batch_size={batch_size}')
  seq_len = eval_tokens_NxL.shape[1]
  most = max(int((b['weights'] > 0).reshape(-1, group * seq_len).sum(1).max()) for b in batches)
  return [to_positions(b, max(most, 1), group) for b in batches]


def unigram_baseline(batches: list[Batch]) -> dict[str, float]:
  """What a model that ignores the context scores on an eval set: `accuracy` always predicting the most
  frequent target, `mlm_loss` predicting the targets' own frequencies (the entropy of their distribution)."""
  targets = np.concatenate([b['targets'][b['weights'] > 0] for b in batches])
  if not targets.size:
    raise InputError('the MLM eval set has no masked position')
  counts = np.bincount(targets).astype(np.float64)
  freq = counts[counts > 0] / targets.size
  return dict(accuracy=float(freq.max()), mlm_loss=float(-(freq * np.log(freq)).sum()))


class MaskedLMScorer:
  """Masked accuracy, MLM loss and perplexity of params on a fixed eval set at the trained depth, and the
  loss and accuracy after every step up to `eval_depth` (>= depth: depth at test time)."""

  def __init__(self, model: nn.Module, depth: int, batches: list[Batch], mesh: jax.sharding.Mesh,
               eval_depth: int = 0):
    if not batches:
      raise InputError('the MLM eval set is empty')
    self.depth = depth
    self.eval_depth = max(depth, eval_depth)
    self.mesh = mesh
    self.batches = batches
    self._fn = jax.jit(functools.partial(eval_sums, model=model, depth=self.eval_depth),
                       out_shardings=sharding.replicated(mesh))

  def __call__(self, params: Any) -> dict[str, Any]:
    totals = None
    for batch in self.batches:
      arrays = sharding.put_batch({k: batch[k] for k in ('tokens', 'positions', 'targets', 'weights')},
                                  self.mesh)
      sums = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(self._fn(params, arrays)))
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    count = max(float(totals['count']), 1.0)
    loss_D = totals['ce'] / count
    acc_D = totals['correct'] / count
    trained = self.depth - 1
    return dict(mlm_loss=float(loss_D[trained]), masked_accuracy=float(acc_D[trained]),
                perplexity=float(math.exp(min(loss_D[trained], 700.0))), eval_tokens=int(count),
                loss_by_depth=loss_D.tolist(), accuracy_by_depth=acc_D.tolist())


def make_objective(config: ml_collections.ConfigDict, model: nn.Module, data: mlm_batches.MLMData,
                   scan_unroll: int | bool = 1) -> loop.Objective:
  """MLM batches in readout form (slots per group of sequences) and the deep-supervision loss."""
  group = readout_group(config, int(config.train.batch_size))
  slots = max_predictions(config, group)
  loss_fn = functools.partial(mlm_loss, model=model, depth=int(config.model.depth),
                              deep_supervision=bool(config.train.deep_supervision),
                              detach=bool(config.train.detach), scan_unroll=scan_unroll)

  def train_batch(step: int, batch_size: int, process_index: int, process_count: int) -> Batch:
    batch = mlm_batches.train_batch(data.train_tokens_NxL, config.data, step, batch_size, data.vocab_size,
                                    data.special_ids, process_index, process_count)
    return to_positions(batch, slots, group)

  return loop.Objective(loss_fn=loss_fn, train_batch=train_batch,
                        example_inputs=data.train_tokens_NxL[:2].astype(np.int32), progress_metrics=('loss', 'acc'))


def readout_group(config: ml_collections.ConfigDict, global_batch: int, what: str = 'train.batch_size') -> int:
  """Sequences per readout row: config.train.readout_group, or each device's whole batch when it is 0."""
  per_device = global_batch // jax.device_count()
  asked = int(config.train.readout_group)
  if asked < 0 or (asked and per_device % asked):
    raise ConfigError(f'train.readout_group={asked} must divide the per-device batch of {per_device} sequences '
                     f'({what}={global_batch} over {jax.device_count()} devices; 0 = all of them)')
  return asked or max(per_device, 1)


def max_predictions(config: ml_collections.ConfigDict, group: int) -> int:
  """Readout slots per row of `group` sequences: config.train.max_predictions, or the automatic bound at 0."""
  tokens = group * int(config.data.seq_len)
  asked = int(config.train.max_predictions)
  if asked < 0 or asked > tokens:
    raise ConfigError(f'train.max_predictions={asked} must be in [0, readout_group x data.seq_len = {tokens}] '
                     '(0 = automatic)')
  return asked or auto_max_predictions(int(config.data.seq_len), float(config.data.mask_prob), group)


def analytic_train_flops(config: ml_collections.ConfigDict, vocab_size: int) -> float:
  """The analytic estimate (models/flops.py) of one train step's FLOPs at config.train.batch_size."""
  group = readout_group(config, int(config.train.batch_size))
  estimate = models.estimate(config.model, vocab_size=vocab_size, num_classes=vocab_size,
                             seq_len=int(config.data.seq_len), readout_positions=max_predictions(config, group) / group)
  per_example = estimate.train(int(config.model.depth), bool(config.train.deep_supervision))
  return float(per_example) * int(config.train.batch_size)


class MaskedLMEval(evaluators.Evaluator):
  """The `masked_lm` evaluator: MaskedLMScorer on the run's fixed eval masks, or (--mode=eval) on the text of
  `data.eval_files`, packed with the study's tokenizer as its own eval text was."""
  headline = 'masked_accuracy'

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    tokens = None if self.file is None else self.context.eval_tokens_from_files(self.file, self.config.data)
    self.eval_sequences = len(tokens) if tokens is not None else len(self.context.data(self.config.data).eval_tokens_NxL)
    self.batches = self.context.eval_batches(self.config, tokens, self.file or '')
    self.scorer = self.context.scorer(self.config, self.model, self.batches)

  def __call__(self, params: Any) -> dict[str, Any]:
    return self.scorer(params)

  def final_line(self, figures: dict[str, Any]) -> str:
    return (f'masked_accuracy={figures["masked_accuracy"]:.4f} mlm_loss={figures["mlm_loss"]:.4f} '
            f'perplexity={figures["perplexity"]:.2f}')
