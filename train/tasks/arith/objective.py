"""Next-token loss on the answer (and chain-of-thought) tokens, and its teacher-forced scores.

Batches are those of data/arith_batches.py: `tokens` int32[B, L], `loss_mask` float32[B, L] (1 at the
target tokens: chain of thought, answer, <end>; the prompt is masked), `digit_pos` int32[B, L]. The
model reads tokens[:, :-1] and predicts tokens[:, 1:].

Teacher-forced exact match (every target token is the argmax given the true prefix) is what greedy
decoding gets right: greedy decoding writes exactly the target when, and only when, each of its
tokens is the argmax after the true prefix. So validation, which picks the checkpoint, needs one
forward pass instead of a decode loop; the reported accuracies come from generation.
"""
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import models
from data import arith_batches
from models import decoder as decoder_lib
from models.decoder import Decoder
from train import evaluators
from train import loop
from train.errors import ConfigError

Batch = dict[str, Any]


def loops_arg(model: Decoder, loops: int | None = None) -> dict[str, Any]:
  return decoder_lib.loops_arg(model.config, loops)


def token_scores(params: Any, batch: Batch, *, model: Decoder, loops: int | None = None,
                 scan_unroll: int | bool = 1, active_loops: jax.Array | None = None) -> dict[str, Any]:
  """Summed next-token loss, correct tokens, target tokens, exact rows and rows of one batch; `aux`: what the
  model sowed (models/aux.py)."""
  tokens_BxL = batch['tokens']
  extra = {} if active_loops is None else {'active_loops': active_loops}
  logits_BxTxV, aux = models.apply_with_aux(model, {'params': params}, tokens_BxL[:, :-1],
                                            digit_pos_BxL=batch['digit_pos'][:, :-1], scan_unroll=scan_unroll,
                                            **loops_arg(model, loops), **extra)
  targets_BxT = tokens_BxL[:, 1:]
  weights_BxT = batch['loss_mask'][:, 1:]
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV)
  nll_BxT = -jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  correct_BxT = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(jnp.float32)
  scored_B = jnp.sum(weights_BxT, axis=1) > 0
  exact_B = jnp.all((correct_BxT > 0) | (weights_BxT == 0), axis=1) & scored_B
  return dict(nll=jnp.sum(nll_BxT * weights_BxT), correct=jnp.sum(correct_BxT * weights_BxT),
              tokens=jnp.sum(weights_BxT), exact=jnp.sum(exact_B), rows=jnp.sum(scored_B), aux=aux)


RUNNING_SUM_SCALE = 100.0  # The probe regresses running sum / this (4x4 products' sums reach about 400).


def running_sum_mse(aux: Any, batch: Batch) -> jax.Array:
  """Mean squared error of the model's probe against each answer digit's running sum (Bai et al. 2025), scaled
  by RUNNING_SUM_SCALE. The probe at position t reads the state that writes token t + 1."""
  probe_BxT = aux.probes['probe'][..., 0]
  target_BxT = batch['running_sum'][:, 1:] / RUNNING_SUM_SCALE
  mask_BxT = batch['running_sum_mask'][:, 1:]
  return jnp.sum(jnp.square(probe_BxT - target_BxT) * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)


