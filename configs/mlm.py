r"""Masked language modelling: BERT-small vs TRM vs looped BERT at matched training FLOPs.

The study is a sweep (train/sweep.py): every model section of `models` x FLOP
budget x seed in `sweep.grid`, each run in `<workdir>/runs/<model>_<budget>_s<seed>`
(resumable; finished runs are skipped on rerun), scored on one fixed, seeded set
of masked eval positions; it writes `results.json`, `results.md`,
`accuracy_vs_compute.png`, `depth_vs_loss.png` (depth at test time) and `sweep.md`:

  python launch.py --config=configs/mlm.py --workdir=runs/mlm          # GPU, WikiText-103 via HF
  python launch.py --config=configs/mlm.py:quick --workdir=runs/mlm_quick   # 2 CPU cores, <= 20 min
  python launch.py --config=configs/mlm.py:smoke --workdir=/tmp/mlm_smoke \
      --config.data.files=../shared/data/text/wiki.valid.tokens          # under a minute

Why TRM stayed at the no-context level (docs/mlm.md): one factor at a time around the earlier TRM (post-norm),
from the one-application TRM upwards, and the pre-norm TRM with normalised states; 400 updates, 3 seeds each:

  python launch.py --config=configs/mlm.py:trm_factors --workdir=runs/trm_factors
  python launch.py --config=configs/mlm.py:trm_factors_up --workdir=runs/trm_factors_up
  python launch.py --config=configs/mlm.py:trm_fix --workdir=runs/trm_fix

Which recursive TRM learns most per FLOP at the quick budgets (the quick TRM's settings come from it):

  python launch.py --config=configs/mlm.py:trm_budget --workdir=runs/trm_budget
  python launch.py --config=configs/mlm.py:trm_budget_back --workdir=runs/trm_budget_back
  python launch.py --config=configs/mlm.py:prenorm_baselines --workdir=runs/prenorm_baselines  # the recipe's control
  python launch.py --config=configs/mlm.py:recipe_stack --workdir=runs/recipe_stack  # the recursion's control

The hyperparameter ablation (one axis at a time around the quick-scale models at one budget,
3 seeds; writes ablation.md and ablation.png), and its smoke form:

  python launch.py --config=configs/mlm.py:ablation --workdir=runs/mlm_ablation
  python launch.py --config=configs/mlm.py:ablation,smoke --workdir=/tmp/abl \
      --config.data.files=../shared/data/text/wiki.valid.tokens

Split a sweep over a job array (shard i of n into one shared workdir), then collect it:

  python launch.py --config=configs/mlm.py:quick --workdir=W --config.sweep.shard=$i/$n
  python launch.py --config=configs/mlm.py:quick --workdir=W --mode=report

Re-score every finished run (on the fixed eval set, or on other text):

  python launch.py --config=configs/mlm.py:quick --workdir=runs/mlm_quick --mode=eval \
      [--config.data.eval_files=other.txt]

Splits: with `data.files` the last `data.eval_fraction` of the lines evaluate
(or all of `data.eval_files` when given); with HF (`data.files=''`) WikiText's
'train' split trains and its 'validation' split evaluates ('test' is never read).

Any field can be overridden, e.g. `--config.sweep.grid='model=bert,trm; flops_budget=1e15,1e16;
seed=0,1,2' --config.models.trm.model.depth=4 --config.models.bert.train.lr=5e-4`. The `model` axis
names points of `models`: each sets the model section and the training fields that go with it (its
lr, detach, deep_supervision); `config.model` itself is the default for a run without the axis.
Shared text files are named from the shared data folder as `{shared}/text/...` (data/paths.py).
"""
import ml_collections

from configs import common
from configs import variants

VARIANTS = ('default', 'quick', 'smoke', 'ablation', 'trm_factors', 'trm_factors_up', 'trm_fix', 'trm_budget',
            'trm_budget_back', 'prenorm_baselines', 'recipe_stack')
