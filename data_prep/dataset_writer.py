"""Writing the files of a converted dataset (`cost_jax.data.schema`): records and TFDS metadata.

* `ExampleSerializer` turns one video into a serialized `tf.train.Example` with TFDS's own
  serializer and the features of `schema.features`, so that TFDS and the input pipeline read it.
* `write_tfds_metadata` writes ``dataset_info.json``, ``features.json`` and
  ``label.labels.txt`` for every split whose manifest is in the directory (what
  `tfds.builder_from_directory` needs), atomically, under a lock so that conversions of
  several splits into one directory do not lose each other's splits.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterator, Sequence

from cost_jax.data import schema

LOCK_FILE = '.tfds_metadata.lock'
_NAME_PATTERN = r'[a-z][a-z0-9_]*'


class ExampleSerializer:
  """Serializes videos as `tf.train.Example` records of `schema.features(label_names, fmt)`."""

  def __init__(self, label_names: Sequence[str], image_format: str):
    from tensorflow_datasets.core import example_serializer

    self.features = schema.features(label_names, image_format)
    self._serializer = example_serializer.ExampleSerializer(self.features.get_serialized_info())

  def serialize(
    self,
    frames: Sequence[bytes],
    *,
    label: int,
    video_id: str,
    fps: float,
    height: int,
    width: int,
    original_height: int,
    original_width: int,
  ) -> bytes:
    """One record: encoded frames (one image each) and the video's metadata."""
    if not frames:
      raise ValueError(f'{video_id}: a video needs at least one frame')
    encoded = self.features.encode_example(
      {
        schema.VIDEO: list(frames),
        schema.MIDDLE_FRAME: frames[len(frames) // 2],
        schema.LABEL: int(label),
        schema.VIDEO_ID: video_id,
        schema.FPS: float(fps),
        schema.NUM_FRAMES: len(frames),
        schema.HEIGHT: int(height),
        schema.WIDTH: int(width),
        schema.ORIGINAL_HEIGHT: int(original_height),
        schema.ORIGINAL_WIDTH: int(original_width),
      }
    )
    return self._serializer.get_tf_example(encoded).SerializeToString(deterministic=True)


def check_dataset_name(name: str) -> str:
  """The TFDS name `name` if valid (lower case letters, digits, '_'), else ValueError."""
  if not re.fullmatch(_NAME_PATTERN, name or ''):
    raise ValueError(
      f"dataset name {name!r} must be lower case letters, digits and '_', "
      'starting with a letter (a TFDS name)'
    )
  return name


def default_dataset_name(output_dir: str, fallback: str) -> str:
  """The name for TFDS: the parent folder when `output_dir` is `.../NAME/VERSION` (the layout
  `tfds.load(NAME, data_dir=...)` searches), else `fallback`."""
  from tensorflow_datasets.core import utils

  path = os.path.abspath(output_dir)
  parent = os.path.basename(os.path.dirname(path))
  if utils.Version.is_valid(os.path.basename(path)) and re.fullmatch(_NAME_PATTERN, parent):
    return parent
  return fallback


def dataset_version(output_dir: str) -> str:
  """`output_dir`'s own name when it is a version (e.g. 2.0.0), else "SCHEMA_VERSION.0.0"."""
  from tensorflow_datasets.core import utils

  base = os.path.basename(os.path.abspath(output_dir))
  return base if utils.Version.is_valid(base) else f'{schema.SCHEMA_VERSION}.0.0'


@contextlib.contextmanager
def metadata_lock(output_dir: str) -> Iterator[None]:
  """An exclusive lock on the directory's metadata (manifests and TFDS files)."""
  with open(os.path.join(output_dir, LOCK_FILE), 'a+') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def current_manifests(output_dir: str) -> list[dict[str, Any]]:
  """The manifests of this schema version in `output_dir`, by split name."""
  manifests = []
  for path in sorted(glob.glob(os.path.join(output_dir, '*.manifest.json'))):
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
    if manifest.get('schema_version') == schema.SCHEMA_VERSION:
      manifests.append(manifest)
  return manifests


def write_tfds_metadata(output_dir: str, description: str = '') -> str:
  """Writes TFDS's metadata for every current split of `output_dir`; returns the dataset name.

  Call it under `metadata_lock(output_dir)`. The splits must share the dataset name, the label
  map and the image format (ValueError naming the split otherwise).
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import naming

  manifests = current_manifests(output_dir)
  if not manifests:
    raise ValueError(
      f'{output_dir}: no split to describe (no manifest of schema version {schema.SCHEMA_VERSION})'
    )
  first = manifests[0]
  for m in manifests[1:]:
    for key in ('name', 'label_map_sha256'):
      if m[key] != first[key]:
        raise ValueError(
          f'{output_dir}: splits {first["split"]!r} and {m["split"]!r} differ in '
          f'{key}; convert them into separate output directories'
        )
    if m['options']['image_format'] != first['options']['image_format']:
      raise ValueError(
        f'{output_dir}: splits {first["split"]!r} and {m["split"]!r} store frames '
        'as different image formats; convert them into separate directories'
      )
  name = check_dataset_name(first['name'])
  template = naming.ShardedFileTemplate(
    data_dir=output_dir,
    template=schema.FILENAME_TEMPLATE,
    dataset_name=name,
    filetype_suffix=schema.FILE_FORMAT,
  )
  splits = [
    tfds.core.SplitInfo(
      name=m['split'],
      shard_lengths=[int(s['num_examples']) for s in m['shards']],
      num_bytes=sum(int(s['num_bytes']) for s in m['shards']),
      filename_template=template.replace(split=m['split']),
    )
    for m in manifests
  ]
  identity = tfds.core.dataset_info.DatasetIdentity(
    name=name,
    version=tfds.core.Version(dataset_version(output_dir)),
    data_dir=output_dir,
    module_name='',
  )
  info = tfds.core.DatasetInfo(
    builder=identity,
    features=schema.features(first['label_map'], first['options']['image_format']),
    description=description
    or f'Videos converted by cost_jax data_prep (schema version '
    f'{schema.SCHEMA_VERSION}); see the *.manifest.json files.',
    supervised_keys=(schema.VIDEO, schema.LABEL),
  )
  info.set_file_format(schema.FILE_FORMAT)
  info.set_splits(tfds.core.SplitDict(splits))
  tmp = tempfile.mkdtemp(prefix='.tfds-metadata-', dir=output_dir)
  try:
    info.write_to_directory(tmp)
    for file in sorted(os.listdir(tmp)):
      os.replace(os.path.join(tmp, file), os.path.join(output_dir, file))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return name