def next_token_loss(params: Any, batch: Batch, rng: jax.Array, *, model: Decoder, random_loops: int = 0,
                    scan_unroll: int | bool = 1, running_sum_weight: float = 0.0
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token cross-entropy over the target tokens, with token accuracy and exact rows.

  With `random_loops` > 0 (a looped model), each batch's loops are drawn uniformly in 1..random_loops
  from the step's rng (Huginn-style, so the core learns to improve its state at any depth); the step
  then computes random_loops applications, the later ones masked. With `running_sum_weight` > 0, that
  weight times `running_sum_mse` joins the loss (Bai et al. 2025's auxiliary loss; logged as running_sum_mse).
  """
  active = jax.random.randint(rng, (), 1, random_loops + 1) if random_loops else None
  s = token_scores(params, batch, model=model, scan_unroll=scan_unroll, active_loops=active,
                   loops=random_loops or None)
  loss = s['nll'] / jnp.maximum(s['tokens'], 1.0)
  metrics = dict(loss=loss, token_acc=s['correct'] / jnp.maximum(s['tokens'], 1.0),
                 exact=s['exact'] / jnp.maximum(s['rows'], 1.0), **s['aux'].metrics())
  total = s['aux'].add_to(loss)
  if running_sum_weight:
    metrics['running_sum_mse'] = running_sum_mse(s['aux'], batch)
    total = total + running_sum_weight * metrics['running_sum_mse']
  return total, metrics


def data_spec(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The data fields of arith_batches (config.data), with the sequence length resolved."""
  spec = {k: config.data.get(k, arith_batches.DEFAULTS[k]) for k in arith_batches.BATCH_FIELDS}
  if int(spec['seq_len']) == 0:  # Auto: the longest problem of these settings, and no more.
    spec['seq_len'] = arith_batches.required_seq_len(dict(spec, seq_len=1))
  return spec


def make_objective(config: ml_collections.ConfigDict, model: Decoder, scan_unroll: int | bool = 1) -> loop.Objective:
  """Training batches drawn on the fly (a pure function of data.seed and the step) and the loss."""
  spec = data_spec(config)
  seed = int(config.data.seed)

  running_sum_weight = float(config.train.get('running_sum_weight', 0.0))

  def train_batch(step: int, batch_size: int, process_index: int, process_count: int) -> Batch:
    return arith_batches.train_batch(spec, seed, step, batch_size // process_count, process_index,
                                     running_sums=running_sum_weight > 0)

  example = train_batch(0, 2, 0, 1)
  random_loops = int(config.train.random_loops)
  if random_loops and not model.config.looped:
    raise ConfigError(f"train.random_loops={random_loops} needs a looped model (model.name='looped')")
  if random_loops < 0:
    raise ConfigError(f'train.random_loops={random_loops} must be >= 0 (0: always model.loops)')
  checked = arith_batches.check_config(spec)
  resets = bool(config.train.get('reset_on_removal', False)) and checked.internalize_every > 0
  return loop.Objective(
      loss_fn=functools.partial(next_token_loss, model=model, random_loops=random_loops, scan_unroll=scan_unroll,
                                running_sum_weight=running_sum_weight),
      train_batch=train_batch,
      example_inputs=dict(tokens_BxL=example['tokens'][:, :-1], digit_pos_BxL=example['digit_pos'][:, :-1]),
      progress_metrics=('loss', 'token_acc', 'exact'),
      reset_optimizer_at=checked.removal_changes_at if resets else None)


class TeacherForced:
  """Token accuracy, loss and exact match under teacher forcing on a fixed set of problems.

  `equals_row` (data.abacus_equals_row) has no default: every scorer must say which Abacus rows the model
  was trained with.
  """

  def __init__(self, model: Decoder, problems: list, fmt: str, seq_len: int, batch_size: int,
               *, equals_row: bool, abacus_offset: int = 0, removed: int = 0):
    self.batches = []
    for i in range(0, len(problems), batch_size):
      chunk = list(problems[i:i + batch_size])
      batch = arith_batches.encode_examples(chunk + [chunk[-1]] * (batch_size - len(chunk)), fmt, seq_len,
                                            equals_row, removed)
      if len(chunk) < batch_size:  # Repeated rows fill the batch and score nothing.
        batch['loss_mask'][len(chunk):] = 0.0
      batch['digit_pos'] = np.where(batch['digit_pos'] > 0, batch['digit_pos'] + abacus_offset, 0).astype(np.int32)
      self.batches.append({k: batch[k] for k in ('tokens', 'loss_mask', 'digit_pos')})
    self._score: Callable[..., Any] = jax.jit(functools.partial(token_scores, model=model),
                                              static_argnames=('loops',))

  def __call__(self, params: Any, loops: int | None = None) -> dict[str, float]:
    totals = None
    for batch in self.batches:
      s = self._score(params, batch, loops=loops)
      s.pop('aux')
      totals = s if totals is None else jax.tree.map(jnp.add, totals, s)
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}
    return dict(token_acc=totals['correct'] / max(totals['tokens'], 1.0),
                loss=totals['nll'] / max(totals['tokens'], 1.0),
                exact_tf=totals['exact'] / max(totals['rows'], 1.0))




class TeacherForcedEval(evaluators.Evaluator):
  """The `teacher_forced` evaluator: TeacherForced on eval.num_val validation problems of each length pair;
  its `score` (exact match, ties broken by the lower loss) picks the best checkpoint. An internalising run
  (data.internalize_every) is scored on the answer alone, with no chain of thought: what it ends up writing."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    spec = data_spec(self.config)
    self.scorer = TeacherForced(self.model, arith_batches.eval_set(spec, 'val', int(self.config.eval.num_val)),
                                str(spec['format']), int(spec['seq_len']), int(self.config.eval.batch_size),
                                equals_row=bool(spec['abacus_equals_row']),
                                removed=arith_batches.check_config(spec).eval_removed)

  def __call__(self, params: Any) -> dict[str, Any]:
    scores = self.scorer(params)
    # Exact match ranks; among equal ones (a small set saturates) the lower loss wins.
    return dict(scores, score=scores['exact_tf'] - 1e-3 * min(scores['loss'], 1.0))
