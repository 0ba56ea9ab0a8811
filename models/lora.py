"""LoRA (Hu et al. 2021, arXiv 2106.09685) as a transformation of a parameter tree, for any model of models/.

A LoRA run's parameters are {'base': the model's own tree, 'lora': adapters}; an adapter of a kernel W (the
`kernel` of a module whose name is a target) is a pair a [fan_in, r], b [r, fan_out], and the model runs with

  W' = W + (alpha / r) * reshape(a @ b)          (merge; the base is held fixed: no gradient reaches it)

which is the adapted layer x W + (alpha / r) (x a) b written as one matrix, so the merged tree is also what an
export writes. b starts at zero (the adapted model is the base model at step 0), a ~ normal(0, 1 / fan_in).
Kernels of DenseGeneral layers read their input on the first axes: one axis, or two for `TWO_INPUT_AXES`
(attention's output projection, heads x head width -> width).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models.errors import ModelConfigError

TWO_INPUT_AXES = ('out',)  # Kernels [heads, head width, width]: the first two axes are the input.


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  rank: int  # r; 0 = no adapters (every parameter trains).
  alpha: float  # The adapters' product is scaled by alpha / r.
  targets: tuple[str, ...]  # Names of the modules whose kernels get adapters.

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  @classmethod
  def from_fields(cls, rank: int, alpha: float, targets: str) -> 'LoRAConfig':
    names = tuple(t.strip() for t in str(targets).split(',') if t.strip())
    if int(rank) < 0 or float(alpha) <= 0:
      raise ModelConfigError(f'train.lora_rank={rank} must be >= 0 and train.lora_alpha={alpha} > 0')
    if int(rank) and not names:
      raise ModelConfigError('train.lora_targets names no module (e.g. "query,key,value,out,gate_up,down")')
    return cls(int(rank), float(alpha), names)


def _split(shape: tuple[int, ...], name: str) -> tuple[int, int]:
  n_in = 2 if name in TWO_INPUT_AXES else 1
  return int(np.prod(shape[:n_in])), int(np.prod(shape[n_in:]))


def _targets(tree: Any, targets: tuple[str, ...], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  """Paths of the modules named in `targets` that hold a `kernel`, in tree order."""
  out = []
  for key, value in tree.items():
    if isinstance(value, dict) or hasattr(value, 'items'):
      if key in targets and 'kernel' in value:
        out.append(prefix + (key,))
      else:
        out += _targets(value, targets, prefix + (key,))
  return out


def _kernel_modules(tree: Any) -> set[str]:
  out = set()
  for key, value in tree.items():
    if hasattr(value, 'items'):
      out |= {key} if 'kernel' in value else _kernel_modules(value)
  return out


def init(params: Any, config: LoRAConfig, rng: jax.Array) -> dict[str, Any]:
  """Adapters for every targeted kernel of `params` (a mirror of their paths, each {'a', 'b'})."""
  paths = _targets(params, config.targets)
  missing = sorted(set(config.targets) - {path[-1] for path in paths})
  if missing:
    raise ModelConfigError(f'train.lora_targets: {", ".join(missing)} names no module with a kernel (the model has '
                           f'{", ".join(sorted(_kernel_modules(params)))})')
  adapters: dict[str, Any] = {}
  for i, path in enumerate(paths):
    kernel = params
    for key in path:
      kernel = kernel[key]
    fan_in, fan_out = _split(kernel['kernel'].shape, path[-1])
    node = adapters
    for key in path[:-1]:
      node = node.setdefault(key, {})
    a = jax.random.normal(jax.random.fold_in(rng, i), (fan_in, config.rank), jnp.float32) / np.sqrt(fan_in)
    node[path[-1]] = {'a': a, 'b': jnp.zeros((config.rank, fan_out), jnp.float32)}
  return adapters


def merge(base: Any, adapters: Any, scale: float) -> Any:
  """The model's tree with every adapted kernel replaced by W + scale * a @ b (no gradient into the base)."""
  def walk(b: Any, a: Any) -> Any:
    if a is None:
      return jax.lax.stop_gradient(b)
    if set(a) == {'a', 'b'}:
      kernel = b['kernel']
      delta = (scale * (a['a'] @ a['b'])).reshape(kernel.shape).astype(kernel.dtype)
      return dict(b, kernel=jax.lax.stop_gradient(kernel) + delta)
    return {k: walk(v, a.get(k)) for k, v in b.items()}
  return walk(base, adapters)


def view(params: Any, config: LoRAConfig | None) -> Any:
  """The model's parameters of a run's tree: merged where it has adapters, as they are otherwise."""
  if config is None or not config.rank:
    return params
  return merge(params['base'], params['lora'], config.scale)


def labels(params: Any) -> Any:
  """'frozen' on the base, 'adapter' on the adapters: the optimizer's partition of a LoRA run's tree."""
  return {'base': jax.tree.map(lambda _: 'frozen', params['base']),
          'lora': jax.tree.map(lambda _: 'adapter', params['lora'])}
