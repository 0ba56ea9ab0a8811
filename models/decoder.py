"""Llama-style causal decoder, stacked or looped (a weight-tied core), with a KV cache.

Blocks are pre-norm: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); attention
is causal, grouped-query (G key/value heads shared by groups of N/G query
heads) with RoPE on q and k. Positions: 'rope', 'abacus' (McLeish et al. 2024:
a learned table indexed by each token's place in its digit run, added to the
token embedding), both, or 'none'. The looped form (Huginn / McLeish) runs a
prelude once, a core of `recurrent_layers` blocks `loops` times with the same
weights (a scan, so compile time does not grow with the number of loops, which
may be changed at call time), then a coda.

Parameters are float32; activations use `DecoderConfig.dtype`; norm statistics,
RoPE rotations, attention logits / softmax and output logits are float32.

FLOPs: this module has no analytic FLOP formula; the study counts training FLOPs
with XLA's cost analysis of the compiled step. XLA counts a scan's body once,
not once per iteration, so compile the step that is counted with
`scan_unroll=True` (every loop of the core unrolled) for a looped model.

KV cache (from `Decoder.prefill`, advanced by `Decoder.decode`):
  {'kv': {name: {'k': [B, S, G, K], 'v': [B, S, G, K]}},  # stacked: name = block_i
         # looped: prelude_i, coda_i as above and
         # 'core': {block_j: {'k': [T, B, S, G, K], 'v': ...}} with T = loops,
   'mask_BxS': bool[B, S],  # False: a key never to attend to (a prompt pad).
   'pos_offset_B': int32[B]}  # RoPE position of slot s is s - pos_offset_B.
Slot s < P holds prompt position s; the token fed at decode index i is written
to slot i (i = P for the first generated token); S is `max_len` of prefill.
"""
import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import attention
from models import aux as aux_lib
from models import layers
from models import registry
from models import remat
from models.config import ModelConfig, check_choices
from models.errors import ModelConfigError

Pytree = Any
Cache = dict[str, Any]
Rope = tuple[jax.Array, jax.Array]  # (sin, cos), float32[B, L, K/2].

POSITIONS = ('rope', 'abacus', 'rope_abacus', 'none')
NAMES = ('llama', 'looped')
_CHOICES = {
    'name': NAMES,
    'injection': ('add', 'concat'),
    'init_state': ('zeros', 'prelude'),
    'position': POSITIONS,
    'attention_grad': attention.GRADS,
    'init': ('lecun', 'gpt'),
}
_EMBED_STD = 0.02


