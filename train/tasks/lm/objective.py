"""Next-token loss on every token of packed text, and the `lm` evaluator: loss per token, perplexity, bits per byte.

A batch is {'tokens': int32[B, L + 1]} (data/lm_text.py): the model reads tokens[:, :-1] and predicts
tokens[:, 1:]. Bits per byte = the summed loss in bits over the UTF-8 bytes the predicted tokens stand for
(data/bpe.py token_bytes: the end-of-text token counts one byte), a figure that compares models with
different tokenizers.
"""
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import models
from models import decoder as decoder_lib
from data import lm_batches
from data import lm_text
from train import evaluators
from train import loop
from train import sharding
from train.errors import ConfigError

Batch = dict[str, Any]


def _logits(params: Any, tokens_BxL: jax.Array, *, model: Any, loops: int | None = None,
            scan_unroll: int | bool = 1, active_loops: jax.Array | None = None,
            dropout_rng: jax.Array | None = None) -> tuple[jax.Array, models.Aux]:
  extra = {} if active_loops is None else {'active_loops': active_loops}
  if dropout_rng is not None and float(getattr(model.config, 'dropout', 0.0)) > 0:
    extra['rngs'] = {'dropout': dropout_rng}
  return models.apply_with_aux(model, {'params': params}, tokens_BxL, scan_unroll=scan_unroll,
                               **decoder_lib.loops_arg(model.config, loops), **extra)


