r"""GSM8K fine-tuning of a pretrained model: SmolLM2-135M-Instruct with LoRA, the loss on the answer only, in three
answer formats (explicit chain of thought, equations only, the final number only), scored on GSM8K test.

  python -m data.fetch smollm2                                              # the checkpoint, once
  python launch.py --config=configs/gsm8k.py --workdir=runs/gsm8k_lora      # the three formats, one after another
  python launch.py --config=configs/gsm8k.py --workdir=runs/gsm8k_lora --mode=report
  python launch.py --config=configs/gsm8k.py --workdir=runs/gsm8k_lora --mode=interactive \
      "--config.sweep.grid=data.answer=solution"                            # chat with a fine-tuned run

Variants (`:name`, several joined by commas):
  default  SmolLM2-135M-Instruct (Q4_1 GGUF), LoRA rank 8 on every projection, the three answer formats at one
           fine-tuning FLOP budget (estimated 48 minutes each on 2 CPU cores, resumable), each scored on the first 500
           test problems (estimated 20-30 minutes each).
  gpu      one GPU: rank 64 and full fine-tuning, larger budgets, the whole test set.
  smollm2_360m   after gpu: SmolLM2-360M-Instruct from an HF directory (python -m data.fetch
           HuggingFaceTB/SmolLM2-360M-Instruct, then --config.train.init_from=<its path>, same for data.tokenizer).

Everything not set here is configs/lm.py's (model, train, generate sections): see its comments.
"""
import ml_collections

from configs import lm as lm_config
from configs import variants

VARIANTS = ('default', 'gpu', 'smollm2_360m')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for the comma-separated variants in `arg`."""
  return variants.apply_variants(_base(), arg, _VARIANT_FNS, 'configs/gsm8k.py')


def _base() -> ml_collections.ConfigDict:
  config = lm_config.get_config('smollm2')
  config.task = 'gsm8k'
  with config.unlocked():
    del config['models']  # No `model=` axis: the pretrained architecture.
  with config.train.unlocked():
    for key in ('z_loss', 'random_loops'):  # The answer loss has neither.
      del config.train[key]

  config.data = data = ml_collections.ConfigDict()
  data.tokenizer = lm_config.SMOLLM2_FILE  # The model's tokenizer: a tokenizer.json, an HF directory or a .gguf.
  data.train_file = '{shared}/gsm8k/train.jsonl'  # GSM8K training problems (JSONL, data/gsm8k.py).
  data.train_limit = 0  # Train on the first this many problems (0 = all 7,473).
  data.answer = 'solution'  # What the model learns to write: 'solution', 'equations' or 'answer' (data/gsm8k.py).
  data.seq_len = 320  # Tokens of a row: prompt, answer and end token, padded (longer problems are left out).
  data.seed = 0  # Seed of the shuffle: batch t is a function of seed and t.
  data.eval_file = ''  # GSM8K JSONL that --mode=eval scores (else evals.test's problems_file).

  with config.train.unlocked():
    config.train.update(steps=0, batch_size=8, lr=2e-4, warmup_steps=10, warmup_fraction=0.1, weight_decay=0.0,
                        schedule='cosine', final_lr_fraction=0.1, log_every=5, checkpoint_every=20,
                        keep_checkpoints=1, lora_rank=8, lora_alpha=16.0)
  # Fine-tuning FLOPs (XLA-counted; 2.1e12 a step of batch 8 with LoRA): 143 steps, 1,144 problems; estimated 48
  # minutes on 2 CPU cores (AMD EPYC, AVX-512: 20-21 s a step measured), then 20-30 minutes to score 500 problems
  # (2.5-4 s a problem measured on 200).
  config.flops_budget = 3e14

  config.eval = ev = ml_collections.ConfigDict()
  ev.checkpoint = 'latest'  # What --mode=eval/generate/interactive/export restore.
  ev.file_evaluator = 'test'  # The evaluator of `evals` that --mode=eval runs on data.eval_file.
  config.evals = ml_collections.ConfigDict()
  # GSM8K test after training: prompted as the model was trained ("Question: ...\nAnswer:", no exemplars), greedy
  # up to 256 tokens; limit: the first problems (a fixed subset, the same for every run; 0 = all 1,319).
  # context: the tokens a prompt and its answer may take (0 = data.seq_len; the model read up to 8192 in pretraining).
  config.evals.test = dict(type='gsm8k', format='gsm8k', shots=0, limit=500, batch_size=8, max_new_tokens=256,
                           seed=1234, train_file='{shared}/gsm8k/train.jsonl',
                           problems_file='{shared}/gsm8k/test.jsonl', context=1024, final=True)
  config.generate.system = ''  # Chat with a fine-tuned run: no system message.
  config.sweep.grid = 'data.answer=solution,equations,answer'
  return config


def _gpu(config: ml_collections.ConfigDict) -> None:
  """One GPU: larger ranks and full fine-tuning (lora_rank=0) at larger budgets; the whole test set."""
  config.train.batch_size = 32
  config.evals.test['limit'] = 0
  config.evals.test['batch_size'] = 64
  config.model.dtype = 'bfloat16'
  config.sweep.grid = 'data.answer=solution,equations,answer; train.lora_rank=64,0; flops_budget=3e15,1e16'


def _smollm2_360m(config: ml_collections.ConfigDict) -> None:
  """SmolLM2-360M-Instruct's architecture (32 blocks of 960, 15 / 5 heads of 64, SwiGLU 2560, RoPE 100000)."""
  config.model.update(width=960, num_layers=32, num_heads=15, num_kv_heads=5, head_dim=64, mlp_hidden=2560)
  config.train.init_from = config.data.tokenizer = '{cache}/SmolLM2-360M-Instruct'


_VARIANT_FNS = {'default': lambda config: None, 'gpu': _gpu, 'smollm2_360m': _smollm2_360m}
