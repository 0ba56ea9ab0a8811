r"""Multi-digit arithmetic with a tiny Llama-style decoder: answer formats and looped depth.

Train (ends with generation on held-out problems of every operand length, also beyond training):

  python launch.py --config=configs/arith.py:add_cpu --workdir=runs/add_cpu

Variants (`:name`, several joined by commas):
  default     one GPU: looped decoder with Abacus positions on 1-20 digit addition, evaluated to 100 digits
              (McLeish et al. 2024 scale; documented, not run on CPU).
  smoke       seconds on a CPU; the test suite runs it.
  add_cpu     the best 1-6 digit addition model for <= 30 minutes on 2 CPU cores (reversed answer, Abacus).
  mul_cpu     up to 4x4-digit multiplication in the same budget.
  mul_cot_cpu up to 4x4-digit multiplication with the units-first chain of thought (`cot_rev`), <= 60
              minutes on 2 CPU cores.
  mul5_cot_cpu  mul_cot_cpu's model trained on to 5x5 digits (train.init_from=runs/mul_cot_cpu), 1000 steps.
  mul_formats the answer formats on 1-4 digit multiplication at matched training FLOPs (reversed, cot,
              cot_rev, and reversed with the running-sum loss of mul_aux_cpu): which learns fastest per FLOP.
  mul_aux_cpu mul_cpu (reversed answer, no chain of thought) with Bai et al. 2025's auxiliary loss: a linear
              probe of the last hidden state regresses the running sum behind each answer digit.
  mul_icot_cpu  stepwise internalisation of mul_cot_cpu's chain of thought (Deng et al. 2024): starts from
              the run in runs/mul_cot_cpu (train.init_from) and removes its tokens one by one, until the
              model answers with none.
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

from configs import common
from configs import variants

VARIANTS = ('default', 'smoke', 'add_cpu', 'mul_cpu', 'mul_cot_cpu', 'mul5_cot_cpu', 'mul_formats', 'mul_aux_cpu', 'mul_icot_cpu', 'length_gen', 'length_loops', 'study', 'mul')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for the comma-separated variants in `arg`."""
  return variants.apply_variants(_base(), arg, _VARIANT_FNS, 'configs/arith.py')