@dataclasses.dataclass(frozen=True)
class DecoderConfig(ModelConfig):
  """A `Decoder`: 'llama' (stacked blocks) or 'looped' (prelude, a weight-tied core applied `loops` times, coda).

  The shared fields are ModelConfig's (num_layers: blocks of the stacked decoder; the channel MLP is SwiGLU,
  8/3 width rounded up to a multiple of 8 by default); fields that are 0 by default are derived.
  """
  names: ClassVar[tuple[str, ...]] = NAMES  # The values of `name` this config class builds.
  name: str = 'llama'
  width: int = 256
  num_heads: int = 8
  num_layers: int = 4
  mlp_multiple_of: int = 8
  norm_eps: float = 1e-6
  num_kv_heads: int = 0  # G: key/value heads (grouped-query attention); N % G == 0; 0 means N.
  head_dim: int = 0  # K: width of one head; 0 means D // N.
  prelude_layers: int = 1  # Looped: blocks run once before the core (0: the embeddings).
  recurrent_layers: int = 1  # Looped: blocks of the weight-tied core.
  coda_layers: int = 1  # Looped: blocks run once after the core.
  loops: int = 4  # Looped: k, core applications in training; `loops=` at call time overrides.
  # Looped: input of each core application, with e = prelude output and s = state:
  # 'add': s + W e; 'concat': a linear map of [s, e] to D, computed as W_s s + W e.
  injection: str = 'add'
  init_state: str = 'zeros'  # Looped: the state before the first application: zeros or e.
  position: str = 'rope'  # 'rope' | 'abacus' | 'rope_abacus' | 'none' (causal mask only).
  max_digit_pos: int = 128  # Abacus rows, for digit positions 1..max_digit_pos (larger: clipped).
  rope_base: float = 10000.0  # RoPE: frequency of pair i is rope_base ** (-2i / K).
  attention_grad: str = 'autodiff'  # How attention's softmax is differentiated (models/attention.py).
  # Weight matrices: 'lecun' (LeCun normal, 1/fan_in) or 'gpt' (GPT-2's: normal 0.02, the projections into the
  # residual stream 0.02 / sqrt(2 x blocks run)); embeddings are normal 0.02 either way.
  init: str = 'lecun'
  # A linear read-out of the final (normed) hidden state with this many outputs per token, sown as the probe
  # 'probe' (models/aux.py) for an objective to regress (0 = none); it does not change the logits.
  probe_outputs: int = 0
  # Dropout on each block's attention and MLP outputs before their residual add, in training (the objective passes
  # a 'dropout' rng); 0 = none.
  dropout: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    check_choices(self, dict(_CHOICES, name=self.names))
    for key in ('recurrent_layers', 'loops', 'max_digit_pos'):
      if getattr(self, key) < 1:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be an int >= 1')
    for key in ('num_kv_heads', 'head_dim', 'prelude_layers', 'coda_layers', 'probe_outputs'):
      if getattr(self, key) < 0:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be an int >= 0')
    if self.num_heads % self.kv_heads:
      raise ModelConfigError(
          f'model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads} '
          '(0 means num_heads)')
    if not self.head_dim and self.width % self.num_heads:
      raise ModelConfigError(
          f'model.width={self.width} is not divisible by model.num_heads={self.num_heads}; '
          'set model.head_dim')
    if self.uses_rope and self.head_width % 2:
      raise ModelConfigError(f'model.head_dim={self.head_width} must be even for '
                             f'model.position={self.position!r}')
    if not 0 <= self.dropout < 1:
      raise ModelConfigError(f'model.dropout={self.dropout} must be in [0, 1)')
    if self.rope_base <= 0:
      raise ModelConfigError(f'model.rope_base={self.rope_base} must be > 0')

  @property
  def looped(self) -> bool:
    return self.name == 'looped'

  @property
  def blocks_run(self) -> int:
    """Blocks a token passes through (a looped model's core counted once per loop)."""
    if self.looped:
      return self.prelude_layers + self.loops * self.recurrent_layers + self.coda_layers
    return self.num_layers

  def kernel_inits(self) -> tuple[Any, Any]:
    """(init of the weight matrices, init of the projections into the residual stream)."""
    if self.init == 'gpt':
      return nn.initializers.normal(0.02), nn.initializers.normal(0.02 / np.sqrt(2 * self.blocks_run))
    return layers.default_kernel_init, layers.default_kernel_init

  def channel_mlp(self, name: str) -> nn.Module:
    """The channel MLP of every block (a subclass may swap it, e.g. models/moe.py's experts)."""
    kernel_init, out_init = self.kernel_inits()
    return layers.Mlp(self.mlp_width('swiglu'), 'swiglu', use_bias=False, dtype=self.compute_dtype,
                      kernel_init=kernel_init, out_init=out_init, name=name)

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def head_width(self) -> int:
    return self.head_dim or self.width // self.num_heads

  @property
  def uses_rope(self) -> bool:
    return self.position in ('rope', 'rope_abacus')

  @property
  def uses_abacus(self) -> bool:
    return self.position in ('abacus', 'rope_abacus')


def loops_arg(config: Any, loops: int | None = None) -> dict[str, int]:
  """The `loops=` keyword of a call (`loops` or the trained number): only a looped decoder takes one."""
  return {'loops': loops or config.loops} if getattr(config, 'looped', False) else {}


def check_loops(config: DecoderConfig, loops: int | None) -> int:
  """The number of core applications to run: `loops` or config.loops (0 for a stacked decoder)."""
  if not config.looped:
    if loops is not None:
      raise ValueError(f'loops={loops!r} given to a stacked decoder (model.name="llama")')
    return 0
  loops = config.loops if loops is None else loops
  if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
    raise ValueError(f'loops must be a Python int >= 1, got {loops!r}')
  return loops


