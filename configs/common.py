"""Config blocks every study writes the same way, each field commented once: the run, the sweep, the optimizer,
and the model sections of the two model families (models/).

Plain data: each function returns a ConfigDict; a study's config (configs/<study>.py) takes them and sets
its own values.
"""
from typing import Any

import ml_collections

ConfigDict = ml_collections.ConfigDict


def run_fields(config: ConfigDict, task: str) -> None:
  """The top-level fields of every config: which task, the seed, the budget, multi-host."""
  config.task = task  # Which task package of train/tasks/ runs this config.
  config.seed = 0  # Seed of parameter init and dropout (the `seed` axis sets it per run); data has its own seed.
  config.flops_budget = 0.0  # > 0: train.steps = this / XLA-counted FLOPs of one train step (matched compute).
  config.distributed = False  # Call jax.distributed.initialize() first (multi-host TPU/GPU).


def sweep(grid: str = '', vary: str = '') -> ConfigDict:
  """config.sweep (train/sweep.py); no axes = one run in the workdir."""
  section = ConfigDict()
  section.grid = grid  # Axes whose product is run, e.g. 'model=bert,trm; seed=0,1'; each point in W/runs/<name>.
  section.vary = vary  # Axes varied one at a time around this config's values (an ablation), crossed with the grid.
  section.shard = ''  # 'i/n': run every n-th point from the i-th (a job array into one shared workdir).
  section.compilation_cache = True  # Keep compiled steps in W/xla_cache: points differing only in seed compile once.
  return section


def train(**values: Any) -> ConfigDict:
  """config.train: AdamW, the schedule, cadences (train/optim.py, train/loop.py); `values` override defaults."""
  section = ConfigDict()
  section.steps = 1000  # Optimizer steps (replaced by flops_budget / FLOPs per step when that is > 0).
  section.batch_size = 64  # Global batch (split over all devices).
  section.lr = 1e-3  # Peak learning rate.
  section.warmup_steps = 100  # Linear warmup steps ...
  section.warmup_fraction = 1.0  # ... at most this fraction of the run's steps.
  section.schedule = 'cosine'  # After warmup: 'cosine' or 'linear' (to lr * final_lr_fraction), or 'constant'.
  section.final_lr_fraction = 0.1  # Cosine and linear: the last step's lr / peak lr.
  section.weight_decay = 0.01  # AdamW decoupled weight decay ...
  section.decay_on = 'all'  # ... on 'all' parameters, or on the weight 'matrices' only (not norms and biases).
  section.b1 = 0.9  # AdamW beta1.
  section.b2 = 0.99  # AdamW beta2.
  section.grad_clip = 1.0  # Global-norm gradient clipping (0 = off).
  # AdamW's moments: 'float32', or 'bfloat16' (both moments; the update in float32; train/adam_lowp.py).
  section.moments_dtype = 'float32'
  section.ema_decay = 0.0  # EMA of params used for evaluation (0 = off).
  section.log_every = 100  # Steps between progress lines / metrics.jsonl rows.
  section.checkpoint_every = 1000  # Steps between checkpoints (one is always written at the end).
  section.keep_checkpoints = 2  # Latest checkpoints kept (the best-on-validation one is kept apart).
  _override(section, values, 'train')
  return section