def next_token_loss(params: Any, batch: Batch, rng: jax.Array, *, model: Any, z_loss: float = 0.0,
                    random_loops: int = 0, scan_unroll: int | bool = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean cross-entropy of every next token; `z_loss` x mean(logsumexp(logits)^2) keeps the logits near zero
  (PaLM); a looped model may draw its loops per batch in 1..random_loops (as arithmetic does)."""
  active = jax.random.randint(rng, (), 1, random_loops + 1) if random_loops else None
  dropout_rng = jax.random.fold_in(rng, 1)
  tokens_BxW = batch['tokens']
  logits_BxLxV, aux = _logits(params, tokens_BxW[:, :-1], model=model, scan_unroll=scan_unroll,
                              active_loops=active, loops=random_loops or None, dropout_rng=dropout_rng)
  logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, tokens_BxW[:, 1:]))
  loss = ce
  metrics = dict(ce=ce, **aux.metrics())
  if z_loss > 0:
    z = jnp.mean(jax.nn.logsumexp(logits_BxLxV, axis=-1) ** 2)
    loss = loss + z_loss * z
    metrics['z'] = z
  return aux.add_to(loss), metrics


def make_objective(config: ml_collections.ConfigDict, model: Any, data: lm_batches.LMData,
                   scan_unroll: int | bool = 1) -> loop.Objective:
  """Packed training rows drawn per step (a pure function of data.seed and the step) and the loss."""
  source = config.data.files or f'HF {config.data.hf_name}'
  lm_text.check_rows(data.train_rows_NxW, int(config.train.batch_size), f'the training text of {source}')
  random_loops = int(config.train.random_loops)
  if random_loops and not getattr(model.config, 'looped', False):
    raise ConfigError(f"train.random_loops={random_loops} needs a looped model (model.name='looped')")
  seed = int(config.data.seed)

  def train_batch(step: int, batch_size: int, process_index: int, process_count: int) -> Batch:
    return lm_text.train_batch(data.train_rows_NxW, seed, step, batch_size, process_index, process_count)

  return loop.Objective(
      loss_fn=functools.partial(next_token_loss, model=model, z_loss=float(config.train.z_loss),
                                random_loops=random_loops, scan_unroll=scan_unroll),
      train_batch=train_batch, example_inputs=data.train_rows_NxW[:2, :-1].astype(np.int32),
      progress_metrics=('loss',))


def _sums(params: Any, tokens_BxW: jax.Array, weights_B: jax.Array, *, model: Any, loops: int | None) -> dict:
  """Summed loss (nats) and correct next tokens over the rows with weight 1, and their token count."""
  logits_BxLxV, _ = _logits(params, tokens_BxW[:, :-1], model=model, loops=loops)
  nll_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV.astype(jnp.float32), tokens_BxW[:, 1:])
  correct_BxL = jnp.argmax(logits_BxLxV, -1) == tokens_BxW[:, 1:]
  w_Bx1 = weights_B[:, None]
  return dict(nll=jnp.sum(nll_BxL * w_Bx1), correct=jnp.sum(correct_BxL * w_Bx1),
              tokens=jnp.sum(jnp.broadcast_to(w_Bx1, nll_BxL.shape)))


class LMEval(evaluators.Evaluator):
  """The `lm` evaluator: loss per token, perplexity, next-token accuracy and bits per byte of the validation
  rows (eval.max_rows of them, a seeded sample; 0 = all) or, with --mode=eval, of a text file; for a looped
  model, bits per byte at every test-time number of loops up to eval.loop_multiplier x the trained one."""
  options = dict(loops_curve=False)  # Also score each test-time number of loops (looped models).
  headline = 'bits_per_byte'
  lower_is_better = True
  file_help = 'English text: one document a line (data.documents), or .jsonl with a "text" field'

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    data = self.context.data(self.config.data)
    self.data = data
    if self.file is not None:
      self.rows, byte_counts = lm_batches.file_rows(self.file, self.config.data, data)
    else:
      self.rows = lm_text.eval_rows(data.val_rows_NxW, int(self.config.eval.max_rows), int(self.config.eval.seed))
      byte_counts = data.val_byte_counts
    self.baselines = lm_batches.baselines(data, self.rows, byte_counts)
    self.bytes = float(lm_text.bytes_of_targets(self.rows, data.token_bytes_V).sum())
    self.mesh = sharding.make_mesh()
    self.batch_size = int(self.config.eval.batch_size)
    sharding.check_batch_size(self.batch_size, self.mesh, 'eval.batch_size')
    self.sums = self.context.memo(('lm_sums', self.model), lambda: jax.jit(
        functools.partial(_sums, model=self.model), static_argnames=('loops',),
        out_shardings=sharding.replicated(self.mesh)))

  def _score(self, params: Any, loops: int | None) -> dict[str, float]:
    totals = dict(nll=0.0, correct=0.0, tokens=0.0)
    for lo in range(0, len(self.rows), self.batch_size):
      padded, valid = sharding.pad_to_multiple({'tokens': self.rows[lo:lo + self.batch_size]}, self.batch_size)
      arrays = sharding.put_batch(dict(padded, weights=valid), self.mesh)
      sums = jax.device_get(self.sums(params, arrays['tokens'], arrays['weights'], loops=loops))
      for k in totals:
        totals[k] += float(sums[k])
    loss = totals['nll'] / max(totals['tokens'], 1.0)
    bpb = totals['nll'] / math.log(2) / max(self.bytes, 1.0)
    return dict(loss=loss, perplexity=math.exp(min(loss, 700.0)), accuracy=totals['correct'] / max(totals['tokens'], 1),
                bits_per_byte=bpb, tokens=int(totals['tokens']), bytes=int(self.bytes))

  def __call__(self, params: Any) -> dict[str, Any]:
    trained = int(self.model.config.loops) if getattr(self.model.config, 'looped', False) else None
    figures = dict(self._score(params, trained), **self.baselines)
    if trained is not None and self.options['loops_curve']:
      top = trained * int(self.config.eval.loop_multiplier)
      tries = sorted({1, top, trained} | {2 ** i for i in range(top.bit_length()) if 2 ** i <= top})
      figures['bits_per_byte_by_loops'] = {str(k): (figures['bits_per_byte'] if k == trained
                                                    else self._score(params, k)['bits_per_byte']) for k in tries}
    return figures

  def table(self, figures: dict[str, Any]) -> str:
    rows = [('model', figures['bits_per_byte'], figures['loss'], figures['perplexity']),
            ('unigram (training text)', figures['unigram_bits_per_byte'], figures['unigram_loss'],
             math.exp(figures['unigram_loss'])),
            ('bytes, order 0 (training text)', figures['byte_bits_per_byte'], float('nan'), float('nan'))]
    lines = [f'{self.file}: {figures["tokens"]:,} tokens scored ({figures["bytes"]:,} bytes)',
             '| scored by | bits per byte | loss per token | perplexity |', '|---|---|---|---|']
    lines += [f'| {name} | {bpb:.4f} | {loss:.4f} | {ppl:.2f} |' for name, bpb, loss, ppl in rows]
    return '\n'.join(lines).replace('| nan | nan |', '| - | - |')

  def final_line(self, figures: dict[str, Any]) -> str:
    return (f'bits_per_byte={figures["bits_per_byte"]:.4f} perplexity={figures["perplexity"]:.3f} '
            f'tokens={figures["tokens"]}')
