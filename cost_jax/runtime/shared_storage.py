"""Every process of a multi-host run must see one workdir and one dataset.

On a TPU pod slice or a multi-node GPU job, a local `--workdir` exists on each VM separately:
process 0 would save checkpoints no other host can restore (the flax ImageNet example hangs at
restore on multi-worker TPUs for this reason, google/flax#3364). `check_shared` finds out at the
start, before anything is trained or read:

* the workdir: process 0 publishes a marker object holding a random token there; every process
  must read the same token back from its own view of the workdir;
* the dataset: every process hashes the split manifests it sees in `data_dir` (the same path on
  every host); all hashes must equal process 0's. Identical copies on each host's local disk are
  accepted (they hold the same data), as are a bucket and a shared file system; a host that sees
  no dataset or another one is not.

Otherwise every process raises the same `ConfigError`, naming the processes that differ and
saying to use a bucket (gs://) or a shared file system.
"""

from __future__ import annotations

import hashlib
import uuid

import jax
import numpy as np
from jax.experimental import multihost_utils

from cost_jax import storage
from cost_jax.training.config_checks import ConfigError

MARKER_DIR = '.process_check'


def data_fingerprint(data_dir: str) -> bytes:
  """SHA-256 over the names and contents of the split manifests in `data_dir` (32 bytes)."""
  digest = hashlib.sha256()
  for path in storage.glob(data_dir, '*.manifest.json'):
    digest.update(storage.basename(path).encode('utf-8') + b'\0')
    digest.update(storage.read_bytes(path) + b'\0')
  return digest.digest()


def _describe(processes: np.ndarray) -> str:
  listed = ', '.join(str(int(p)) for p in processes[:8])
  return f'process{"es" if len(processes) > 1 else ""} {listed}' + (
    f' and {len(processes) - 8} more' if len(processes) > 8 else ''
  )


def check_shared(workdir: str, data_dir: str) -> None:
  """Raises ConfigError on every process unless all see process 0's workdir and dataset; a
  no-op with one process."""
  if jax.process_count() == 1:
    return
  token = np.frombuffer(uuid.uuid4().bytes, np.uint8)
  token = np.asarray(multihost_utils.broadcast_one_to_all(token), np.uint8)
  marker = storage.join(workdir, MARKER_DIR, token.tobytes().hex())
  if jax.process_index() == 0:
    storage.write_bytes(marker, token.tobytes())
  multihost_utils.sync_global_devices('cost_jax:workdir marker written')
  try:
    sees_marker = storage.read_bytes(marker) == token.tobytes()
  except (OSError, ValueError):  # missing on this host's view
    sees_marker = False
  local = np.concatenate(
    [np.asarray([sees_marker], np.uint8), np.frombuffer(data_fingerprint(data_dir), np.uint8)]
  )
  gathered = np.asarray(multihost_utils.process_allgather(local))  # (processes, 33)
  multihost_utils.sync_global_devices('cost_jax:workdir marker read')
  if jax.process_index() == 0:
    storage.rmtree(storage.join(workdir, MARKER_DIR))
  blind = np.flatnonzero(gathered[:, 0] == 0)
  if len(blind):
    raise ConfigError(
      f'--workdir={workdir} is not one directory for all {len(gathered)} processes: '
      f'{_describe(blind)} cannot read the marker process 0 wrote there (a local disk on each '
      'host?). Use a bucket (gs://...) or a shared file system for --workdir'
    )
  other = np.flatnonzero(np.any(gathered[:, 1:] != gathered[0, 1:], axis=1))
  if len(other):
    raise ConfigError(
      f'data.data_dir={data_dir} differs between processes: {_describe(other)} '
      f'{"sees" if len(other) == 1 else "see"} other split manifests than process 0 (or none). '
      'Put the dataset in a bucket (gs://...) or on a shared file system, or give every host '
      'the same copy'
    )