def recurrent_model(**values: Any) -> ConfigDict:
  """config.model of the recurrent-depth family: 'mlp', 'bert' or 'trm' (models/recurrent.py)."""
  model = ConfigDict()
  model.name = 'bert'  # Registry name: 'mlp' (flat MLP), 'bert' (transformer encoder), 'trm' (tiny recursive model).
  model.width = 64  # D: width of every token state.
  model.num_layers = 2  # Blocks of one application of the network.
  model.num_heads = 4  # Attention heads (mixer='attention').
  model.mlp_hidden = 0  # Channel-MLP hidden width (0 = width x mlp_ratio, 2/3 of it for SwiGLU).
  model.mlp_ratio = 4.0  # Channel-MLP width / width.
  model.mlp_multiple_of = 1  # Round derived MLP widths up to a multiple of this (TRM's code: 256).
  model.mlp_act = 'gelu'  # Channel MLP: 'gelu' (exact, as BERT) or 'swiglu'.
  model.mixer = 'attention'  # Token mixing: 'attention' or 'mlp' (an MLP over the sequence axis, TRM's mlp_t).
  model.norm = 'layernorm'  # 'layernorm' or 'rmsnorm'.
  model.norm_eps = 1e-5  # Norm epsilon.
  model.norm_scale = True  # Learnable norm scale (TRM's code: parameter-free RMSNorm).
  model.post_norm = False  # Norm after each residual add (BERT, TRM) instead of before (pre-norm).
  model.use_bias = True  # Biases in dense layers and LayerNorms.
  model.depth = 1  # Applications of the network in training (TRM: supervision steps); eval may go deeper.
  model.inner_steps = 6  # TRM n: latent updates z <- f(z + y + x) per cycle.
  model.cycles = 3  # TRM T: cycles per step; the first T-1 run without gradients.
  model.grad_cycles = 1  # TRM: cycles of a step with gradients, the last ones (1 = TRM; `cycles` = full backprop).
  model.init_state = 'random'  # TRM: initial (y, z): 'random' fixed vectors or 'input' (y = embedding, z = 0).
  model.inject = 'z'  # TRM: input x added in the z updates only ('z') or also in the y update ('zy').
  model.embed_scale = True  # TRM: token embeddings (init std 1/sqrt(D)) scaled by sqrt(D).
  model.state_norm = False  # TRM, pre-norm: normalise every application's output (bounded y, z at any depth).
  model.prefix_len = 0  # TRM: learned prefix positions (the TRM code's puzzle embedding, 16 for Sudoku).
  model.pos_emb = 'learned'  # Positional embedding: 'learned' or 'none'.
  model.attention_bias = 'none'  # Learned bias for same row/column/box cells of a grid: 'grid', 'grid_heads' or 'none'.
  model.mlp_state_dim = 512  # MLP baseline: width of its flat state.
  model.dropout = 0.0  # Dropout on attention probabilities and block outputs in training (0 = none).
  model.tie_embeddings = False  # Output head against the token embeddings (BERT's MLM head).
  model.dtype = 'float32'  # Compute dtype ('float32' or 'bfloat16'); params stay float32.
  _override(model, values, 'model')
  return model


def decoder_model(**values: Any) -> ConfigDict:
  """config.model of the causal decoder: 'llama' (stacked) or 'looped' (models/decoder.py)."""
  model = ConfigDict()
  model.name = 'llama'  # 'llama': stacked blocks; 'looped': prelude, one weight-tied core applied `loops` times, coda.
  model.width = 128  # D: width of every token state.
  model.num_layers = 4  # Blocks of the stacked decoder.
  model.num_heads = 4  # Query heads.
  model.num_kv_heads = 2  # Key/value heads (grouped-query attention; divides num_heads; 0 = num_heads).
  model.head_dim = 0  # Width of a head (0 = width / num_heads).
  model.mlp_hidden = 0  # SwiGLU hidden width (0 = 8/3 width, rounded up to a multiple of mlp_multiple_of).
  model.mlp_ratio = 4.0  # SwiGLU width / width before its 2/3 (when mlp_hidden is 0).
  model.mlp_multiple_of = 8  # Round the derived SwiGLU width up to a multiple of this.
  model.prelude_layers = 1  # Looped: blocks before the core.
  model.recurrent_layers = 1  # Looped: blocks of the weight-tied core.
  model.coda_layers = 1  # Looped: blocks after the core.
  model.loops = 1  # Looped: core applications in training (raised at eval without retraining).
  model.injection = 'add'  # Looped: the input re-injected at every application: 'add' or 'concat'.
  model.init_state = 'zeros'  # Looped: state before the first application: 'zeros' or 'prelude'.
  model.position = 'rope_abacus'  # 'rope', 'abacus' (digit position within its number), 'rope_abacus' or 'none'.
  model.max_digit_pos = 32  # Abacus table size (digit positions 1..this, offsets included).
  model.rope_base = 10000.0  # RoPE base frequency.
  model.norm_eps = 1e-6  # RMSNorm epsilon.
  model.attention_grad = 'autodiff'  # How attention's softmax is differentiated: 'autodiff' or 'flash' (models/attention.py).
  model.init = 'lecun'  # Weight matrices: 'lecun' (1/fan_in) or 'gpt' (0.02; residual projections 0.02/sqrt(2 x blocks)).
  model.tie_embeddings = False  # LM head shares the token embedding.
  model.dtype = 'float32'  # Compute dtype ('float32' or 'bfloat16'); params stay float32.
  # Each block rematerialised in the backward pass (models/remat.py): 'none', 'full' (keeps only its input),
  # 'dots' (keeps matmul results) or 'dots_no_batch' (keeps the projections, not attention's products).
  model.remat = 'none'
  model.probe_outputs = 0  # A linear read-out of the last hidden state per token for an auxiliary regression (0 = none).
  _override(model, values, 'model')
  return model


def point(**sections: Any) -> ConfigDict:
  """A named point of a sweep axis: the fields it sets, by section, e.g. point(model=dict(name='looped'))."""
  return ConfigDict({name: dict(fields) if isinstance(fields, dict) else fields for name, fields in sections.items()})


def _override(section: ConfigDict, values: dict[str, Any], where: str) -> None:
  for key, value in values.items():
    if key not in section:
      raise KeyError(f'{where}.{key} is not a field of configs/common.py:{where}')
    section[key] = value
