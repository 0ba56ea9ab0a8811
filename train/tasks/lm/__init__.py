"""The language-model task: next-token pretraining on text, scored in bits per byte (comparable across tokenizers).

A run trains one causal language model (model.name 'llama', 'looped', 'moe' or 'rwkv7') on packed documents
(data/lm_text.py, data/lm_batches.py: local files or HF WikiText-103 / TinyStories, a byte-level BPE trained on
the training text or a tokenizer.json by path), with the loss on every token (objective.py); the `lm` evaluator scores the
validation text (or, with --mode=eval, any text file) in loss per token, perplexity and bits per byte, beside
a token-unigram and a byte-frequency baseline. --mode=generate writes a continuation of generate.prompt,
--mode=interactive answers prompts (or chats) from standard input (generation.py). A sweep writes
results.md and bpb_vs_compute.png (report.py).
"""
import dataclasses
import json
import pathlib
import sys
from typing import Any, Callable, TextIO

import jax
import ml_collections

import models
from models import pretrained
from data import bpe
from data import lm_batches
from train import run as run_lib
from train import task as task_lib
from train.errors import ConfigError
from train.tasks.lm import generation
from train.tasks.lm import gsm8k
from train.tasks.lm import objective
from train.tasks.lm import report


@dataclasses.dataclass
class LMContext:
  """What the runs of a workdir share, each built once: the data (tokenizer, packed rows) and compiled scorers."""
  workdir: pathlib.Path
  _memo: dict[Any, Any] = dataclasses.field(default_factory=dict)

  def memo(self, key: Any, build: Callable[[], Any]) -> Any:
    if key not in self._memo:
      self._memo[key] = build()
    return self._memo[key]

  def vocab(self, data_cfg: ml_collections.ConfigDict) -> bpe.Vocab:
    """The tokenizer alone: data.tokenizer's (no text read), else the one trained with the data."""
    if not str(data_cfg.tokenizer or ''):
      data = self.data(data_cfg)
      return bpe.Vocab(data.tokenizer, data.specials, data.vocab_size)

    def no_text() -> list[str]:
      raise AssertionError('a tokenizer given by path is never trained')
    return self.memo(('vocab', str(data_cfg.tokenizer)),
                     lambda: bpe.Vocab.of(bpe.load_or_make(data_cfg, self.workdir, no_text)))

  def data(self, data_cfg: ml_collections.ConfigDict) -> lm_batches.LMData:
    fields = {k: v for k, v in data_cfg.to_dict().items() if k != 'eval_file'}  # The file --mode=eval scores.
    return self.memo(('data', repr(sorted(fields.items()))), lambda: lm_batches.prepare(data_cfg, self.workdir))


def _loops(config: ml_collections.ConfigDict) -> int | None:
  """The core applications a looped model trained with (None for a stacked one)."""
  return int(config.model.loops) if config.model.name == 'looped' else None