def rope_angles(positions_BxL: jax.Array, head_dim: int, base: float) -> Rope:
  """(sin, cos) of the RoPE angles position * base ** (-2i / K), float32[B, L, K/2]."""
  inv_freq_H = np.asarray(base ** (-np.arange(0, head_dim, 2) / head_dim), np.float32)
  angle_BxLxH = positions_BxL.astype(jnp.float32)[..., None] * inv_freq_H
  return jnp.sin(angle_BxLxH), jnp.cos(angle_BxLxH)


def apply_rope(x_BxLxNxK: jax.Array, rope: Rope) -> jax.Array:
  """Rotates pairs (x_i, x_{i+K/2}) of every head by the angles of `rope_angles` (in float32)."""
  sin_BxLx1xH, cos_BxLx1xH = (a[:, :, None, :] for a in rope)
  x1, x2 = jnp.split(x_BxLxNxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_BxLx1xH - x2 * sin_BxLx1xH,
                         x2 * cos_BxLx1xH + x1 * sin_BxLx1xH], axis=-1)
  return out.astype(x_BxLxNxK.dtype)


class AbacusEmbed(nn.Module):
  """Abacus embedding: row p-1 of a learned table for digit position p >= 1, zero for p = 0."""
  max_digit_pos: int
  dim: int
  init_std: float = _EMBED_STD
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, digit_pos_BxL: jax.Array) -> jax.Array:
    table_PxD = self.param('embedding', nn.initializers.normal(self.init_std),
                           (self.max_digit_pos, self.dim), jnp.float32)
    row_BxL = jnp.clip(digit_pos_BxL - 1, 0, self.max_digit_pos - 1)
    x_BxLxD = jnp.take(table_PxD, row_BxL, axis=0)
    return jnp.where((digit_pos_BxL > 0)[..., None], x_BxLxD, 0.0).astype(self.dtype)


class CausalSelfAttention(nn.Module):
  """Grouped-query self-attention with RoPE; with `kv`, writes k, v at slot `index` first."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, rope: Rope | None, mask_BxLxS: jax.Array,
               kv: Pytree | None = None, index: jax.Array | None = None
               ) -> tuple[jax.Array, Pytree | None]:
    cfg = self.config
    dtype = cfg.compute_dtype
    kernel_init, out_init = cfg.kernel_inits()
    project = lambda heads, name: nn.DenseGeneral(  # pylint: disable=unnecessary-lambda-assignment
        (heads, cfg.head_width), use_bias=False, dtype=dtype, kernel_init=kernel_init, name=name)(x_BxLxD)
    q_BxLxNxK = project(cfg.num_heads, 'query')
    k_BxLxGxK, v_BxLxGxK = project(cfg.kv_heads, 'key'), project(cfg.kv_heads, 'value')
    if rope is not None:
      q_BxLxNxK, k_BxLxGxK = apply_rope(q_BxLxNxK, rope), apply_rope(k_BxLxGxK, rope)
    if kv is not None:  # Keys and values of every slot: the cache with this call's written in.
      k_BxLxGxK = jax.lax.dynamic_update_slice_in_dim(
          kv['k'], k_BxLxGxK.astype(kv['k'].dtype), index, axis=1)
      v_BxLxGxK = jax.lax.dynamic_update_slice_in_dim(
          kv['v'], v_BxLxGxK.astype(kv['v'].dtype), index, axis=1)
      kv = {'k': k_BxLxGxK, 'v': v_BxLxGxK}
    out_BxLxNxK = attention.attention(q_BxLxNxK, k_BxLxGxK, v_BxLxGxK, mask_BxLxS=mask_BxLxS,
                                      grad=cfg.attention_grad)
    out_BxLxD = nn.DenseGeneral(cfg.width, axis=(-2, -1), use_bias=False, dtype=dtype, kernel_init=out_init,
                                name='out')(out_BxLxNxK)
    return out_BxLxD, kv


class DecoderBlock(nn.Module):
  """Pre-norm block: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, rope: Rope | None, mask_BxLxS: jax.Array,
               kv: Pytree | None = None, index: jax.Array | None = None
               ) -> tuple[jax.Array, Pytree | None]:
    cfg = self.config
    dtype = cfg.compute_dtype
    norm_attention = nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, name='norm_attention')
    norm_mlp = nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, name='norm_mlp')
    h_BxLxD, kv = CausalSelfAttention(cfg, name='attention')(
        norm_attention(x_BxLxD), rope, mask_BxLxS, kv, index)
    x_BxLxD = x_BxLxD + layers.dropout(h_BxLxD, cfg.dropout, self)
    mlp = cfg.channel_mlp('mlp')
    return (x_BxLxD + layers.dropout(mlp(norm_mlp(x_BxLxD)), cfg.dropout, self)).astype(dtype), kv