MODEL_NAMES = ('bert', 'trm', 'looped_bert')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for the comma-separated variants in `arg`."""
  return variants.apply_variants(_base(), arg, _VARIANT_FNS, 'configs/mlm.py')


def _shared_text(name: str) -> str:
  """A file of the shared text folder ($REASON_SHARED_DATA or ../shared/data beside the repo; data/paths.py)."""
  return '{shared}/text/' + name


def _bert(width: int, num_layers: int, num_heads: int) -> ml_collections.ConfigDict:
  """BERT encoder (depth 1) with BERT's MLM head tied to the token embeddings."""
  return common.recurrent_model(
      name='bert', width=width, num_layers=num_layers, num_heads=num_heads, mlp_act='gelu', mixer='attention',
      norm='layernorm', post_norm=True, norm_eps=1e-12, use_bias=True, inner_steps=1, cycles=1, depth=1,
      tie_embeddings=True, mlp_state_dim=64)


def _looped_bert(width: int, num_heads: int, depth: int) -> ml_collections.ConfigDict:
  """Looped BERT: one weight-tied BERT block applied `depth` times, h <- Block(h + x) (the Sudoku study's
  recurrent BERT); no (y, z) split, gradients through every application, a loss after each."""
  model = _bert(width=width, num_layers=1, num_heads=num_heads)
  model.depth = depth
  return model


def _trm(width: int, num_layers: int, num_heads: int, inner_steps: int, cycles: int,
         depth: int) -> ml_collections.ConfigDict:
  """TRM: one tiny attention network applied recursively (pre-norm: TRM's post-norm keeps it at the no-context
  level on MLM, docs/mlm.md), RMSNorm, SwiGLU, no biases, deep supervision over `depth` steps."""
  return common.recurrent_model(
      name='trm', width=width, num_layers=num_layers, num_heads=num_heads, mlp_act='swiglu', mixer='attention',
      norm='rmsnorm', post_norm=False, norm_eps=1e-5, use_bias=False, inner_steps=inner_steps, cycles=cycles,
      depth=depth, mlp_state_dim=64)


def _point(model: ml_collections.ConfigDict, lr: float = 0.0) -> ml_collections.ConfigDict:
  """A named point of the `model` axis: the model section and its training: TRM's deep supervision detaches
  the state between steps, BERT's backpropagates through every application; `lr` > 0: its own peak lr."""
  train = dict(detach=model.name == 'trm', deep_supervision=True)
  if lr > 0:
    train['lr'] = lr
  return common.point(model=model, train=train)


