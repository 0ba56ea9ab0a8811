"""What every model config shares: one vocabulary for the common fields, and a checked builder.

Every model's config is a frozen dataclass (hashable, so a module holding it is static under jit)
derived from `ModelConfig`, whose fields are the names every model uses for the same things:
`width` (D), `num_layers`, `num_heads`, the channel MLP's width (`mlp_hidden`, or derived from
`mlp_ratio` and `mlp_multiple_of`), `norm_eps`, `tie_embeddings`, the compute `dtype` and the blocks'
rematerialisation `remat`. Parameters are float32 whatever the compute dtype.
"""
import dataclasses
import difflib
from typing import Any, Mapping, TypeVar

import jax.numpy as jnp

from models import remat as remat_lib
from models.errors import ModelConfigError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
ConfigT = TypeVar('ConfigT', bound='ModelConfig')


def mlp_hidden_dim(width: int, ratio: float, act: str, multiple_of: int = 1) -> int:
  """Hidden width of an MLP on `width` features (SwiGLU keeps the params of ratio x GELU), rounded up."""
  hidden = ratio * width * (2 / 3 if act == 'swiglu' else 1)
  hidden = max(1, round(hidden))
  return -(-hidden // multiple_of) * multiple_of


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The fields every model has, under one name each (a model config adds its own after them)."""
  name: str = ''  # Registry name (models.build).
  width: int = 256  # D: width of every token state.
  num_layers: int = 2  # Blocks (of a stacked model, or of one application of a recurrent one).
  num_heads: int = 4  # N: attention heads.
  mlp_hidden: int = 0  # Hidden width of the channel MLP; 0 = derived from mlp_ratio and mlp_multiple_of.
  mlp_ratio: float = 4.0  # Channel-MLP width / width (a SwiGLU MLP takes 2/3 of it: the parameters of a GELU one).
  mlp_multiple_of: int = 1  # A derived MLP width is rounded up to a multiple of this.
  norm_eps: float = 1e-5  # Norm epsilon.
  tie_embeddings: bool = False  # Output logits against the token embeddings.
  dtype: str = 'float32'  # Compute dtype: 'float32' | 'bfloat16'.
  # Rematerialisation of each block (models/remat.py): 'none' | 'full' | 'dots' | 'dots_no_batch'; applied by
  # the causal language models ('llama', 'looped', 'moe', 'rwkv7'), ignored by the recurrent family.
  remat: str = 'none'

  def __post_init__(self):
    if self.dtype not in DTYPES:
      raise ModelConfigError(f'model.dtype={self.dtype!r} is not one of {list(DTYPES)}')
    if self.remat not in remat_lib.POLICIES:
      raise ModelConfigError(f'model.remat={self.remat!r} is not one of {list(remat_lib.POLICIES)}')
    for key in ('width', 'num_layers', 'num_heads', 'mlp_multiple_of'):
      if getattr(self, key) < 1:
        raise ModelConfigError(f'model.{key}={getattr(self, key)} must be an int >= 1')
    if self.mlp_hidden < 0:
      raise ModelConfigError(f'model.mlp_hidden={self.mlp_hidden} must be >= 0 (0: from model.mlp_ratio)')
    if self.mlp_ratio <= 0:
      raise ModelConfigError(f'model.mlp_ratio={self.mlp_ratio} must be > 0')
    if self.norm_eps <= 0:
      raise ModelConfigError(f'model.norm_eps={self.norm_eps} must be > 0')

  @property
  def compute_dtype(self) -> Any:
    return DTYPES[self.dtype]

  def mlp_width(self, act: str, width: int | None = None) -> int:
    """The channel MLP's hidden width on `width` features (default: model.width)."""
    if self.mlp_hidden and width is None:
      return self.mlp_hidden
    return mlp_hidden_dim(self.width if width is None else width, self.mlp_ratio, act, self.mlp_multiple_of)

  @classmethod
  def from_config(cls: type[ConfigT], cfg: Any) -> ConfigT:
    """This config from a ConfigDict, mapping or object (an instance passes through), every key and type checked.

    A key that is not a field, a missing required field, or a value of the wrong type raises ModelConfigError
    naming `model.<key>`; an int is taken as a float.
    """
    if isinstance(cfg, cls):
      return cfg
    if not isinstance(cfg, Mapping):
      cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else vars(cfg)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(cfg) - set(names))
    if unknown:
      hints = [f'model.{k}' + (f' (did you mean {close[0]!r}?)' if (close := difflib.get_close_matches(k, names, 1))
                               else '') for k in unknown]
      raise ModelConfigError(f'unknown model field {", ".join(hints)}; allowed: {", ".join(names)}')
    kwargs = {}
    for field in fields:
      if field.name not in cfg:
        continue
      value, kind = cfg[field.name], _field_type(field)
      if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
      if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelConfigError(f'model.{field.name}={value!r} should be of type {kind.__name__}')
      kwargs[field.name] = value
    return cls(**kwargs)


def _field_type(field: dataclasses.Field) -> type:
  """The type a value must have: the default's, else the annotated type (str where that is not a class)."""
  if field.default is not dataclasses.MISSING:
    return type(field.default)
  return field.type if isinstance(field.type, type) else str


def check_choices(config: ModelConfig, choices: dict[str, tuple[Any, ...]]) -> None:
  """Each field named in `choices` holds one of its values (else ModelConfigError naming it)."""
  for key, allowed in choices.items():
    if getattr(config, key) not in allowed:
      raise ModelConfigError(f'model.{key}={getattr(config, key)!r} is not one of {list(allowed)}')
