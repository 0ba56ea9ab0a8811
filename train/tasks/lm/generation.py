"""Writing text with a trained language model: prompts in, continuations out (models/generate.py underneath:
batched, jitted, with the KV cache; greedy or sampled with a seed), and a chat that keeps the conversation.

A prompt longer than the model's context (data.seq_len less the tokens to write) keeps its last tokens,
and says so. Generation stops at the end token (end-of-text; in a chat, the end of the assistant's turn),
after `max_new_tokens`, or at the first stop string (the text is cut there).
"""
import dataclasses
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer

from data import bpe
from models import generate as generate_lib
from train.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Settings:
  """config.generate, checked."""
  max_new_tokens: int
  sampling: generate_lib.Sampling
  seed: int
  stop: tuple[str, ...]

  @classmethod
  def from_config(cls, gen: Any) -> 'Settings':
    if int(gen.max_new_tokens) < 1 or int(gen.num_samples) < 1:
      raise ConfigError(f'generate.max_new_tokens={gen.max_new_tokens} and generate.num_samples={gen.num_samples} '
                        'must be >= 1')
    stop = tuple(s.replace('\\n', '\n').replace('\\t', '\t') for s in str(gen.stop).split('|') if s)
    try:
      sampling = generate_lib.Sampling(float(gen.temperature), int(gen.top_k), float(gen.top_p))
    except ValueError as e:
      raise ConfigError(f'generate.temperature / top_k / top_p: {e}') from None
    return cls(int(gen.max_new_tokens), sampling, int(gen.seed), stop)


def complete(model: Any, params: Any, tokenizer: Tokenizer, prompts: list[list[int]], settings: Settings, *,
             end_id: int, pad_id: int, step_seed: int = 0, loops: int | None = None, width: int = 0) -> list[str]:
  """The continuation of each prompt (token ids), decoded, cut at the end token and the first stop string
  (prompts left-padded to `width` tokens at least: fewer shapes to compile)."""
  width = max(width, max(len(p) for p in prompts))
  tokens_BxP = np.full((len(prompts), width), pad_id, np.int32)
  for i, p in enumerate(prompts):
    tokens_BxP[i, width - len(p):] = p
  mask_BxP = np.arange(width)[None] >= width - np.array([len(p) for p in prompts])[:, None]
  rng = jax.random.fold_in(jax.random.PRNGKey(settings.seed), step_seed)
  stops = stop_sequences(tokenizer, settings.stop)
  out_BxN = generate_lib.generate(model, params, jnp.asarray(tokens_BxP), jnp.asarray(mask_BxP),
                                  max_new_tokens=settings.max_new_tokens, end_id=end_id, sampling=settings.sampling,
                                  rng=rng if settings.sampling.temperature > 0 else None,
                                  prefill_kwargs=(('loops', loops),) if loops else (),
                                  stop_sequences=stops)
  texts = []
  for row in np.asarray(out_BxN):
    ends = np.flatnonzero(row == end_id)
    ids = cut_at_stops([int(t) for t in (row[:ends[0]] if len(ends) else row)], stops)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for stop in settings.stop:
      text = text.split(stop, 1)[0]
    texts.append(text)
  return texts


def cut_at_stops(ids: list[int], stops: tuple[tuple[int, ...], ...]) -> list[int]:
  """`ids` before the first stop sequence in them (special-token stops vanish from decoded text, so the cut is
  made on the tokens too)."""
  for end in range(1, len(ids) + 1):
    for seq in stops:
      if end >= len(seq) and tuple(ids[end - len(seq):end]) == seq:
        return ids[:end - len(seq)]
  return ids