def _base() -> ml_collections.ConfigDict:
  """Full scale for one GPU: WikiText-103 from HF, BERT-small (L4/H512) vs a 2-layer TRM."""
  config = ml_collections.ConfigDict()
  common.run_fields(config, 'mlm')
  config.flops_budget = 1e16  # Training FLOPs of a run (XLA-counted): steps = this / FLOPs per step; 0 = train.steps.

  config.data = data = ml_collections.ConfigDict()
  data.files = ''  # Comma-separated local text files (one document a line; `{shared}/` = the shared data folder); '' = HF WikiText below.
  data.eval_files = ''  # Text files that evaluate (then all of `files` trains); --mode=eval scores these when set.
  data.eval_fraction = 0.05  # With `files` and no `eval_files`: the last fraction of lines evaluates.
  data.hf_name = 'Salesforce/wikitext'  # HF dataset (used when files='').
  data.hf_config = 'wikitext-103-raw-v1'  # 'wikitext-103-raw-v1' or 'wikitext-2-raw-v1'.
  data.vocab_size = 30_522  # WordPiece vocabulary asked of the tokenizer (BERT's size).
  data.lowercase = True  # Lower-case before tokenizing (BERT uncased).
  data.seq_len = 128  # Tokens per packed sequence, [CLS] included.
  data.add_cls = True  # Start every sequence with [CLS].
  data.mask_prob = 0.15  # Share of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).
  data.seed = 0  # Seed of training batches (batch t is a function of seed and t; same for every run).
  data.eval_seed = 1234  # Seed of the fixed evaluation masks (same for every model and seed).
  data.num_eval_sequences = 4096  # Eval sequences (a seeded sample; <= 0 = all).

  # The runs of the study: the `model` axis picks a point of config.models.
  config.sweep = common.sweep(grid='model=bert,trm,looped_bert; flops_budget=1e16,3e16,1e17,3e17; seed=0,1,2')

  config.model = _bert(width=512, num_layers=4, num_heads=8)  # A run without the `model` axis: BERT-small.
  config.models = ml_collections.ConfigDict()  # Named points of the `model` axis (model section and its training).
  config.models.bert = _point(_bert(width=512, num_layers=4, num_heads=8))  # BERT-small (Turc et al. 2019).
  config.models.trm = _point(_trm(width=512, num_layers=2, num_heads=8, inner_steps=2, cycles=2, depth=2))
  config.models.looped_bert = _point(_looped_bert(width=512, num_heads=8, depth=4))  # BERT-small's compute per step, weights tied.

  config.train = train = common.train(
      steps=0, batch_size=256, lr=5e-4, warmup_steps=2000, warmup_fraction=0.1, b2=0.98, log_every=200,
      checkpoint_every=2000, keep_checkpoints=1)  # steps: set for each run from flops_budget (as given at 0).
  train.readout_group = 0  # Sequences sharing one list of readout slots (0 = each device's batch; 1 = per sequence).
  train.max_predictions = 0  # Readout slots per list (0 = mean + 5 std of the group's masked count).
  train.deep_supervision = True  # Loss after every application, averaged (False: only after the last).
  train.detach = False  # Stop gradients between applications (TRM's deep supervision); False: backprop through all.

  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 256  # Sequences per eval batch.
  ev.depth_multiplier = 4  # Also score depths 1 .. this x model.depth (depth at test time; loss_by_depth).
  ev.diagnostics = False  # Record gradient norms per parameter group and state change per application at init and end.
  ev.checkpoint = 'latest'  # Checkpoint --mode=eval restores ('best' where a run kept one).
  ev.file_evaluator = 'eval'  # The evaluator of `evals` that --mode=eval runs (on data.eval_files when set).

  config.evals = ml_collections.ConfigDict()  # Evaluators (train/evaluators.py), each with its cadence.
  # Masked accuracy, loss and perplexity on the fixed, seeded eval masks, at every depth up to
  # eval.depth_multiplier x model.depth; every: steps between calls in training (0: only at the end).
  config.evals.eval = dict(type='masked_lm', every=0, final=True)
  return config


def _default(config: ml_collections.ConfigDict) -> None:
  del config  # The base config is the default.


def _quick(config: ml_collections.ConfigDict) -> None:
  """2 CPU cores, <= 20 minutes: small BERT, TRM and looped BERT on WikiText-2 test + a Wikipedia sample, 3 budgets
  x 3 seeds."""
  config.data.files = ','.join([_shared_text('wiki.test.tokens'), _shared_text('enwiki_sample.txt')])
  config.data.eval_files = _shared_text('wiki.valid.tokens')
  config.data.vocab_size = 2048
  config.data.seq_len = 64
  config.data.num_eval_sequences = 512
  config.sweep.grid = 'model=bert,trm,looped_bert; flops_budget=3e11,1e12,3e12; seed=0,1,2'  # 27 runs, 9m49s on an idle 2-core AVX-512 EPYC.
  config.models.bert = _point(_bert(width=64, num_layers=4, num_heads=4))
  # TRM's recursion (n = 2, T = 2, the first cycle without gradient) with one block and one supervision step: the
  # most accuracy per FLOP in trm_budget / trm_budget_back (docs/mlm.md); 2 blocks and 2 steps cost 3.8x the FLOPs
  # an update. lr 4e-3 (trm_budget_back: 6e-3 / 1e-2 lead at 1e12 but spike at 3e12, in 1 / 3 seeds of 3).
  config.models.trm = _point(_trm(width=64, num_layers=1, num_heads=4, inner_steps=2, cycles=2, depth=1), lr=4e-3)
  config.models.looped_bert = _point(_looped_bert(width=64, num_heads=4, depth=4))
  config.train.batch_size = 16  # Twice the updates per FLOP of 32: BERT at 4e12 FLOPs, loss 5.64 against 5.72 at 32.
  config.train.lr = 1e-3
  config.train.warmup_steps = 100
  config.train.b2 = 0.99
  config.train.log_every = 50
  config.train.checkpoint_every = 0
  config.eval.batch_size = 64
  config.model = _bert(width=64, num_layers=4, num_heads=4)


