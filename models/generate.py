"""Jitted generation, greedy or sampled, with any model that offers `prefill` and `decode` and a cache.

  logits_BxV, cache = model.prefill(prompt_BxP, mask_BxP, max_len=P + N, **prefill_kwargs)
  logits_BxV, cache = model.decode(token_B, cache, index)      # index: the cache slot of token_B

The prompt is prefilled once, then one token per example is decoded per step in a
`jax.lax.while_loop` that stops as soon as every example has produced `end_id` (or after
`max_new_tokens`), so short answers cost short loops. Models with Abacus digit positions
(models/decoder.py) also take `digit_pos`: pass `DigitPositions` and the prompt's positions.
"""
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

Pytree = Any


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is chosen: argmax at temperature 0, else a draw from the tempered distribution,
  cut to the top_k most likely tokens (0: all) and to the smallest set holding top_p of the probability."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f'sampling needs temperature >= 0, top_k >= 0 and top_p in (0, 1]; got {self}')

  def choose(self, logits_BxV: jax.Array, rng: jax.Array | None) -> jax.Array:
    """int32[B]: the next token of each row."""
    if self.temperature == 0:
      return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = logits_BxV.astype(jnp.float32) / self.temperature
    if self.top_k:
      kth_Bx1 = jax.lax.top_k(logits_BxV, self.top_k)[0][:, -1:]
      logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
    if self.top_p < 1:
      sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
      mass_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
      # The smallest logit still inside the nucleus: the first at which the mass before it reaches top_p stops it.
      inside_BxV = (mass_BxV - jax.nn.softmax(sorted_BxV, axis=-1)) < self.top_p
      cutoff_Bx1 = jnp.min(jnp.where(inside_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
      logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
    return jax.random.categorical(rng, logits_BxV, axis=-1).astype(jnp.int32)


GREEDY = Sampling()


@dataclasses.dataclass(frozen=True)
class DigitPositions:
  """Abacus positions of generated tokens (models/decoder.py): the previous token's + 1 for a digit (the
  offset + 1 after a non-digit), else 0."""
  digit_ids: tuple[int, ...]

  def next(self, tokens_B: jax.Array, prev_B: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    if not self.digit_ids:
      return jnp.zeros_like(prev_B)
    is_digit_B = jnp.isin(tokens_B, jnp.asarray(self.digit_ids, tokens_B.dtype))
    return jnp.where(is_digit_B, jnp.maximum(prev_B, offset) + 1, 0).astype(prev_B.dtype)


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'end_id', 'sampling', 'digit_positions',
                                             'prefill_kwargs', 'return_logits', 'stop_sequences'))
def generate(model: Any, params: Pytree, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array, *,
             max_new_tokens: int, end_id: int, sampling: Sampling = GREEDY, rng: jax.Array | None = None,
             digit_positions: DigitPositions | None = None, prompt_digit_pos_BxP: jax.Array | None = None,
             digit_offset: jax.Array | int = 0, prefill_kwargs: tuple[tuple[str, Any], ...] = (),
             return_logits: bool = False, stop_sequences: tuple[tuple[int, ...], ...] = ()
             ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """int32[B, max_new_tokens]: the continuation of each LEFT-padded prompt.

  Each row holds the generated tokens up to and including its first `end_id`; every position after
  it is `end_id` (also where the loop stopped early because all rows had ended), so a row without
  `end_id` ran the full `max_new_tokens`.

  Args:
    model: a module with `prefill` and `decode` (static: hashed, as its config).
    params: its params (`variables['params']`) or the whole variables dict.
    prompt_BxP: int prompt tokens, left-padded so that the last column is real.
    prompt_mask_BxP: True at real prompt tokens.
    max_new_tokens: tokens to generate at most (static, >= 1).
    end_id: the end token (static).
    sampling: greedy (the default) or sampled (static); sampling needs `rng`, folded with each step.
    digit_positions: for a model with Abacus positions (static): how generated tokens get theirs.
    prompt_digit_pos_BxP: Abacus positions of the prompt; its last column starts the count.
    digit_offset: Abacus offset of the generated numbers: a number's first digit gets position
      digit_offset + 1 (traced, so any offset reuses one compilation).
    prefill_kwargs: static keywords of `prefill` as (name, value) pairs, e.g. (('loops', 8),).
    return_logits: also return float32[B, max_new_tokens, V], the logits each token was chosen from
      (static); rows that had ended keep being computed until all have, steps after the stop are 0.
    stop_sequences: token sequences that also end a row once it has generated one of them (static); the
      row keeps them, and `end_id` follows (callers cut the decoded text at their stop strings).
  """
  if not (callable(getattr(model, 'prefill', None)) and callable(getattr(model, 'decode', None))):
    raise TypeError(f'generate needs a model with prefill and decode (a KV or state cache); '
                    f'{type(model).__name__} has none')
  if max_new_tokens < 1:
    raise ValueError(f'generate: max_new_tokens={max_new_tokens} must be >= 1')
  if sampling.temperature > 0 and rng is None:
    raise ValueError('generate: sampling at temperature > 0 needs an rng')
  variables = params if 'params' in params else {'params': params}
  batch, length = prompt_BxP.shape
  cls = type(model)
  positions = {} if digit_positions is None else {'digit_pos_BxP': prompt_digit_pos_BxP}
  logits_BxV, cache = model.apply(variables, prompt_BxP, prompt_mask_BxP, max_len=length + max_new_tokens,
                                  **positions, **dict(prefill_kwargs), method=cls.prefill)
  step_rng = lambda step: None if rng is None else jax.random.fold_in(rng, step)  # pylint: disable=unnecessary-lambda-assignment
  token_B = sampling.choose(logits_BxV, step_rng(0))
  out_BxN = jnp.full((batch, max_new_tokens), end_id, jnp.int32).at[:, 0].set(token_B)
  steps_BxNxV = None
  if return_logits:
    steps_BxNxV = jnp.zeros((batch, max_new_tokens) + logits_BxV.shape[1:], jnp.float32).at[:, 0].set(logits_BxV)
  if digit_positions is None:
    digit_pos_B = jnp.zeros((batch,), jnp.int32)
  else:
    prev_B = (jnp.zeros((batch,), jnp.int32) if prompt_digit_pos_BxP is None
              else prompt_digit_pos_BxP[:, -1].astype(jnp.int32))
    digit_pos_B = digit_positions.next(token_B, prev_B, digit_offset)
  stop_sequences = tuple(seq for seq in stop_sequences if 0 < len(seq) <= max_new_tokens)  # Others never fit.
  done_B = token_B == end_id
  for seq in stop_sequences:
    if len(seq) == 1:  # The first token may already be a stop.
      done_B = done_B | (token_B == seq[0])
  init = (jnp.int32(1), token_B, digit_pos_B, done_B, out_BxN, steps_BxNxV, cache)

  def cond(carry):
    step, _, _, done_B = carry[:4]
    return (step < max_new_tokens) & ~jnp.all(done_B)

  def body(carry):
    step, token_B, digit_pos_B, done_B, out_BxN, steps_BxNxV, cache = carry
    # The token produced at step-1 sits at slot P + step - 1.
    fed = {} if digit_positions is None else {'digit_pos_B': digit_pos_B}
    logits_BxV, cache = model.apply(variables, token_B, cache, length + step - 1, **fed, method=cls.decode)
    token_B = jnp.where(done_B, end_id, sampling.choose(logits_BxV, step_rng(step)))
    out_BxN = jax.lax.dynamic_update_slice_in_dim(out_BxN, token_B[:, None], step, axis=1)
    if return_logits:
      steps_BxNxV = jax.lax.dynamic_update_slice_in_dim(steps_BxNxV, logits_BxV[:, None], step, axis=1)
    if digit_positions is not None:
      digit_pos_B = digit_positions.next(token_B, digit_pos_B, digit_offset)
    done_B = done_B | (token_B == end_id)
    for seq in stop_sequences:  # The row's last len(seq) tokens are seq.
      window_BxS = jax.lax.dynamic_slice_in_dim(out_BxN, jnp.maximum(step + 1 - len(seq), 0), len(seq), axis=1)
      done_B = done_B | (jnp.all(window_BxS == jnp.asarray(seq, jnp.int32), axis=1) & (step + 1 >= len(seq)))
    return (step + 1, token_B, digit_pos_B, done_B, out_BxN, steps_BxNxV, cache)

  final = jax.lax.while_loop(cond, body, init)
  return (final[4], final[5]) if return_logits else final[4]
