"""Data parallelism: a 1-D device mesh, batch / replicated shardings and host <-> global arrays.

The state is replicated; batches are split over the 'data' axis. Each process feeds its own
slice of the global batch (`jax.make_array_from_process_local_data`). Train batches carry a
leading micro-batch axis (gradient accumulation), so they are sharded on axis 1.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def create_mesh() -> Mesh:
  """All devices of all processes on one 'data' axis."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Shards axis `batch_axis` over the devices; other axes are whole on every device."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def split_micro_batches(batch: Mapping[str, np.ndarray], num_micro: int) -> dict[str, np.ndarray]:
  """(B, ...) host arrays -> (num_micro, B / num_micro, ...): consecutive micro-batches."""
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.shape[0] % num_micro:
      raise ValueError(
        f'host batch of {value.shape[0]} ({key!r}) is not divisible by grad_accum_steps={num_micro}'
      )
    out[key] = value.reshape((num_micro, value.shape[0] // num_micro) + value.shape[1:])
  return out


def host_to_global(
  batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axis: int = 0
) -> dict[str, jax.Array]:
  """Assembles each process's host arrays into global arrays sharded on `batch_axis`.

  int64 arrays are narrowed to int32 (JAX runs without x64).
  """
  sharding = batch_sharding(mesh, batch_axis)
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.dtype == np.int64:
      value = value.astype(np.int32)
    global_shape = list(value.shape)
    global_shape[batch_axis] *= jax.process_count()
    out[key] = jax.make_array_from_process_local_data(sharding, value, tuple(global_shape))
  return out


def to_host(tree: Any) -> Any:
  """Copies (possibly multi-process) jax arrays to numpy, whole, on every process."""

  def fetch(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(fetch, tree)
