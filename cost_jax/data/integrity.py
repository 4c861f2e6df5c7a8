"""Checks that a split's shard files are the ones its manifest describes.

* `check_shard_sizes` (fast: one `stat` per shard) is what training and testing run before
  anything is compiled: a missing or truncated shard stops the run with one line naming it.
* `sha256_file` is the checksum the manifest records; `python -m data_prep.verify DIR` compares
  it and reads every record.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

from cost_jax.data import schema


def verify_hint(data_dir: str) -> str:
  """What to do about a damaged shard (appended to error messages)."""
  return (
    f'; run `python -m data_prep.verify {data_dir}` to list the damaged shards and their '
    'videos, then re-run the same data_prep command to rewrite them'
  )


def sha256_file(path: str, chunk_bytes: int = 1 << 22) -> str:
  """Hex SHA-256 of a file's content."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def shard_size_problems(data_dir: str, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
  """(file, problem) for every shard that is missing or whose size is not the manifest's."""
  problems = []
  for shard in manifest['shards']:
    path = os.path.join(data_dir, shard['file'])
    try:
      size = os.path.getsize(path)
    except OSError as e:
      problems.append((shard['file'], f'cannot be read ({e.strerror or e})'))
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
