"""One code path for 1 device and N: a 1-D mesh over all devices, batch sharded on 'data'."""
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from train.errors import ConfigError

DATA_AXIS = 'data'


def maybe_initialize_distributed(enabled: bool) -> None:
  """Joins a multi-host job (TPU pod, multi-node GPU) before any device is touched."""
  if enabled:
    jax.distributed.initialize()
    logging.info('jax.distributed: process %d of %d', jax.process_index(), jax.process_count())


def make_mesh() -> Mesh:
  """A mesh with every device of every process on the 'data' axis."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'train.batch_size') -> None:
  """The global batch must split evenly over devices and processes."""
  if global_batch % mesh.size:
    raise ConfigError(f'{what}={global_batch} must be a multiple of the number of devices ({mesh.size})')


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of the batch into global arrays sharded on 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def pad_to_multiple(arrays: dict[str, np.ndarray], multiple: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Pads the leading axis to a multiple (for eval sets); returns arrays and a 0/1 validity mask."""
  n = len(next(iter(arrays.values())))
  padded_n = -(-n // multiple) * multiple
  mask = np.zeros(padded_n, np.float32)
  mask[:n] = 1.0
  out = {}
  for k, v in arrays.items():
    pad = np.zeros((padded_n - n,) + v.shape[1:], v.dtype)
    out[k] = np.concatenate([v, pad]) if padded_n > n else v
  return out, mask