@task_lib.register('lm')
class LMTask(task_lib.Task):
  """Registered as config.task='lm'."""
  summary_metrics = (('bits_per_byte', 'min'), ('perplexity', 'min'), ('train_seconds', 'min'))
  evaluators = {'lm': objective.LMEval, 'gsm8k': gsm8k.GSM8KEval}
  free_fields = ('data.eval_file', 'generate')

  def prepare(self, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> LMContext:
    del config
    return LMContext(pathlib.Path(workdir))

  def check(self, config: ml_collections.ConfigDict) -> None:
    for key, low in (('train.random_loops', 0), ('train.z_loss', 0), ('eval.max_rows', 0), ('eval.loop_multiplier', 1),
                     ('data.seq_len', 1)):
      section, field = key.split('.')
      if float(config[section][field]) < low:
        raise ConfigError(f'{key}={config[section][field]!r} must be >= {low}')
    if str(config.train.get('init_from', '')) and not str(config.data.tokenizer):
      raise ConfigError(f'train.init_from={config.train.init_from!r} needs the checkpoint\'s tokenizer: set '
                        'data.tokenizer to the same path')
    if int(config.train.random_loops) and config.model.name != 'looped':
      raise ConfigError(f"train.random_loops={config.train.random_loops} needs a looped model (model.name='looped')")

  def build_model(self, config: ml_collections.ConfigDict, context: LMContext):
    vocab = context.vocab(config.data)
    size = vocab.vocab_size
    if str(config.train.get('init_from', '')):  # The checkpoint's embeddings (may be padded beyond the tokenizer).
      checkpoint = run_lib.pretrained_checkpoint(config)
      pretrained.check_tokenizer(checkpoint, vocab.tokenizer, f'data.tokenizer={config.data.tokenizer!r}')
      size = checkpoint.vocab_size
    return models.build(config.model, vocab_size=size)

  def objective(self, config, model, context: LMContext, scan_unroll: int | bool = 1):
    return objective.make_objective(config, model, context.data(config.data), scan_unroll)

  def label(self, config: ml_collections.ConfigDict) -> str:
    loops = _loops(config)
    return f'looped x{loops}' if loops else str(config.model.name)

  def record(self, config: ml_collections.ConfigDict, run: Any) -> dict[str, Any]:
    return dict(architecture=str(config.model.name), loops=_loops(config), seq_len=int(config.data.seq_len),
                vocab_size=run.model.vocab_size,
                tokens_seen=int(config.train.steps) * int(config.train.batch_size) * int(config.data.seq_len))

  def report_run(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
    report.write_run(run_dir, record)
    print(report.summary_line(record), flush=True)

  def report(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, records: list[dict[str, Any]],
             context: LMContext) -> None:
    report.write_sweep(workdir, records)

  def generate(self, config: ml_collections.ConfigDict, model: Any, params: Any, checkpoint: str,
               context: LMContext, stdout: TextIO | None = None) -> None:
    """--mode=generate: generate.num_samples continuations of generate.prompt (a batch), written out."""
    stdout = stdout or sys.stdout
    data = context.vocab(config.data)
    settings = generation.Settings.from_config(config.generate)
    limit = generation.prompt_limit(int(config.data.seq_len), settings.max_new_tokens)
    ids, cut = generation.fit(data.tokenizer.encode(str(config.generate.prompt), add_special_tokens=False).ids
                              or [data.specials.end_of_text], limit)
    print(f'{self.label(config)}, {checkpoint}' + (f'; the prompt keeps its last {limit} tokens' if cut else ''),
          file=stdout, flush=True)
    texts = generation.complete(model, params, data.tokenizer, [ids] * int(config.generate.num_samples), settings,
                                end_id=data.specials.end_of_text, pad_id=data.specials.pad, loops=_loops(config))
    for i, text in enumerate(texts):
      print(('' if len(texts) == 1 else f'--- sample {i + 1}\n') + str(config.generate.prompt) + text, file=stdout,
            flush=True)

  def interactive(self, config: ml_collections.ConfigDict, model: Any, params: Any, checkpoint: str,
                  context: LMContext, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    data = context.vocab(config.data)
    generation.interactive(model, params, data.tokenizer, generation.Settings.from_config(config.generate),
                           int(config.data.seq_len), bool(config.generate.chat),
                           f'{self.label(config)}, {checkpoint}', _loops(config), stdin or sys.stdin,
                           stdout or sys.stdout, str(config.generate.get('system', '') or ''))

  def export(self, config: ml_collections.ConfigDict, model: Any, params: Any, checkpoint: str,
             context: LMContext, run_dir: pathlib.Path, stdout: TextIO | None = None) -> None:
    """--mode=export: the run's model (LoRA adapters merged in) as an HF directory, <run>/hf: config.json,
    model.safetensors, tokenizer.json and tokenizer_config.json (ChatML template), which transformers loads."""
    data = context.vocab(config.data)
    out = pathlib.Path(run_dir) / 'hf'
    eos = data.specials.im_end if data.specials.chat else data.specials.end_of_text
    length = int(config.data.seq_len)
    if str(config.train.get('init_from', '')):
      length = max(length, int(run_lib.pretrained_checkpoint(config).context or 0))
    pretrained.save_hf(out, jax.device_get(params), config.model, model.vocab_size, length,
                       dict(bos_token_id=data.specials.im_start if data.specials.chat else eos,
                            eos_token_id=sorted({eos, data.specials.end_of_text}), pad_token_id=data.specials.pad))
    (out / 'tokenizer.json').write_text(data.tokenizer.to_str(), encoding='utf-8')
    (out / 'tokenizer_config.json').write_text(json.dumps(dict(
        tokenizer_class='PreTrainedTokenizerFast', eos_token=data.tokenizer.id_to_token(eos),
        pad_token=data.tokenizer.id_to_token(data.specials.pad),
        chat_template=generation.CHATML_TEMPLATE if data.specials.chat else None), indent=1), encoding='utf-8')
    print(f'{self.label(config)}, {checkpoint}: wrote {out} (transformers: AutoModelForCausalLM.from_pretrained)',
          file=stdout or sys.stdout, flush=True)

  def normalize_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
    # Runs from before these fields started from the init and trained every parameter.
    return dict({'train.init_from': '', 'train.optimizer': 'adamw', 'train.lora_rank': 0, 'train.lora_alpha': 16.0,
                 'train.lora_targets': 'query,key,value,out,gate_up,down',
                 'train.moments_dtype': 'float32', 'model.remat': 'none'}, **settings)