class LoopedCore(nn.Module):
  """One application of the weight-tied core: state -> blocks(injection(state, prelude))."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, state_BxLxD: jax.Array, scanned: tuple[Pytree | None, jax.Array], inject_BxLxD: jax.Array,
               rope: Rope | None, mask_BxLxS: jax.Array, index: jax.Array | None, active: jax.Array | None
               ) -> tuple[jax.Array, Pytree | None]:
    """One application; `scanned` is (this application's kv or None, its number from 0 or None).
    With `active` (an int scalar, may be traced), applications from number `active` on keep the state."""
    kv, step = scanned
    cfg = self.config
    if cfg.injection == 'add':
      x_BxLxD = state_BxLxD + inject_BxLxD
    else:  # Linear of [state, prelude]: its prelude half (inject) is computed once, outside.
      x_BxLxD = nn.Dense(cfg.width, use_bias=False, dtype=cfg.compute_dtype, kernel_init=cfg.kernel_inits()[0],
                         name='state_proj')(state_BxLxD) + inject_BxLxD
    new_kv = {}
    block_cls = remat.remat(DecoderBlock, cfg.remat)
    for i in range(cfg.recurrent_layers):
      name = f'block_{i}'
      x_BxLxD, new_kv[name] = block_cls(cfg, name=name)(
          x_BxLxD, rope, mask_BxLxS, None if kv is None else kv[name], index)
    x_BxLxD = x_BxLxD.astype(cfg.compute_dtype)
    if active is not None:
      x_BxLxD = jnp.where(step < active, x_BxLxD, state_BxLxD)
    return x_BxLxD, (None if kv is None else new_kv)


def init_cache(config: DecoderConfig, batch: int, max_len: int, loops: int | None = None) -> Cache:
  """An empty KV cache of `max_len` slots (all keys allowed, offsets 0); see the module docstring."""
  loops = check_loops(config, loops) if config.looped else 0
  shape = (batch, max_len, config.kv_heads, config.head_width)

  def empty(*lead: int) -> Pytree:
    return {'k': jnp.zeros(lead + shape, config.compute_dtype),
            'v': jnp.zeros(lead + shape, config.compute_dtype)}

  if config.looped:
    kv = {f'prelude_{i}': empty() for i in range(config.prelude_layers)}
    kv['core'] = {f'block_{i}': empty(loops) for i in range(config.recurrent_layers)}
    kv.update({f'coda_{i}': empty() for i in range(config.coda_layers)})
  else:
    kv = {f'block_{i}': empty() for i in range(config.num_layers)}
  return {'kv': kv, 'mask_BxS': jnp.ones((batch, max_len), bool),
          'pos_offset_B': jnp.zeros((batch,), jnp.int32)}


def cache_loops(cache: Cache) -> int:
  """Core applications a looped decoder's cache was built for (0 for a stacked one)."""
  core = cache['kv'].get('core')
  return 0 if core is None else jax.tree.leaves(core)[0].shape[0]


def positions_from_mask(mask_BxL: jax.Array) -> jax.Array:
  """int32[B, L]: the number of real tokens before each position (0 at the first real one)."""
  return jnp.maximum(jnp.cumsum(mask_BxL.astype(jnp.int32), axis=1) - 1, 0)


class Decoder(nn.Module):
  """Causal LM over `vocab_size` tokens: stacked blocks, or prelude + looped core + coda.

  `__call__` is the full causal forward (training, teacher forcing); `prefill` and
  `decode` run it with a KV cache (see models/generate.py). Positions: RoPE
  position = number of real tokens before a token; `digit_pos` (int, 0 = not a
  digit) is required when config.position uses Abacus and ignored otherwise.
  """
  config: DecoderConfig
  vocab_size: int

  def __call__(self, tokens_BxL: jax.Array, *, digit_pos_BxL: jax.Array | None = None,
               mask_BxL: jax.Array | None = None, loops: int | None = None,
               active_loops: jax.Array | None = None, scan_unroll: int | bool = 1) -> jax.Array:
    """float32[B, L, V] next-token logits.

    Args:
      tokens_BxL: int tokens.
      digit_pos_BxL: Abacus digit positions (0 = not a digit).
      mask_BxL: optional, False hides a key (padding) and does not advance the RoPE
        position; None: every token is real. Right padding needs no mask (causal).
      loops: core applications of a looped model (static Python int; default config.loops).
      active_loops: optional int scalar (may be traced, e.g. drawn per batch in training, as
        Huginn): only the first `active_loops` of the `loops` applications change the state;
        the compute is that of `loops` applications.
      scan_unroll: unroll of the scan over loops; True unrolls fully (XLA cost analysis
        then counts every application, at a compile time growing with loops).
    """
    length = tokens_BxL.shape[1]
    causal_LxL = jnp.tril(jnp.ones((length, length), bool))
    if mask_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens_BxL.shape)
      mask_BxLxL = jnp.broadcast_to(causal_LxL, (tokens_BxL.shape[0], length, length))
    else:
      positions_BxL = positions_from_mask(mask_BxL)
      mask_BxLxL = causal_LxL[None] & mask_BxL.astype(bool)[:, None, :]
    if active_loops is not None and not self.config.looped:
      raise ValueError('active_loops is for a looped decoder (model.name="looped")')
    logits_BxLxV, _ = self._run(tokens_BxL, digit_pos_BxL, positions_BxL, mask_BxLxL, None, None,
                                check_loops(self.config, loops), scan_unroll, False, active_loops)
    return logits_BxLxV

  def prefill(self, tokens_BxP: jax.Array, mask_BxP: jax.Array, *, max_len: int,
              digit_pos_BxP: jax.Array | None = None, loops: int | None = None
              ) -> tuple[jax.Array, Cache]:
    """Runs a LEFT-padded prompt (mask_BxP False at pads) into a cache of `max_len` slots.

    Returns (float32[B, V] logits after the last prompt token, cache). `max_len` and
    `loops` are static Python ints; decode then writes slots P, P+1, ... < max_len.
    """
    batch, length = tokens_BxP.shape
    if not isinstance(max_len, int) or max_len < length:
      raise ValueError(f'prefill: max_len={max_len!r} must be an int >= the prompt length {length}')
    loops = check_loops(self.config, loops)
    cache = init_cache(self.config, batch, max_len, loops)
    mask_BxP = mask_BxP.astype(bool)
    mask_BxS = jnp.concatenate([mask_BxP, jnp.ones((batch, max_len - length), bool)], axis=1)
    slot_S, query_P = jnp.arange(max_len), jnp.arange(length)
    mask_BxPxS = (slot_S[None, :] <= query_P[:, None])[None] & mask_BxS[:, None, :]
    logits_Bx1xV, kv = self._run(tokens_BxP, digit_pos_BxP, positions_from_mask(mask_BxP),
                                 mask_BxPxS, cache['kv'], jnp.zeros((), jnp.int32), loops, 1, True)
    offset_B = (length - jnp.sum(mask_BxP, axis=1)).astype(jnp.int32)
    return logits_Bx1xV[:, 0], {'kv': kv, 'mask_BxS': mask_BxS, 'pos_offset_B': offset_B}

  def decode(self, tokens_B: jax.Array, cache: Cache, index: jax.Array, *,
             digit_pos_B: jax.Array | None = None, loops: int | None = None
             ) -> tuple[jax.Array, Cache]:
    """Feeds one token per example, written to cache slot `index` (int scalar, may be traced).

    Returns (float32[B, V] logits for the token after it, updated cache). A looped
    model runs as many loops as the cache holds; `loops`, if given, must match.
    """
    held = cache_loops(cache)
    if loops is not None and check_loops(self.config, loops) != held:
      raise ValueError(f'decode: loops={loops} but the cache was prefilled with loops={held}')
    index = jnp.asarray(index, jnp.int32)
    positions_Bx1 = (index - cache['pos_offset_B'])[:, None]
    max_len = cache['mask_BxS'].shape[1]
    mask_Bx1xS = (jnp.arange(max_len) <= index)[None, None, :] & cache['mask_BxS'][:, None, :]
    digit_pos_Bx1 = None if digit_pos_B is None else digit_pos_B[:, None]
    logits_Bx1xV, kv = self._run(tokens_B[:, None], digit_pos_Bx1, positions_Bx1, mask_Bx1xS,
                                 cache['kv'], index, held, 1, True)
    return logits_Bx1xV[:, 0], dict(cache, kv=kv)

  @nn.compact
  def _run(self, tokens_BxL: jax.Array, digit_pos_BxL: jax.Array | None, positions_BxL: jax.Array,
           mask_BxLxS: jax.Array, kv: Pytree | None, index: jax.Array | None, loops: int,
           scan_unroll: int | bool, last_only: bool, active_loops: jax.Array | None = None
           ) -> tuple[jax.Array, Pytree | None]:
    """Embeddings, blocks (reading and writing `kv` at `index` when given), norm, head."""
    cfg = self.config
    dtype = cfg.compute_dtype
    embed = layers.TokenEmbed(self.vocab_size, cfg.width, _EMBED_STD, dtype=dtype, name='embed')
    x_BxLxD = embed(tokens_BxL)
    if cfg.uses_abacus:
      if digit_pos_BxL is None:
        raise ValueError(f'model.position={cfg.position!r} needs digit_pos (0 = not a digit)')
      x_BxLxD = x_BxLxD + AbacusEmbed(cfg.max_digit_pos, cfg.width, dtype=dtype,
                                      name='abacus')(digit_pos_BxL)
    rope = rope_angles(positions_BxL, cfg.head_width, cfg.rope_base) if cfg.uses_rope else None
    new_kv = {}
    block_cls = remat.remat(DecoderBlock, cfg.remat)

    def blocks(prefix: str, count: int, h_BxLxD: jax.Array) -> jax.Array:
      for i in range(count):
        name = f'{prefix}_{i}'
        h_BxLxD, new_kv[name] = block_cls(cfg, name=name)(
            h_BxLxD, rope, mask_BxLxS, None if kv is None else kv[name], index)
      return h_BxLxD

    if not cfg.looped:
      x_BxLxD = blocks('block', cfg.num_layers, x_BxLxD)
    else:
      prelude_BxLxD = blocks('prelude', cfg.prelude_layers, x_BxLxD)
      inject_BxLxD = nn.Dense(cfg.width, use_bias=False, dtype=dtype, kernel_init=cfg.kernel_inits()[0],
                              name='inject')(prelude_BxLxD)
      state_BxLxD = (prelude_BxLxD if cfg.init_state == 'prelude'
                     else jnp.zeros_like(prelude_BxLxD)).astype(dtype)
      core = nn.scan(LoopedCore, variable_broadcast='params', split_rngs={'params': False},
                     in_axes=(0,) + (nn.broadcast,) * 5, length=loops, unroll=scan_unroll)
      steps_T = None if active_loops is None else jnp.arange(loops, dtype=jnp.int32)
      scanned = (None if kv is None else kv['core'], steps_T)
      x_BxLxD, new_kv['core'] = core(cfg, name='core')(
          state_BxLxD, scanned, inject_BxLxD, rope, mask_BxLxS, index, active_loops)
      x_BxLxD = blocks('coda', cfg.coda_layers, x_BxLxD)
    if last_only:
      x_BxLxD = x_BxLxD[:, -1:]
    x_BxLxD = nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, name='final_norm')(x_BxLxD)
    if cfg.probe_outputs:
      probe_BxLxP = nn.Dense(cfg.probe_outputs, dtype=dtype, name='probe_head')(x_BxLxD)
      self.sow(aux_lib.PROBES, 'probe', probe_BxLxP.astype(jnp.float32))
    if cfg.tie_embeddings:
      logits_BxLxV = embed.attend(x_BxLxD)
    else:
      logits_BxLxV = nn.Dense(self.vocab_size, use_bias=False, dtype=dtype, kernel_init=cfg.kernel_inits()[0],
                              name='head')(x_BxLxD)
    return logits_BxLxV.astype(jnp.float32), (None if kv is None else new_kv)


for _name in NAMES:
  registry.register(_name, DecoderConfig, family='causal_lm')(lambda config, dims: Decoder(config, dims.vocab_size))
