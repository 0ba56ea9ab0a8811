r"""Multi-digit arithmetic with a tiny Llama-style decoder: answer formats and looped depth.

Train (ends with generation on held-out problems of every operand length, also beyond training):

  python launch.py --config=configs/arith.py:add_cpu --workdir=runs/add_cpu

Variants (`:name`, several joined by commas):
  default     one GPU: looped decoder with Abacus positions on 1-20 digit addition, evaluated to 100 digits
              (McLeish et al. 2024 scale; documented, not run on CPU).
  smoke       seconds on a CPU; the test suite runs it.
  add_cpu     the best 1-6 digit addition model for <= 30 minutes on 2 CPU cores (reversed answer, Abacus).
  mul_cpu     up to 4x4-digit multiplication in the same budget.
  length_gen  trained on at most 6 digits (random Abacus offsets), evaluated to 16 digits.
  length_loops  length_gen's 4 stacked blocks against 1 block looped 4 times, with a fixed or a
              random depth per batch (same FLOPs per step), 3 seeds, scored by length at every
              test-time depth.
  study       plain, reversed, cot and the looped latent model at matched training FLOPs, 3 seeds (addition).
  mul         after study (`study,mul`): the same comparison on 1-3 digit multiplication.

Score a file of problems (one per line: 12+34, 12+34= or 12+34=46; also *), or type problems:

  python launch.py --config=configs/arith.py:add_cpu --workdir=runs/add_cpu --mode=eval \
      --config.data.eval_file=problems.txt
  python launch.py --config=configs/arith.py:add_cpu --workdir=runs/add_cpu --mode=interactive
"""
import ml_collections

from configs import variants