def _smoke(config: ml_collections.ConfigDict) -> None:
  """Under a minute on 2 CPU cores: tiny models, 2 budgets x 1 seed; the test suite runs it."""
  config.data.files = _shared_text('wiki.valid.tokens')
  config.data.eval_fraction = 0.05
  config.data.vocab_size = 512
  config.data.seq_len = 32
  config.data.num_eval_sequences = 64
  config.sweep.grid = 'model=bert,trm,looped_bert; flops_budget=2e9,6e9; seed=0'
  if config.sweep.vary:  # ablation,smoke: one model, one seed, the smaller budget.
    config.sweep.grid = 'model=bert; seed=0'
    config.flops_budget = 4e9
  config.models.bert = _point(_bert(width=32, num_layers=2, num_heads=2))
  config.models.trm = _point(_trm(width=32, num_layers=1, num_heads=2, inner_steps=1, cycles=2, depth=2))
  config.models.looped_bert = _point(_looped_bert(width=32, num_heads=2, depth=2))
  config.train.batch_size = 16
  config.train.lr = 2e-3
  config.train.warmup_steps = 10
  config.train.b2 = 0.99
  config.train.log_every = 10
  config.train.checkpoint_every = 0
  config.eval.batch_size = 32


def _earlier_quick_trm(post_norm: bool) -> ml_collections.ConfigDict:
  """The quick-scale TRM of earlier sessions (2 blocks, depth 2, lr 3e-3), which the documented sweeps start from."""
  trm = _trm(width=64, num_layers=2, num_heads=4, inner_steps=2, cycles=2, depth=2)
  trm.post_norm = post_norm
  return _point(trm, lr=3e-3)


def _ablation(config: ml_collections.ConfigDict) -> None:
  """One axis at a time around the quick-scale BERT and TRM at 1.5e12 FLOPs, 3 seeds (`ablation,smoke`: seconds).

  The axes of the earlier MoE notes: learning rate, warmup, dropout, gradient clipping. Warmup is
  given as a fraction of the run's steps (train.warmup_steps is set out of the way).
  """
  _quick(config)
  config.train.batch_size = 32  # The settings of the documented run (before the quick study's batch 16 and pre-norm TRM).
  config.models.trm = _earlier_quick_trm(post_norm=True)
  config.flops_budget = 1.5e12
  config.models.bert.train.lr = 1e-3  # The quick study's BERT lr (train.lr), stated so that the lr axis has a baseline.
  config.train.warmup_steps = 1_000_000
  config.sweep.grid = 'model=bert,trm; seed=0,1,2'
  # lr: 5 values from 5e-5 to 6e-3 with each model's own (BERT 1e-3, TRM 3e-3); warmup: none, the
  # baseline's 10% of the steps (short), 30% (long); dropout 0 (baseline), 0.05, 0.1; clip 1 (baseline), 0.5, off.
  config.sweep.vary = ('train.lr=5e-5,3e-4,1e-3,3e-3,6e-3; train.warmup_fraction=0,0.3; '
                       'model.dropout=0.05,0.1; train.grad_clip=0.5,0')


def _trm_factors(config: ml_collections.ConfigDict) -> None:
  """Why TRM stayed at the no-context level: one factor at a time around the earlier quick-scale TRM (post-norm,
  lr 3e-3), 400 updates each (equal updates), 3 seeds, with diagnostics (docs/mlm.md, "Why TRM did not learn")."""
  _quick(config)
  config.train.batch_size = 32  # The earlier quick study's batch.
  config.flops_budget = 0  # Equal updates: every run trains train.steps.
  config.train.steps = 400
  config.eval.diagnostics = True
  config.models.trm = _earlier_quick_trm(post_norm=True)  # The TRM before the fix.
  config.sweep.grid = 'model=trm; seed=0,1,2'
  config.sweep.vary = ('model.post_norm=False; model.grad_cycles=2; train.detach=False; train.deep_supervision=False; '
                       'model.init_state=input; model.inject=zy; model.embed_scale=False; train.lr=1e-3')


def _trm_fix(config: ml_collections.ConfigDict) -> None:
  """Pre-norm with each application's output normalised, at the same 400 updates, 3 seeds (pre-norm alone is the
  `model.post_norm=False` row of trm_factors)."""
  _trm_factors(config)
  config.models.trm.model.post_norm = False
  config.models.trm.model.state_norm = True
  config.sweep.vary = ''


