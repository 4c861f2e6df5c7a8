"""A converted dataset on disk, as the input pipeline sees it: manifest, TFDS metadata, shards.

`get_dataset_info` is the check that training, testing and analysis run before anything is
compiled: schema version, manifest, shard sizes (fast) and TFDS's split sizes. `host_slices`
tells each process which records to read, using TFDS's per-process split
(`tfds.split_for_jax_process`): every host gets a contiguous range of the split, of equal size
within one example, whatever the number of shards.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np

from cost_jax import storage
from cost_jax.data import integrity, schema


@dataclasses.dataclass(frozen=True)
class ShardSlice:
  """Records [skip, stop) of one shard file; `first_index` is the global index (position in
  shard order) of record `skip`."""

  path: str
  skip: int
  stop: int
  first_index: int

  @property
  def num_examples(self) -> int:
    return self.stop - self.skip


def load_builder(data_dir: str) -> Any:
  """`tfds.builder_from_directory(data_dir)`; DatasetError (one line) if TFDS cannot load it."""
  import tensorflow_datasets as tfds

  info_file = storage.join(data_dir, 'dataset_info.json')
  if not storage.exists(info_file):
    raise schema.DatasetError(
      f'{info_file} is missing: {data_dir} was not written by this version of data_prep (it '
      'writes TFDS datasets, schema version '
      f'{schema.SCHEMA_VERSION}); re-run data_prep on the videos'
    )
  try:
    return tfds.builder_from_directory(data_dir)
  except Exception as e:  # TFDS raises many kinds
    raise schema.DatasetError(
      f'{data_dir}: TFDS cannot load the dataset ({type(e).__name__}: {e}); re-run data_prep'
    ) from None


def _check_against_tfds(
  data_dir: str, split: str, manifest: Mapping[str, Any], builder: Any
) -> str:
  """The frames' image format, after checking that TFDS's metadata agrees with the manifest."""
  where = schema.manifest_path(data_dir, split)
  if split not in builder.info.splits:
    raise schema.DatasetError(
      f'{data_dir}/dataset_info.json has no split {split!r} (it has '
      f'{sorted(builder.info.splits)}); re-run data_prep'
    )
  lengths = [int(n) for n in builder.info.splits[split].shard_lengths]
  if lengths != [int(s['num_examples']) for s in manifest['shards']]:
    raise schema.DatasetError(
      f'{where} and dataset_info.json disagree on the shard sizes of '
      f'split {split!r}; re-run data_prep'
    )
  names = list(builder.info.features[schema.LABEL].names)
  if names != list(manifest['label_map']):
    raise schema.DatasetError(
      f'{where} and label.labels.txt disagree on the class names; re-run data_prep'
    )
  return schema.image_format_of(builder.info.features)


def get_dataset_info(data_dir: str, split: str, builder: Any | None = None) -> dict[str, Any]:
  """num_examples, num_classes, label_map, image_format and the manifest of `split`.

  Fast (no record is read): checks the schema version, the manifest, every shard's size and
  TFDS's metadata (`builder`: the dataset's, if already loaded). FileNotFoundError for a
  missing directory or manifest, `DatasetError` naming the file for anything else.
  """
  manifest = integrity.check_shard_sizes(data_dir, split)
  image_format = _check_against_tfds(data_dir, split, manifest, builder or load_builder(data_dir))
  return dict(
    num_examples=int(manifest['num_examples']),
    num_classes=int(manifest['num_classes']),
    label_map=list(manifest['label_map']),
    image_format=image_format,
    manifest=manifest,
  )


def host_slices(
  data_dir: str,
  split: str,
  manifest: Mapping[str, Any],
  process_index: int,
  process_count: int,
  builder: Any | None = None,
) -> list[ShardSlice]:
  """The records process `process_index` of `process_count` reads, in shard order."""
  import tensorflow_datasets as tfds

  builder = builder or load_builder(data_dir)
  sub_split = tfds.split_for_jax_process(
    split, process_index=process_index, process_count=process_count
  )
  counts = [int(s['num_examples']) for s in manifest['shards']]
  starts = dict(zip((s['file'] for s in manifest['shards']), np.cumsum([0] + counts[:-1]).tolist()))
  slices = []
  for instruction in builder.info.splits[sub_split].file_instructions:
    name = storage.basename(os.fspath(instruction.filename))
    skip, take = int(instruction.skip), int(instruction.take)
    if take < 0:  # TFDS: -1 = to the end of the shard
      take = int(instruction.examples_in_shard) - skip
    slices.append(
      ShardSlice(storage.join(data_dir, name), skip, skip + take, int(starts[name]) + skip)
    )
  return slices


def num_host_examples(manifest: Mapping[str, Any], process_index: int, process_count: int) -> int:
  """Examples of process `process_index` under `tfds.even_splits` (sizes differ by at most 1)."""
  total = int(manifest['num_examples'])
  return total // process_count + (1 if process_index < total % process_count else 0)