def stop_sequences(tokenizer: Tokenizer, stops: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
  """Token sequences of each stop string as it is usually written (alone, after a space, after a newline):
  generation of a row ends once it has written one. The text is still cut at the strings themselves, so a stop
  string reached through other tokens only costs the steps to max_new_tokens."""
  out = set()
  for stop in stops:
    for prefix in ('', ' ', '\n'):
      ids = tokenizer.encode(prefix + stop, add_special_tokens=False).ids
      if prefix:
        ids = ids[len(tokenizer.encode(prefix, add_special_tokens=False).ids):] or ids
      if ids and tokenizer.decode(ids, skip_special_tokens=False).strip() == stop.strip():
        out.add(tuple(ids))
  return tuple(sorted(out))


def prompt_limit(context: int, max_new_tokens: int) -> int:
  """Prompt tokens kept: what leaves room for the answer in the context the model was trained on, but at least
  half of that context (the answer then runs past it)."""
  return max(context - max_new_tokens, context // 2, 1)


def fit(ids: list[int], limit: int) -> tuple[list[int], bool]:
  """The last `limit` tokens of `ids`, and whether any were dropped."""
  return (ids[-limit:], True) if len(ids) > limit else (ids, False)


# The chat format chat_prompt writes, as a Jinja template for transformers (an export's tokenizer_config.json).
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                   "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                   "{% endif %}")


def chat_prompt(tokenizer: Tokenizer, turns: list[tuple[str, str]], limit: int, system: str = ''
                ) -> tuple[list[int], int]:
  """The ChatML conversation (after the `system` message, if any, always kept), ready for the assistant's next
  turn, in at most `limit` tokens: the oldest turns are dropped (and the last user turn's start, if it alone is
  longer). Returns (ids, turns dropped)."""
  def encode(turns_: list[tuple[str, str]]) -> list[int]:
    turns_ = ([('system', system)] if system else []) + list(turns_)
    text = ''.join(f'{bpe.IM_START}{role}\n{content}{bpe.IM_END}\n' for role, content in turns_)
    return tokenizer.encode(text + f'{bpe.IM_START}assistant\n', add_special_tokens=False).ids
  for dropped in range(len(turns)):
    ids = encode(turns[dropped:])
    if len(ids) <= limit:
      return ids, dropped
  return encode(turns[-1:])[-limit:], len(turns) - 1


def interactive(model: Any, params: Any, tokenizer: Tokenizer, settings: Settings, context: int, chat: bool,
                header: str, loops: int | None, stdin: TextIO, stdout: TextIO, system: str = '') -> None:
  """Reads lines from `stdin` until quit, exit or end of input; answers each (a chat keeps the conversation)."""
  special = bpe.specials(tokenizer)
  if hasattr(stdin, 'reconfigure'):  # Bytes that are not UTF-8 become U+FFFD instead of ending the session.
    stdin.reconfigure(errors='replace')
  if chat and not special.chat:
    raise ConfigError(f'generate.chat=True needs a tokenizer with {bpe.IM_START} and {bpe.IM_END}')
  limit = prompt_limit(context, settings.max_new_tokens)
  say = lambda *a: print(*a, file=stdout, flush=True)  # pylint: disable=unnecessary-lambda-assignment
  say(f'{header}. ' + ('Chat: the conversation so far is the context. ' if chat else 'Each line is a prompt. ')
      + 'quit, exit or Ctrl-D ends.')
  turns: list[tuple[str, str]] = []
  for number in range(1, 1_000_000):
    print('> ', end='', file=stdout, flush=True)
    line = stdin.readline()
    if not line or line.strip() in ('quit', 'exit'):
      say('')
      return
    text = line.rstrip('\n')
    if not text.strip():
      continue
    if chat:
      turns.append(('user', text))
      ids, dropped = chat_prompt(tokenizer, turns, limit, system)
      if dropped:
        turns = turns[dropped:]
        say(f'(the conversation is longer than the model\'s {context} tokens: its first {dropped} turn(s) are '
            'left out)')
    else:
      ids, cut = fit(tokenizer.encode(text, add_special_tokens=False).ids or [special.end_of_text], limit)
      if cut:
        say(f'(the prompt is longer than {limit} tokens: its start is left out)')
    end = special.im_end if chat else special.end_of_text
    (reply,) = complete(model, params, tokenizer, [ids], settings, end_id=end, pad_id=special.pad, step_seed=number,
                        loops=loops)
    if chat:
      turns.append(('assistant', reply))
    say(reply if chat else text + reply)
