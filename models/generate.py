"""Jitted greedy generation with a `models.decoder.Decoder` and its KV cache.

The prompt is prefilled once, then one token per example is decoded per step in
a `jax.lax.while_loop` that stops as soon as every example has produced
`end_id` (or after `max_new_tokens`), so short answers cost short loops.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp

from models.decoder import Decoder

Pytree = Any


def next_digit_pos(tokens_B: jax.Array, prev_digit_pos_B: jax.Array,
                   digit_ids: tuple[int, ...], offset: jax.Array | int = 0) -> jax.Array:
  """Abacus position of tokens_B: previous position + 1 for a digit (offset + 1 after a non-digit), else 0."""
  if not digit_ids:
    return jnp.zeros_like(prev_digit_pos_B)
  is_digit_B = jnp.isin(tokens_B, jnp.asarray(digit_ids, tokens_B.dtype))
  return jnp.where(is_digit_B, jnp.maximum(prev_digit_pos_B, offset) + 1, 0).astype(prev_digit_pos_B.dtype)


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'end_id', 'digit_ids',
                                             'loops', 'return_logits'))
def greedy_generate(model: Decoder, params: Pytree, prompt_BxP: jax.Array,
                    prompt_mask_BxP: jax.Array, *, max_new_tokens: int, end_id: int,
                    digit_ids: tuple[int, ...] = (), prompt_digit_pos_BxP: jax.Array | None = None,
                    loops: int | None = None, digit_offset: jax.Array | int = 0,
                    return_logits: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  """int32[B, max_new_tokens]: argmax continuation of each LEFT-padded prompt.

  Each row holds the generated tokens up to and including its first `end_id`;
  every position after it is `end_id` (also where the loop stopped early because
  all rows had ended), so a row without `end_id` ran the full `max_new_tokens`.

  Args:
    model: a Decoder (static: hashed, as its config).
    params: its params (`variables['params']`) or the whole variables dict.
    prompt_BxP: int prompt tokens, left-padded so that the last column is real.
    prompt_mask_BxP: True at real prompt tokens.
    max_new_tokens: tokens to generate at most (static, >= 1).
    end_id: the end-of-answer token (static).
    digit_ids: token ids of the digits (static): the Abacus position of a generated
      token is the previous token's + 1 if it is a digit, else 0.
    prompt_digit_pos_BxP: Abacus positions of the prompt (needed when the model uses
      Abacus); its last column starts the count for the first generated token.
    loops: core applications of a looped model (static; default its config.loops).
    digit_offset: Abacus offset of the generated numbers: a number's first digit gets
      position digit_offset + 1 (traced, so any offset reuses one compilation). Pass
      prompt_digit_pos_BxP with the same offset added to its digits.
    return_logits: also return float32[B, max_new_tokens, V], the logits each token was
      chosen from (static); rows that had ended keep being computed until all have,
      and steps after the loop stopped are 0.
  """
  if not isinstance(model, Decoder):
    raise TypeError(f'greedy_generate needs a models.decoder.Decoder, got {type(model).__name__}')
  if max_new_tokens < 1:
    raise ValueError(f'greedy_generate: max_new_tokens={max_new_tokens} must be >= 1')
  variables = params if 'params' in params else {'params': params}
  batch, length = prompt_BxP.shape
  logits_BxV, cache = model.apply(variables, prompt_BxP, prompt_mask_BxP,
                                  max_len=length + max_new_tokens,
                                  digit_pos_BxP=prompt_digit_pos_BxP, loops=loops,
                                  method=Decoder.prefill)
  prev_pos_B = (jnp.zeros((batch,), jnp.int32) if prompt_digit_pos_BxP is None
                else prompt_digit_pos_BxP[:, -1].astype(jnp.int32))
  token_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  out_BxN = jnp.full((batch, max_new_tokens), end_id, jnp.int32).at[:, 0].set(token_B)
  if return_logits:
    steps_BxNxV = jnp.zeros((batch, max_new_tokens) + logits_BxV.shape[1:], jnp.float32)
    steps_BxNxV = steps_BxNxV.at[:, 0].set(logits_BxV)
  else:
    steps_BxNxV = None
  init = (jnp.int32(1), token_B, next_digit_pos(token_B, prev_pos_B, digit_ids, digit_offset), token_B == end_id,
          out_BxN, steps_BxNxV, cache)

  def cond(carry):
    step, _, _, done_B = carry[:4]
    return (step < max_new_tokens) & ~jnp.all(done_B)

  def body(carry):
    step, token_B, digit_pos_B, done_B, out_BxN, steps_BxNxV, cache = carry
    # The token produced at step-1 sits at slot P + step - 1.
    logits_BxV, cache = model.apply(variables, token_B, cache, length + step - 1,
                                    digit_pos_B=digit_pos_B, method=Decoder.decode)
    token_B = jnp.where(done_B, end_id, jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32))
    out_BxN = jax.lax.dynamic_update_slice_in_dim(out_BxN, token_B[:, None], step, axis=1)
    if return_logits:
      steps_BxNxV = jax.lax.dynamic_update_slice_in_dim(steps_BxNxV, logits_BxV[:, None], step,
                                                        axis=1)
    return (step + 1, token_B, next_digit_pos(token_B, digit_pos_B, digit_ids, digit_offset),
            done_B | (token_B == end_id), out_BxN, steps_BxNxV, cache)

  final = jax.lax.while_loop(cond, body, init)
  return (final[4], final[5]) if return_logits else final[4]