VARIANTS = ('default', 'smoke', 'add_cpu', 'mul_cpu', 'length_gen', 'length_loops', 'study', 'mul')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for the comma-separated variants in `arg`."""
  return variants.apply_variants(_base(), arg, _VARIANT_FNS, 'configs/arith.py')


def _base() -> ml_collections.ConfigDict:
  """1-6 digit addition, reversed answers, a 4-block decoder: the add_cpu model."""
  config = ml_collections.ConfigDict()
  config.task = 'arith'  # Which task package of train/tasks/ runs this config.
  config.seed = 0  # Seed of parameter init; data has its own seed.
  config.distributed = False  # Call jax.distributed.initialize() first (multi-host TPU/GPU).
  config.flops_budget = 0.0  # > 0: train.steps = this / XLA-counted FLOPs of one step (matched-compute runs).

  config.sweep = sweep = ml_collections.ConfigDict()  # train/sweep.py; no axes = one run in the workdir.
  sweep.grid = ''  # Axes whose product is run, e.g. 'model=plain,looped; seed=0,1,2'; each point in W/runs/<name>.
  sweep.vary = ''  # Axes varied one at a time around this config's values (an ablation), crossed with the grid.
  sweep.shard = ''  # 'i/n': run every n-th point from the i-th (a job array into one shared workdir).
  sweep.compilation_cache = True  # Keep compiled steps in W/xla_cache, so points that differ only in seed compile once.

  config.data = data = ml_collections.ConfigDict()
  data.ops = '+'  # Operations: '+', '*' or '+*' (each training example's op uniform among them).
  data.min_digits = 1  # Shortest operand in training (digits).
  data.max_digits = 6  # Longest operand in training; evaluation goes to eval.max_digits.
  data.seq_len = 0  # Padded training length (prompt + target); 0 = the longest problem of these settings needs.
  data.val_fraction = 0.02  # Share of all problems (and their commuted twins) held out for validation.
  data.test_fraction = 0.02  # Share held out for the test set; training never sees either.
  data.split_salt = 'arith-v1'  # Mixed into the split hash: another salt, another split.
  data.abacus_max_offset = 0  # Abacus: training adds a random offset 0..this to every digit position (length generalisation).
  data.seed = 0  # Seed of every training batch (batch t is a function of seed and t).
  data.eval_file = ''  # Problem file scored by --mode=eval (one problem per line).

  config.model = _stacked(width=128, num_layers=4)
  config.model.format = 'reversed'  # Answer format: 'plain' (a+b=c), 'reversed' (c's digits units first) or 'cot'.

  config.train = train = ml_collections.ConfigDict()
  train.steps = 3000  # Optimizer steps (replaced by flops_budget when that is > 0).
  train.batch_size = 128  # Global batch (split over all devices).
  train.lr = 1e-3  # Peak learning rate.
  train.warmup_steps = 300  # Linear warmup steps.
  train.schedule = 'cosine'  # After warmup: 'cosine' (to lr * final_lr_fraction) or 'constant'.
  train.final_lr_fraction = 0.1  # Cosine: final lr / peak lr.
  train.weight_decay = 0.1  # AdamW decoupled weight decay.
  train.b1 = 0.9  # AdamW beta1.
  train.b2 = 0.98  # AdamW beta2.
  train.grad_clip = 1.0  # Global-norm gradient clipping (0 = off).
  train.ema_decay = 0.0  # EMA of params used for evaluation (0 = off).
  train.log_every = 100  # Steps between progress lines / metrics.jsonl rows.
  train.eval_every = 500  # Steps between validation (teacher-forced exact match; picks the best checkpoint).
  train.checkpoint_every = 1000  # Steps between checkpoints (one is always written at the end).
  train.keep_checkpoints = 2  # Latest checkpoints kept (the best-on-validation one is kept apart).

  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 256  # Problems per generation / scoring batch.
  ev.num_val = 20  # Validation problems per (len_a, len_b) pair of the training lengths.
  ev.num_test = 30  # Test problems per (len_a, len_b) pair of the training lengths (the headline exact accuracy).
  ev.num_per_length = 50  # Test problems with both operands of n digits, for each n in 1..eval.max_digits.
  ev.max_digits = 8  # Longest operands of the length table (beyond data.max_digits: length generalisation).
  ev.loop_multiplier = 4  # Looped models: test-time loops 1 .. this x model.loops.
  ev.abacus_offset = 0  # Added to every digit position when scoring by generation (test, lengths, files, interactive).
  ev.checkpoint = 'best'  # Checkpoint --mode=eval/interactive restores: 'best' (on validation) or 'latest'.
  return config


def _stacked(width: int, num_layers: int, position: str = 'rope_abacus') -> ml_collections.ConfigDict:
  """A stacked Llama-style decoder (models/decoder.py)."""
  model = ml_collections.ConfigDict()
  model.width = width  # D: width of every token state.
  model.num_heads = 4  # Query heads.
  model.num_kv_heads = 2  # Key/value heads (grouped-query attention; divides num_heads).
  model.head_dim = 0  # Width of a head (0 = width / num_heads).
  model.mlp_hidden = 0  # SwiGLU hidden width (0 = 8/3 width, rounded up to a multiple of 8).
  model.num_layers = num_layers  # Blocks of the stacked decoder.
  model.looped = False  # True: prelude, one weight-tied core applied `loops` times, coda.
  model.prelude_layers = 1  # Looped: blocks before the core.
  model.recurrent_layers = 1  # Looped: blocks of the weight-tied core.
  model.coda_layers = 1  # Looped: blocks after the core.
  model.loops = 1  # Looped: core applications in training (raised at eval without retraining).
  model.random_loops = 0  # Looped: > 0 draws each training batch's loops in 1..this (Huginn-style); a step computes this many.
  model.injection = 'add'  # Looped: the input re-injected at every application: 'add' or 'concat'.
  model.init_state = 'zeros'  # Looped: state before the first application: 'zeros' or 'prelude'.
  model.position = position  # 'rope', 'abacus' (digit position within its number), 'rope_abacus' or 'none'.
  model.max_digit_pos = 32  # Abacus table size (digit positions 1..this, offsets included).
  model.abacus_equals_row = False  # Abacus: the prompt's '=' gets the row before the units (every digit one row up).
  model.rope_base = 10000.0  # RoPE base frequency.
  model.norm_eps = 1e-6  # RMSNorm epsilon.
  model.tie_embeddings = False  # LM head shares the token embedding.
  model.dtype = 'float32'  # Compute dtype ('float32' or 'bfloat16'); params stay float32.
  return model


def _looped(config: ml_collections.ConfigDict, loops: int) -> None:
  """The looped latent model: prelude, one block applied `loops` times with the input injected, coda."""
  config.model.looped = True
  config.model.loops = loops


def _default(config: ml_collections.ConfigDict) -> None:
  """McLeish-scale length generalisation for one GPU: looped 1 block x 16, Abacus, 1-20 digits, eval to 100."""
  config.model.width = 512
  config.model.num_heads = 8
  config.model.num_kv_heads = 8
  _looped(config, 16)
  config.model.prelude_layers = 0
  config.model.coda_layers = 0
  config.model.position = 'abacus'
  config.model.max_digit_pos = 128
  config.data.max_digits = 20
  config.data.abacus_max_offset = 100
  config.train.steps = 100_000
  config.train.batch_size = 512
  config.train.lr = 1e-4
  config.train.warmup_steps = 2000
  config.train.eval_every = 5000
  config.train.checkpoint_every = 5000
  config.eval.max_digits = 100
  config.eval.num_per_length = 20
  config.eval.num_test = 5


def _smoke(config: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: a tiny run through every part (train, generation, length table)."""
  config.data.max_digits = 3
  config.model.width = 32
  config.model.num_layers = 2
  config.train.steps = 20
  config.train.batch_size = 16
  config.train.warmup_steps = 5
  config.train.log_every = 5
  config.train.eval_every = 10
  config.train.checkpoint_every = 10
  config.eval.num_val = 2
  config.eval.num_test = 2
  config.eval.num_per_length = 4
  config.eval.max_digits = 4
  config.eval.batch_size = 32
  config.eval.loop_multiplier = 2


