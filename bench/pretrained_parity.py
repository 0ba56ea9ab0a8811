r"""Our decoder on a pretrained checkpoint against HF transformers on the same file: logits, tokenizer ids,
greedy generation (issue: a real pretrained small model).

  python -m data.fetch smollm2                         # prints the GGUF's path (fetched once)
  python bench/pretrained_parity.py --checkpoint=PATH  # a .gguf (transformers dequantises it too) or an HF dir

Needs the bench extra (torch 2.13.0 CPU, transformers; transformers reads GGUF with the `gguf` package and
`accelerate`). Prints the largest absolute difference of the logits (float32) over a few prompts, whether the
tokenizers give the same ids, and whether greedy generation writes the same tokens.
"""
import pathlib
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from data import bpe  # pylint: disable=g-import-not-at-top,wrong-import-position
from data import fetch  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import generate as generate_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import pretrained  # pylint: disable=g-import-not-at-top,wrong-import-position

_CHECKPOINT = flags.DEFINE_string('checkpoint', '', 'A GGUF file or an HF directory ("" = the fetched SmolLM2).')
_NEW = flags.DEFINE_integer('new_tokens', 24, 'Greedy tokens generated per prompt.')

PROMPTS = ['The capital of France is', 'def fibonacci(n):', 'Natalia sold clips to 48 of her friends in April, and '
           'then she sold half as many clips in May. How many clips did Natalia sell altogether?',
           '<|im_start|>user\nWhat is 12 times 13?<|im_end|>\n<|im_start|>assistant\n',
           'Ünïcödé, emoji 🙂 and numbers 1234567 in one line.']


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import transformers  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  path = pathlib.Path(_CHECKPOINT.value or fetch.fetch('smollm2'))
  checkpoint = pretrained.load(path)
  model = models.build(checkpoint.model, vocab_size=checkpoint.vocab_size)
  tokenizer = bpe.load_file(path)
  if path.is_dir():
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
  else:
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                 dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
  hf_model.eval()
  print(f'{path}: {models.count_params(checkpoint.params):,} params; transformers {transformers.__version__}, '
        f'torch {torch.__version__}')
  forward = jax.jit(lambda p, t: model.apply({'params': p}, t))
  worst, same_ids, same_text = 0.0, 0, 0
  for prompt in PROMPTS:
    ours_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    hf_ids = hf_tok(prompt, add_special_tokens=False)['input_ids']
    same_ids += ours_ids == hf_ids
    tokens = np.asarray([hf_ids], np.int32)
    ours = np.asarray(forward(checkpoint.params, jnp.asarray(tokens)))
    with torch.no_grad():
      theirs = hf_model(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    diff = float(np.max(np.abs(ours - theirs)))
    worst = max(worst, diff)
    eos = int(hf_tok.eos_token_id)
    ours_out = np.asarray(generate_lib.generate(model, checkpoint.params, jnp.asarray(tokens),
                                                jnp.ones_like(jnp.asarray(tokens), bool), max_new_tokens=_NEW.value,
                                                end_id=eos))[0]
    with torch.no_grad():
      hf_out = hf_model.generate(torch.from_numpy(tokens.astype(np.int64)), max_new_tokens=_NEW.value,
                                 do_sample=False, pad_token_id=eos, eos_token_id=eos,
                                 attention_mask=torch.ones((1, len(hf_ids)), dtype=torch.int64))[0, len(hf_ids):]
    ours_out = list(ours_out[:list(ours_out).index(eos) + 1] if eos in ours_out else ours_out)
    match = ours_out == hf_out.tolist()[:len(ours_out)] and len(hf_out) >= len(ours_out)
    same_text += match
    print(f'{prompt[:40]!r}: {len(hf_ids)} tokens, ids {"equal" if ours_ids == hf_ids else "DIFFER"}, logits max '
          f'|diff| {diff:.2e}, greedy {_NEW.value} tokens {"equal" if match else "DIFFER"}: '
          f'{tokenizer.decode(list(ours_out))[:60]!r}', flush=True)
  print(f'largest |logit difference| {worst:.2e}; tokenizer ids equal on {same_ids}/{len(PROMPTS)} prompts; greedy '
        f'generation equal on {same_text}/{len(PROMPTS)}')


if __name__ == '__main__':
  app.run(main)