def _trm_factors_up(config: ml_collections.ConfigDict) -> None:
  """The same question from the one-application TRM (n = T = depth = 1) upwards: each recursive setting added
  alone, and pre-norm, 400 updates, 3 seeds."""
  _trm_factors(config)
  trm = config.models.trm.model
  trm.inner_steps, trm.cycles, trm.depth = 1, 1, 1
  config.sweep.vary = 'model.inner_steps=2; model.cycles=2; model.depth=2; model.post_norm=False'


def _trm_budget(config: ml_collections.ConfigDict) -> None:
  """Which recursive TRM learns most per FLOP at the quick budgets: one change at a time around the pre-norm TRM of
  the earlier quick study (2 blocks, n = 2, T = 2, depth 2, lr 3e-3), at 1e12 and 3e12 FLOPs, seed 0 (a screen;
  trm_budget_back has 3 seeds)."""
  _quick(config)
  config.models.trm = _earlier_quick_trm(post_norm=False)
  config.sweep.grid = 'model=trm; flops_budget=1e12,3e12; seed=0'
  config.sweep.vary = ('train.lr=6e-3,1e-2; model.depth=1; model.num_layers=1; model.inner_steps=1; model.cycles=1; '
                       'model.inject=zy; model.init_state=input')


def _trm_budget_back(config: ml_collections.ConfigDict) -> None:
  """The same around the best of trm_budget combined (1 block, depth 1, lr 6e-3): one of its choices taken back at
  a time, and the lr around it, at 1e12 and 3e12 FLOPs, 3 seeds (the quick TRM is its lr=4e-3 row)."""
  _quick(config)
  config.models.trm.train.lr = 6e-3
  config.sweep.grid = 'model=trm; flops_budget=1e12,3e12; seed=0,1,2'
  config.sweep.vary = 'model.num_layers=2; model.depth=2; train.lr=3e-3,4e-3,1e-2'


def _prenorm_baselines(config: ml_collections.ConfigDict) -> None:
  """Control for the TRM's recipe: BERT and looped BERT with pre-norm blocks (and a final norm) at lr 3e-3 (the best
  of 1e-3 / 3e-3 / 6e-3 for both, seed 0), at 1e12 and 3e12 FLOPs, 3 seeds."""
  _quick(config)
  for name in ('bert', 'looped_bert'):
    config.models[name].model.post_norm = False
    config.models[name].train.lr = 3e-3
  config.sweep.grid = 'model=bert,looped_bert; flops_budget=1e12,3e12; seed=0,1,2'


def _recipe_stack(config: ml_collections.ConfigDict) -> None:
  """Control for the TRM's recursion: 4 blocks in the quick TRM's exact recipe (pre-norm RMSNorm, SwiGLU, no biases,
  LeCun init, sqrt(D) embeddings, untied head, lr 4e-3) stacked and applied once (n = 0, T = 1, depth 1: BERT's
  layout without recursion), beside the quick TRM, at 1e12 and 3e12 FLOPs, 3 seeds."""
  _quick(config)
  stack = _trm(width=64, num_layers=4, num_heads=4, inner_steps=0, cycles=1, depth=1)
  stack.inject = 'zy'  # With n = 0 the input enters through the one y update: y <- f(y0 + z0 + x).
  # A point of its own (registry name 'trm', as looped_bert is of 'bert'), at the quick TRM's lr.
  config.models.trm_stack = _point(stack, lr=config.models.trm.train.lr)
  config.sweep.grid = 'model=trm_stack,trm; flops_budget=1e12,3e12; seed=0,1,2'


_VARIANT_FNS = {
    'default': _default,
    'quick': _quick,
    'smoke': _smoke,
    'ablation': _ablation,
    'trm_factors': _trm_factors,
    'trm_factors_up': _trm_factors_up,
    'trm_fix': _trm_fix,
    'trm_budget': _trm_budget,
    'trm_budget_back': _trm_budget_back,
    'prenorm_baselines': _prenorm_baselines,
    'recipe_stack': _recipe_stack,
}