def _add_cpu(config: ml_collections.ConfigDict) -> None:
  """1-6 digit addition in <= 30 minutes on 2 CPU cores (the base config)."""
  del config


def _mul_cpu(config: ml_collections.ConfigDict) -> None:
  """Up to 4x4-digit multiplication in <= 30 minutes on 2 CPU cores."""
  config.data.ops = '*'
  config.data.max_digits = 4
  config.eval.max_digits = 5


def _length_gen(config: ml_collections.ConfigDict) -> None:
  """Trained on at most 6 digits with random Abacus offsets, evaluated to 16 digits."""
  config.model.position = 'abacus'
  config.model.max_digit_pos = 24
  config.data.abacus_max_offset = 10
  config.eval.max_digits = 16
  config.eval.num_per_length = 30


def _length_loops(config: ml_collections.ConfigDict) -> None:
  """length_gen's stacked model against one block looped 4 times (fixed or random depth), same FLOPs per step, 3 seeds."""
  _length_gen(config)
  config.models = ml_collections.ConfigDict()  # The choices of the sweep's `model=` axis.
  config.models.stacked = ml_collections.ConfigDict(config.model.to_dict())
  looped = config.models.looped = ml_collections.ConfigDict(config.model.to_dict())
  looped.looped, looped.loops, looped.prelude_layers, looped.coda_layers = True, 4, 0, 0
  random_depth = config.models.looped_random = ml_collections.ConfigDict(looped.to_dict())
  random_depth.random_loops = 4  # Each batch trains at 1-4 loops (a step still computes 4: same FLOPs).
  config.eval.loop_multiplier = 4  # Test-time loops 1, 2, 4, 8, 12, 16.
  config.sweep.grid = 'model=stacked,looped,looped_random; seed=0,1,2'


def _study(config: ml_collections.ConfigDict) -> None:
  """plain, reversed, cot and looped at 3 training-FLOP budgets and 3 seeds, <= 30 minutes on 2 CPU cores."""
  config.data.max_digits = 4
  config.model.width = 64
  config.model.num_layers = 2
  config.models = ml_collections.ConfigDict()  # The choices of the study's `model=` axis.
  for fmt in ('plain', 'reversed', 'cot'):
    config.models[fmt] = ml_collections.ConfigDict(config.model.to_dict())
    config.models[fmt].format = fmt
  looped = config.models.looped = ml_collections.ConfigDict(config.model.to_dict())
  looped.looped, looped.loops, looped.prelude_layers, looped.coda_layers = True, 4, 1, 0
  config.train.batch_size = 64
  config.train.eval_every = 0
  config.train.checkpoint_every = 500
  config.eval.num_val = 10
  config.eval.num_test = 20
  config.eval.num_per_length = 30
  config.eval.max_digits = 6
  config.sweep.grid = 'model=plain,reversed,cot,looped; flops_budget=1e11,3e11,1e12; seed=0,1,2'


def _mul(config: ml_collections.ConfigDict) -> None:
  """After `study`: the same comparison on multiplication of 1-3 digit operands (`study,mul`)."""
  config.data.ops = '*'
  config.data.max_digits = 3
  config.eval.max_digits = 4


_VARIANT_FNS = {'default': _default, 'smoke': _smoke, 'add_cpu': _add_cpu, 'mul_cpu': _mul_cpu,
                'length_gen': _length_gen, 'length_loops': _length_loops, 'study': _study, 'mul': _mul}