def _base() -> ml_collections.ConfigDict:
  """1-6 digit addition, reversed answers, a 4-block decoder: the add_cpu model."""
  config = ml_collections.ConfigDict()
  common.run_fields(config, 'arith')
  config.sweep = common.sweep()

  config.data = data = ml_collections.ConfigDict()
  data.ops = '+'  # Operations: '+', '*' or '+*' (each training example's op uniform among them).
  data.min_digits = 1  # Shortest operand in training (digits).
  data.max_digits = 6  # Longest operand in training; evaluation goes to eval.max_digits.
  data.format = 'reversed'  # Answer format: 'plain' (a+b=c), 'reversed' (c's digits units first), 'cot' or 'cot_rev'.
  data.abacus_equals_row = False  # Abacus: the prompt's '=' gets the row before the units (every digit one row up).
  data.seq_len = 0  # Padded training length (prompt + target); 0 = the longest problem of these settings needs.
  data.val_fraction = 0.02  # Share of all problems (and their commuted twins) held out for validation.
  data.test_fraction = 0.02  # Share held out for the test set; training never sees either.
  data.split_salt = 'arith-v1'  # Mixed into the split hash: another salt, another split.
  data.abacus_max_offset = 0  # Abacus: training adds a random offset 0..this to every digit position (length generalisation).
  data.internalize_every = 0  # Stepwise internalisation (Deng et al. 2024): one more chain-of-thought token removed every this many steps (0 = never).
  data.internalize_start = 0  # The step where removal starts (explicit chain of thought before it).
  data.internalize_smoothing = 0.0  # Deng's removal smoothing lambda: o extra tokens removed with P(o) ~ exp(-lambda o) (0 = off).
  data.seed = 0  # Seed of every training batch (batch t is a function of seed and t).
  data.eval_file = ''  # Problem file scored by --mode=eval (one problem per line).

  config.model = common.decoder_model(name='llama', width=128, num_layers=4)

  config.train = train = common.train(steps=3000, batch_size=128, lr=1e-3, warmup_steps=300, weight_decay=0.1,
                                      b2=0.98, log_every=100, checkpoint_every=1000, keep_checkpoints=2)
  train.init_from = ''  # A run directory of this project to start from (its best checkpoint; same model), e.g. a CoT run to internalise; '' = the init.
  train.reset_on_removal = True  # Internalisation: AdamW's moments restart at each removal (Deng et al.); the lr schedule goes on.
  train.running_sum_weight = 0.0  # Bai et al. 2025: weight of an MSE loss on model.probe_outputs regressing each answer digit's running sum ('reversed').
  train.random_loops = 0  # Looped: > 0 draws each training batch's loops in 1..this (Huginn-style); a step computes this many.

  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 256  # Problems per generation / scoring batch.
  ev.num_val = 20  # Validation problems per (len_a, len_b) pair of the training lengths.
  ev.num_test = 30  # Test problems per (len_a, len_b) pair of the training lengths (the headline exact accuracy).
  ev.num_per_length = 50  # Test problems with both operands of n digits, for each n in 1..eval.max_digits.
  ev.max_digits = 8  # Longest operands of the length table (beyond data.max_digits: length generalisation).
  ev.loop_multiplier = 4  # Looped models: test-time loops 1 .. this x model.loops.
  ev.abacus_offset = 0  # Added to every digit position when scoring by generation (test, lengths, files, interactive).
  ev.checkpoint = 'best'  # Checkpoint --mode=eval/interactive restores: 'best' (on validation) or 'latest'.
  ev.file_evaluator = 'test'  # The evaluator of `evals` that --mode=eval runs on data.eval_file.

  config.evals = ml_collections.ConfigDict()  # Evaluators (train/evaluators.py), each with its cadence.
  # Teacher-forced exact match on validation problems: picks the best checkpoint.
  config.evals.val = dict(type='teacher_forced', every=500, select='score')
  # Greedy generation on the test problems, by operand length and (looped) test-time loops; --mode=eval's file.
  config.evals.test = dict(type='generation', final=True)
  return config


def _looped(loops: int, prelude_layers: int, coda_layers: int) -> dict:
  """The looped latent model's fields: prelude, one block applied `loops` times with the input injected, coda."""
  return dict(name='looped', loops=loops, prelude_layers=prelude_layers, coda_layers=coda_layers)


def _default(config: ml_collections.ConfigDict) -> None:
  """McLeish-scale length generalisation for one GPU: looped 1 block x 16, Abacus, 1-20 digits, eval to 100."""
  config.model.width = 512
  config.model.num_heads = 8
  config.model.num_kv_heads = 8
  config.model.update(_looped(loops=16, prelude_layers=0, coda_layers=0))
  config.model.position = 'abacus'
  config.model.max_digit_pos = 128
  config.data.max_digits = 20
  config.data.abacus_max_offset = 100
  config.train.steps = 100_000
  config.train.batch_size = 512
  config.train.lr = 1e-4
  config.train.warmup_steps = 2000
  config.evals.val.every = 5000
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
  config.evals.val.every = 10
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


def _mul_cot_cpu(config: ml_collections.ConfigDict) -> None:
  """Up to 4x4-digit multiplication with the units-first chain of thought, <= 60 minutes on 2 CPU cores."""
  _mul_cpu(config)
  config.data.format = 'cot_rev'
  config.eval.num_per_length = 200  # The 4x4 (and 5x5) rows of the length table: 200 problems each.


def _mul5_cot_cpu(config: ml_collections.ConfigDict) -> None:
  """mul_cot_cpu continued on 1-5 digit operands from its best checkpoint (a curriculum's second stage)."""
  _mul_cot_cpu(config)
  config.train.init_from = 'runs/mul_cot_cpu'
  config.data.max_digits = 5
  config.eval.max_digits = 6
  config.eval.num_per_length = 100
  config.train.steps = 1000
  config.train.warmup_steps = 50
  config.train.lr = 5e-4
  config.evals.val.every = 250


