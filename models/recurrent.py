"""The three recurrent-depth models: MLP baseline, BERT-style encoder, TRM.

Every model has the same interface; `models.unroll` drives it over depth:
  encode(tokens_BxL, mask_BxL=None) -> inputs   (computed once per batch)
  init_carry(inputs) -> carry                    (pytree, leading batch dim)
  step(carry, inputs) -> carry                   (ONE unit of depth)
  readout(carry, positions_GxM=None) -> dict(logits=f32[B,L,C], halt_logit=f32[B])
  __call__(tokens_BxL, mask_BxL=None)            (init only: one step + readout)
`positions_GxM` reads out only the given positions (logits f32[G,M,C]), e.g. the
masked tokens of MLM: the batch is split into G groups of B/G consecutive
sequences (G divides B), and row g indexes the tokens of its group laid end to
end (sequence i of the group, position l -> i * L + l); G = B is one row per
sequence. `mask_BxL` (1 = real token) masks padding in attention.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models import registry
from models.errors import ModelConfigError
from models.recurrent_blocks import Block, GridRelationBias, HaltHead, RecurrentConfig, make_norm

Pytree = Any  # Carry and inputs: dicts of arrays with a leading batch axis.
# BERT's initialiser for every weight matrix and embedding.
_BERT_INIT = nn.initializers.normal(0.02)


def _take_positions(x_BxLxD: jax.Array, positions_GxM: jax.Array | None) -> jax.Array:
  """x at the positions of each group of B/G sequences laid end to end: [G, M, D] (see above)."""
  if positions_GxM is None:
    return x_BxLxD
  batch, length, dim = x_BxLxD.shape
  groups = positions_GxM.shape[0]
  if batch % groups:
    raise ModelConfigError(f'readout positions have {groups} rows, which does not divide the batch of {batch}')
  x_GxTxD = x_BxLxD.reshape(groups, batch // groups * length, dim)
  return jnp.take_along_axis(x_GxTxD, positions_GxM[:, :, None], axis=1)


class RecurrentModel(nn.Module):
  """Shared fields, checks and the init-only `__call__`."""
  config: RecurrentConfig
  vocab_size: int
  num_classes: int
  seq_len: int

  @property
  def dtype(self) -> Any:
    return self.config.compute_dtype

  def _check_tokens(self, tokens_BxL: jax.Array) -> None:
    if tokens_BxL.ndim != 2 or tokens_BxL.shape[1] != self.seq_len:
      raise ValueError(f'{type(self).__name__} expects tokens of shape [B, {self.seq_len}], '
                       f'got {tuple(tokens_BxL.shape)}')

  def _attention_bias(self) -> jax.Array | None:
    """The grid relation bias [N, T, T] when model.attention_bias is 'grid' or 'grid_heads', else None."""
    return self.grid_bias() if self.config.attention_bias != 'none' else None

  def __call__(self, tokens_BxL: jax.Array, mask_BxL: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    inputs = self.encode(tokens_BxL, mask_BxL)
    carry = self.step(self.init_carry(inputs), inputs)
    return self.readout(carry)


class MlpModel(RecurrentModel):
  """Baseline on the flattened grid: h <- h + MLP(norm(h + x)), num_layers times a step."""

  def setup(self):
    cfg, width = self.config, self.config.mlp_state_dim
    self.in_proj = nn.Dense(width, use_bias=cfg.use_bias, dtype=self.dtype, name='in_proj')
    hidden = cfg.mlp_width(cfg.mlp_act, width=width)
    self.norms = [make_norm(cfg, f'norm_{i}') for i in range(cfg.num_layers)]
    self.mlps = [layers.Mlp(hidden, cfg.mlp_act, use_bias=cfg.use_bias, dtype=self.dtype,
                            name=f'mlp_{i}') for i in range(cfg.num_layers)]
    self.out_norm = make_norm(cfg, 'out_norm')
    self.head = nn.Dense(self.seq_len * self.num_classes, dtype=self.dtype, name='head')
    self.halt_head = HaltHead(self.dtype, name='halt_head')

  def encode(self, tokens_BxL: jax.Array, mask_BxL: jax.Array | None = None) -> Pytree:
    self._check_tokens(tokens_BxL)
    onehot_BxLV = jax.nn.one_hot(tokens_BxL, self.vocab_size, dtype=self.dtype).reshape(
        tokens_BxL.shape[0], -1)
    return {'x': self.in_proj(onehot_BxLV)}

  def init_carry(self, inputs: Pytree) -> Pytree:
    return {'h': jnp.zeros_like(inputs['x'])}

  def step(self, carry: Pytree, inputs: Pytree) -> Pytree:
    h_BxH, x_BxH = carry['h'], inputs['x']
    for norm, mlp in zip(self.norms, self.mlps):
      h_BxH = h_BxH + mlp(norm(h_BxH + x_BxH))
    return {'h': h_BxH.astype(self.dtype)}

  def readout(self, carry: Pytree, positions_GxM: jax.Array | None = None
              ) -> dict[str, jax.Array]:
    h_BxH = self.out_norm(carry['h'])
    logits_BxLxC = self.head(h_BxH).reshape(h_BxH.shape[0], self.seq_len, self.num_classes)
    return {'logits': _take_positions(logits_BxLxC, positions_GxM).astype(jnp.float32),
            'halt_logit': self.halt_head(h_BxH)}


class BertModel(RecurrentModel):
  """BERT-style encoder applied recurrently: h <- Encoder(h + x), h_0 = 0.

  With depth 1 this is a plain BERT encoder (embeddings + LayerNorm, num_layers
  blocks). With `tie_embeddings` the head is BERT's MLM head: Dense + GELU +
  norm, then logits against the token embeddings plus a bias.
  """

  def setup(self):
    cfg = self.config
    if cfg.tie_embeddings and self.num_classes != self.vocab_size:
      raise ModelConfigError(f'model.tie_embeddings needs num_classes ({self.num_classes}) == '
                       f'vocab_size ({self.vocab_size})')
    self.embed = layers.TokenEmbed(self.vocab_size, cfg.width, 0.02, dtype=self.dtype,
                                   name='embed')
    if cfg.pos_emb == 'learned':
      self.pos_embed = layers.PosEmbed(self.seq_len, cfg.width, 0.02, self.dtype,
                                       name='pos_embed')
    self.embed_norm = make_norm(cfg, 'embed_norm')
    self.blocks = [Block(cfg, _BERT_INIT, name=f'block_{i}')
                   for i in range(cfg.num_layers)]
    if cfg.attention_bias != 'none':
      self.grid_bias = GridRelationBias(cfg.num_heads, self.seq_len,
                                               per_head=cfg.attention_bias == 'grid_heads',
                                               name='grid_bias')
    if not cfg.post_norm:
      self.final_norm = make_norm(cfg, 'final_norm')
    if cfg.tie_embeddings:
      self.head_dense = nn.Dense(cfg.width, use_bias=cfg.use_bias, dtype=self.dtype,
                                 kernel_init=_BERT_INIT, name='head_dense')
      self.head_norm = make_norm(cfg, 'head_norm')
      self.head_bias = self.param('head_bias', nn.initializers.zeros, (self.vocab_size,),
                                  jnp.float32)
    else:
      self.head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_BERT_INIT,
                           name='head')
    self.halt_head = HaltHead(self.dtype, name='halt_head')

  def encode(self, tokens_BxL: jax.Array, mask_BxL: jax.Array | None = None) -> Pytree:
    self._check_tokens(tokens_BxL)
    x_BxLxD = self.embed(tokens_BxL)
    if self.config.pos_emb == 'learned':
      x_BxLxD = x_BxLxD + self.pos_embed()[None]
    x_BxLxD = layers.dropout(self.embed_norm(x_BxLxD), self.config.dropout, self)
    return {'x': x_BxLxD, 'mask': mask_BxL, 'bias': self._attention_bias()}

  def init_carry(self, inputs: Pytree) -> Pytree:
    return {'h': jnp.zeros_like(inputs['x'])}

  def step(self, carry: Pytree, inputs: Pytree) -> Pytree:
    h_BxLxD = carry['h'] + inputs['x']
    for block in self.blocks:
      h_BxLxD = block(h_BxLxD, inputs['mask'], inputs['bias'])
    return {'h': h_BxLxD.astype(self.dtype)}

  def readout(self, carry: Pytree, positions_GxM: jax.Array | None = None
              ) -> dict[str, jax.Array]:
    h_BxLxD = carry['h']
    if not self.config.post_norm:
      h_BxLxD = self.final_norm(h_BxLxD)
    halt_logit_B = self.halt_head(h_BxLxD.mean(axis=1))
    h_GxMxD = _take_positions(h_BxLxD, positions_GxM)
    if self.config.tie_embeddings:
      t_GxMxD = self.head_norm(layers.gelu(self.head_dense(h_GxMxD)))
      logits = self.embed.attend(t_GxMxD).astype(jnp.float32) + self.head_bias
    else:
      logits = self.head(h_GxMxD).astype(jnp.float32)
    return {'logits': logits, 'halt_logit': halt_logit_B}


class TrmModel(RecurrentModel):
  """Tiny Recursive Model (Jolicoeur-Martineau 2025): one tiny network f, states (y, z).

  One step = T cycles; a cycle is n times z <- f(z + y + x), then y <- f(y + z).
  The first T-1 cycles run under stop_gradient, the last with gradients. The
  recursion scheme's choices are fields of the config (defaults: TRM's):
  `grad_cycles` (how many of the last cycles carry gradients), `init_state`
  ('input': y starts at the input embedding and z at 0), `inject` ('zy': x is
  also added in the y update), `embed_scale` (False: no sqrt(D) on the input),
  `state_norm` (pre-norm blocks, with every application's output normalised).
  Each application sows its output in the 'intermediates' collection (y and z
  in application order, a no-op unless the caller asks for it), so a
  diagnostic can measure how much each one changes the state.
  Follows the authors' code where it differs from the paper: embeddings scaled
  by sqrt(D) (init std 1/sqrt(D)); optional learned prefix positions (their
  puzzle embedding, zero-initialised; the halting head reads position 0);
  fixed (untrained) random initial y and z; no norm before the head when the
  blocks are post-norm (f already ends with a norm).
  """

  def setup(self):
    cfg = self.config
    dim = cfg.width
    self.embed = layers.TokenEmbed(self.vocab_size, dim, 1 / math.sqrt(dim),
                                   scale=math.sqrt(dim) if cfg.embed_scale else 1.0, dtype=self.dtype,
                                   name='embed')
    if cfg.prefix_len:
      self.prefix = self.param('prefix', nn.initializers.zeros, (cfg.prefix_len, dim),
                               jnp.float32)
    if cfg.pos_emb == 'learned':
      self.pos_embed = layers.PosEmbed(cfg.prefix_len + self.seq_len, dim,
                                       1 / math.sqrt(dim), self.dtype, name='pos_embed')
    self.blocks = [Block(cfg, name=f'block_{i}') for i in range(cfg.num_layers)]
    if cfg.attention_bias != 'none':
      self.grid_bias = GridRelationBias(cfg.num_heads, self.seq_len, cfg.prefix_len,
                                               per_head=cfg.attention_bias == 'grid_heads',
                                               name='grid_bias')
    if not cfg.post_norm:
      self.final_norm = make_norm(cfg, 'final_norm')
    if cfg.state_norm and not cfg.post_norm:
      self.state_norm = make_norm(cfg, 'state_norm')
    self.head = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype, name='head')
    self.halt_head = HaltHead(self.dtype, name='halt_head')

  def encode(self, tokens_BxL: jax.Array, mask_BxL: jax.Array | None = None) -> Pytree:
    self._check_tokens(tokens_BxL)
    cfg = self.config
    dim = cfg.width
    # Looked up unscaled; the sqrt(D) scale is applied after adding positions, as TRM.
    x_BxLxD = jnp.take(self.embed.embedding, tokens_BxL, axis=0)
    if cfg.prefix_len:
      prefix_BxPxD = jnp.broadcast_to(self.prefix, (x_BxLxD.shape[0], cfg.prefix_len, dim))
      x_BxLxD = jnp.concatenate([prefix_BxPxD, x_BxLxD], axis=1)
      if mask_BxL is not None:
        mask_BxL = jnp.concatenate(
            [jnp.ones((mask_BxL.shape[0], cfg.prefix_len), mask_BxL.dtype), mask_BxL], axis=1)
    if cfg.pos_emb == 'learned':  # TRM: (token + position) / sqrt(2).
      x_BxLxD = (x_BxLxD + self.pos_embed().astype(jnp.float32)[None]) / math.sqrt(2)
    scale = math.sqrt(dim) if cfg.embed_scale else 1.0
    return {'x': (x_BxLxD * scale).astype(self.dtype), 'mask': mask_BxL,
            'bias': self._attention_bias()}

  def init_carry(self, inputs: Pytree) -> Pytree:
    shape = inputs['x'].shape
    if self.config.init_state == 'input':
      return {'y': inputs['x'], 'z': jnp.zeros_like(inputs['x'])}
    key_y, key_z = jax.random.split(jax.random.key(0))  # Fixed: not params, never trained.
    init_y_D = jax.random.truncated_normal(key_y, -2.0, 2.0, shape[-1:])
    init_z_D = jax.random.truncated_normal(key_z, -2.0, 2.0, shape[-1:])
    return {'y': jnp.broadcast_to(init_y_D.astype(self.dtype), shape),
            'z': jnp.broadcast_to(init_z_D.astype(self.dtype), shape)}

  def _net(self, h_BxLxD: jax.Array, inputs: Pytree) -> jax.Array:
    for block in self.blocks:
      h_BxLxD = block(h_BxLxD, inputs['mask'], inputs['bias'])
    if self.config.state_norm and not self.config.post_norm:
      h_BxLxD = self.state_norm(h_BxLxD)
    return h_BxLxD

  def _cycle(self, y_BxLxD: jax.Array, z_BxLxD: jax.Array,
             inputs: Pytree) -> tuple[jax.Array, jax.Array]:
    for _ in range(self.config.inner_steps):
      z_BxLxD = self._net(z_BxLxD + y_BxLxD + inputs['x'], inputs)
      self.sow('intermediates', 'z', z_BxLxD)
    y_in_BxLxD = y_BxLxD + z_BxLxD + (inputs['x'] if self.config.inject == 'zy' else 0.0)
    y_BxLxD = self._net(y_in_BxLxD, inputs)
    self.sow('intermediates', 'y', y_BxLxD)
    return y_BxLxD, z_BxLxD

  def step(self, carry: Pytree, inputs: Pytree) -> Pytree:
    y_BxLxD, z_BxLxD = carry['y'], carry['z']
    no_grad_cycles = self.config.cycles - self.config.grad_cycles
    if no_grad_cycles:
      for _ in range(no_grad_cycles):
        y_BxLxD, z_BxLxD = self._cycle(y_BxLxD, z_BxLxD, inputs)
      y_BxLxD, z_BxLxD = jax.lax.stop_gradient((y_BxLxD, z_BxLxD))
    for _ in range(self.config.grad_cycles):
      y_BxLxD, z_BxLxD = self._cycle(y_BxLxD, z_BxLxD, inputs)
    return {'y': y_BxLxD.astype(self.dtype), 'z': z_BxLxD.astype(self.dtype)}

  def readout(self, carry: Pytree, positions_GxM: jax.Array | None = None
              ) -> dict[str, jax.Array]:
    y_BxLxD = carry['y']
    if not self.config.post_norm:
      y_BxLxD = self.final_norm(y_BxLxD)
    prefix_len = self.config.prefix_len
    pooled_BxD = y_BxLxD[:, 0] if prefix_len else y_BxLxD.mean(axis=1)
    y_BxLxD = _take_positions(y_BxLxD[:, prefix_len:], positions_GxM)
    return {'logits': self.head(y_BxLxD).astype(jnp.float32),
            'halt_logit': self.halt_head(pooled_BxD)}


MODELS = {'mlp': MlpModel, 'bert': BertModel, 'trm': TrmModel}


def _register(name: str, cls: type[RecurrentModel]) -> None:
  registry.register(name, RecurrentConfig, needs=('num_classes', 'seq_len'))(
      lambda config, dims: cls(config, dims.vocab_size, dims.classes, dims.seq_len))


for _name, _cls in MODELS.items():
  _register(_name, _cls)
