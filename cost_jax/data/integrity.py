"""Checks that a split's shard files are the ones its manifest describes.

* `check_shard_sizes` (fast: one `stat` per shard; on a bucket, the objects' metadata, many
  requests in flight) is what training and testing run before
  anything is compiled: a missing or truncated shard stops the run with one line naming it.
* `sha256_file` is the checksum the manifest records; `python -m data_prep.verify DIR` compares
  it and reads every record.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from typing import Any, Mapping

from cost_jax import storage
from cost_jax.data import schema

# Object metadata requests in flight when checking the shards of a bucket (each is a round trip).
_REMOTE_STAT_THREADS = 32


def verify_hint(data_dir: str) -> str:
  """What to do about a damaged shard (appended to error messages)."""
  return (
    f'; run `python -m data_prep.verify {data_dir}` to list the damaged shards and their '
    'videos, then re-run the same data_prep command to rewrite them'
  )


def sha256_file(path: str, chunk_bytes: int = 1 << 22) -> str:
  """Hex SHA-256 of a file's content (local or gs://)."""
  digest = hashlib.sha256()
  with storage.open_file(path, 'rb') as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def shard_size_problems(data_dir: str, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
  """(file, problem) for every shard that is missing or whose size is not the manifest's."""

  def size_of(shard) -> int | str:
    try:
      return storage.size(storage.join(data_dir, shard['file']))
    except Exception as e:  # OSError locally; the bucket client's NotFoundError, ...
      return f'cannot be read ({getattr(e, "strerror", None) or e})'

  shards = list(manifest['shards'])
  if storage.is_remote(data_dir):
    with concurrent.futures.ThreadPoolExecutor(_REMOTE_STAT_THREADS) as pool:
      sizes = list(pool.map(size_of, shards))
  else:
    sizes = [size_of(s) for s in shards]
  problems = []
  for shard, size in zip(shards, sizes):
    if isinstance(size, str):
      problems.append((shard['file'], size))
      continue
    if size != int(shard['num_bytes']):
      what = 'truncated' if size < int(shard['num_bytes']) else 'changed'
      problems.append(
        (shard['file'], f'is {size} bytes but the manifest says {shard["num_bytes"]} ({what})')
      )
  return problems


def check_shard_sizes(
  data_dir: str, split: str, manifest: Mapping[str, Any] | None = None
) -> dict[str, Any]:
  """Reads the manifest (unless given) and checks every shard's size; returns the manifest.

  Raises `schema.DatasetError` with one line naming the damaged shard(s) of the split, and
  FileNotFoundError for a missing data directory or manifest.
  """
  manifest = dict(manifest) if manifest is not None else schema.read_manifest(data_dir, split)
  problems = shard_size_problems(data_dir, manifest)
  if problems:
    listed = '; '.join(f'{name} {problem}' for name, problem in problems[:3])
    more = f'; and {len(problems) - 3} more' if len(problems) > 3 else ''
    raise schema.DatasetError(
      f'split {split!r} of {data_dir}: {len(problems)} damaged shard(s): {listed}{more}'
      f'{verify_hint(data_dir)}'
    )
  return manifest