def _mul_formats(config: ml_collections.ConfigDict) -> None:
  """mul_cpu's model and data in three formats at one training-FLOP budget (seq_len per format: each pays
  for its own tokens)."""
  _mul_cpu(config)
  config.models = ml_collections.ConfigDict()  # Named points of the sweep's `model=` axis.
  for fmt in ('reversed', 'cot', 'cot_rev'):
    config.models[fmt] = common.point(data=dict(format=fmt))
  config.models.aux = common.point(data=dict(format='reversed'), model=dict(probe_outputs=1),
                                   train=dict(running_sum_weight=1.0))
  config.train.warmup_fraction = 0.1
  config.evals.val.every = 0
  config.sweep.grid = 'model=reversed,aux,cot,cot_rev; flops_budget=3e13; seed=0'


def _mul_aux_cpu(config: ml_collections.ConfigDict) -> None:
  """mul_cpu with the running-sum probe and its auxiliary loss (Bai et al. 2025)."""
  _mul_cpu(config)
  config.model.probe_outputs = 1
  config.train.running_sum_weight = 1.0


def _mul_icot_cpu(config: ml_collections.ConfigDict) -> None:
  """mul_cot_cpu's model with its chain of thought removed one token every 50 steps (44 tokens for 4x4)."""
  _mul_cot_cpu(config)
  config.train.init_from = 'runs/mul_cot_cpu'
  config.data.internalize_every = 50
  config.data.internalize_smoothing = 4.0  # Deng et al.'s lambda: 2% of examples remove one token more (or more).
  config.train.steps = 3500  # 44 x 50 steps of removal, then 1300 with none left.
  config.train.lr = 3e-4
  config.train.schedule = 'constant'
  config.train.warmup_steps = 0
  config.evals.val.every = 250


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
  config.models = ml_collections.ConfigDict()  # Named points of the sweep's `model=` axis.
  config.models.stacked = common.point(model=dict(name='llama'))
  config.models.looped = common.point(model=_looped(loops=4, prelude_layers=0, coda_layers=0))
  # Each batch trains at 1-4 loops (a step still computes 4: same FLOPs).
  config.models.looped_random = common.point(model=_looped(loops=4, prelude_layers=0, coda_layers=0),
                                             train=dict(random_loops=4))
  config.eval.loop_multiplier = 4  # Test-time loops 1, 2, 4, 8, 12, 16.
  config.sweep.grid = 'model=stacked,looped,looped_random; seed=0,1,2'


def _study(config: ml_collections.ConfigDict) -> None:
  """plain, reversed, cot and looped at 3 training-FLOP budgets and 3 seeds, <= 30 minutes on 2 CPU cores."""
  config.data.max_digits = 4
  config.model.width = 64
  config.model.num_layers = 2
  config.models = ml_collections.ConfigDict()  # Named points of the study's `model=` axis.
  for fmt in ('plain', 'reversed', 'cot'):
    config.models[fmt] = common.point(data=dict(format=fmt))
  config.models.looped = common.point(model=_looped(loops=4, prelude_layers=1, coda_layers=0),
                                      data=dict(format='reversed'), train=dict(random_loops=0))
  config.train.batch_size = 64
  config.train.warmup_fraction = 0.1  # Budgets of a few hundred steps: warmup at most a tenth of them.
  config.evals.val.every = 0
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


_VARIANT_FNS = {'default': _default, 'smoke': _smoke, 'add_cpu': _add_cpu, 'mul_cpu': _mul_cpu, 'mul_cot_cpu': _mul_cot_cpu,
                'mul5_cot_cpu': _mul5_cot_cpu, 'mul_formats': _mul_formats, 'mul_aux_cpu': _mul_aux_cpu,
                'mul_icot_cpu': _mul_icot_cpu,
                'length_gen': _length_gen, 'length_loops': _length_loops, 'study': _study, 'mul': _mul}
