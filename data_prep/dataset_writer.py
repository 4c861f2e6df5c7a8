"""Writing the files of a converted dataset (`cost_jax.data.schema`): records and TFDS metadata.

* `ExampleSerializer` turns one video into a serialized `tf.train.Example` with TFDS's own
  serializer and the features of `schema.features`, so that TFDS and the input pipeline read it.
* `write_tfds_metadata` writes ``dataset_info.json``, ``features.json`` and
  ``label.labels.txt`` (what `tfds.builder_from_directory` needs) for a set of split manifests,
  each file published whole (`cost_jax.storage`: a local directory or a gs:// bucket).
* `publish_manifests` / `settle_tfds_metadata`: how conversions of several splits into one
  directory, possibly on several hosts at once, end with metadata that lists every split,
  without a lock (a bucket has none): see `settle_tfds_metadata`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any, Mapping, Sequence

from cost_jax import storage
from cost_jax.data import schema

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

  path = storage.absolute(output_dir, 'output directory')
  parent = storage.basename(storage.dirname(path))
  if utils.Version.is_valid(storage.basename(path)) and re.fullmatch(_NAME_PATTERN, parent):
    return parent
  return fallback


def dataset_version(output_dir: str) -> str:
  """`output_dir`'s own name when it is a version (e.g. 2.0.0), else "SCHEMA_VERSION.0.0"."""
  from tensorflow_datasets.core import utils

  base = storage.basename(storage.absolute(output_dir, 'output directory'))
  return base if utils.Version.is_valid(base) else f'{schema.SCHEMA_VERSION}.0.0'


def current_manifests(output_dir: str) -> list[dict[str, Any]]:
  """The manifests of this schema version in `output_dir`, by split name (one listing)."""
  manifests = []
  for path in storage.glob(output_dir, '*.manifest.json'):
    manifest = storage.read_json(path)
    if manifest.get('schema_version') == schema.SCHEMA_VERSION:
      manifests.append(manifest)
  return manifests


def publish_manifests(
  output_dir: str, manifests: Sequence[Mapping[str, Any]], description: str = ''
) -> list[str]:
  """Publishes split manifests (`{split}.manifest.json`), then TFDS's metadata for every split
  of the directory (`settle_tfds_metadata`); returns the splits the metadata lists."""
  for manifest in manifests:
    storage.write_json(schema.manifest_path(output_dir, manifest['split']), dict(manifest))
  return settle_tfds_metadata(output_dir, description)


def settle_tfds_metadata(
  output_dir: str,
  description: str = '',
  listing: Sequence[Mapping[str, Any]] | None = None,
) -> list[str]:
  """Writes TFDS's metadata for the manifests listed in `output_dir`, then lists them again and
  rewrites it until a listing made after the last write finds what that write described.
  Returns the splits described. `listing` is the first listing (default: made now); a stale one
  is what a conversion running beside another one may see.

  Every conversion calls this after publishing its own manifest, with no lock (none exists on
  a bucket). Why the metadata left in the end lists every published manifest: take the metadata
  write that completes last, by conversion W, describing the set S. W lists again after that
  write completed, so its listing holds every manifest published before then (local directories
  and GCS list what is already written); had it found more than S, W would have written again,
  after the last write, so it found exactly S. A manifest published later still is followed by
  its own conversion's listing and at least one metadata write, again after the last write:
  there is none. So S holds every manifest. Each round needs a manifest published since the
  previous one, so the loop ends when the conversions do.
  """
  described = None
  current = list(listing) if listing is not None else current_manifests(output_dir)
  while current != described:
    write_tfds_metadata(output_dir, description, current)
    described, current = current, current_manifests(output_dir)
  return [m['split'] for m in described]


def write_tfds_metadata(
  output_dir: str,
  description: str = '',
  manifests: Sequence[Mapping[str, Any]] | None = None,
) -> str:
  """Writes TFDS's metadata describing `manifests` (default: every current split of
  `output_dir`); returns the dataset name.

  The splits must share the dataset name, the label map and the image format (ValueError
  naming the split otherwise). Each file is written into a local temporary directory by TFDS,
  then published whole into `output_dir`. Conversions call `settle_tfds_metadata` instead,
  which also takes care of conversions running beside this one.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import naming

  manifests = current_manifests(output_dir) if manifests is None else list(manifests)
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
  tmp = tempfile.mkdtemp(prefix='cost_jax-tfds-metadata-')  # a local scratch directory
  try:
    info.write_to_directory(tmp)
    for file in sorted(os.listdir(tmp)):
      with open(os.path.join(tmp, file), 'rb') as f:
        storage.write_bytes(storage.join(output_dir, file), f.read())
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return name
