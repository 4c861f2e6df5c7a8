"""The on-disk dataset format shared by `data_prep` (writer) and the input pipeline (reader).

A converted dataset directory is a TFDS dataset (`tfds.builder_from_directory(DIR)` loads it):

* ``{split}-{i:05d}-of-{n:05d}.tfrecord``: one `tf.train.Example` per video, serialized by TFDS
  from `features()`; ``dataset_info.json``, ``features.json`` and ``label.labels.txt`` (TFDS's
  metadata, with the exact split sizes);
* ``{split}.manifest.json`` (`MANIFEST_KEYS`: schema version, counts, label map and its hash,
  conversion options, and per shard its size in bytes and SHA-256), ``{split}.skipped.csv``
  (videos left out or truncated, with the reason) and ``{split}.index.csv`` (which shard and
  position holds each video);
* ``label_map.txt``: line i = name of class i.

`SCHEMA_VERSION` 1 (before TFDS) stored `tf.train.SequenceExample` records; reading such a
dataset fails with one line saying to re-run data_prep.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

from cost_jax import storage

SCHEMA_VERSION = 2

# Feature names (keys of the tf.train.Example and of the TFDS FeaturesDict).
VIDEO = 'video'  # one encoded image per native frame (JPEG or PNG)
MIDDLE_FRAME = 'middle_frame'  # frame num_frames // 2 again, as an Image (for previews)
LABEL = 'label'  # ClassLabel: index and names
VIDEO_ID = 'video_id'  # the video's name (its path in the list / annotations)
FPS = 'fps'
NUM_FRAMES = 'num_frames'  # stored frames = decoded frames
HEIGHT = 'height'  # of the stored frames
WIDTH = 'width'
ORIGINAL_HEIGHT = 'original_height'  # of the decoded video
ORIGINAL_WIDTH = 'original_width'

IMAGE_FORMATS = ('jpeg', 'png')  # png is lossless
FILE_FORMAT = 'tfrecord'
FILENAME_TEMPLATE = '{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}'
SPLIT_NAME_PATTERN = r'[A-Za-z0-9_]+'

# Keys every manifest.json carries. ``shards`` is a list of {"file", "num_examples",
# "num_bytes", "sha256"} in shard order; ``options`` holds the data_prep options used
# (``image_format``, ``short_side``, ``shuffle_seed``, ...); ``label_map`` is the ordered list
# of class names (index i = class i).
MANIFEST_KEYS = (
  'schema_version',
  'split',
  'name',
  'num_examples',
  'num_classes',
  'label_map',
  'label_map_sha256',
  'options',
  'shards',
  'num_skipped',
  'num_truncated',
)
SHARD_KEYS = ('file', 'num_examples', 'num_bytes', 'sha256')


class DatasetError(ValueError):
  """A converted dataset that cannot be used as it is; the message names the file and says what
  to do (e.g. re-run data_prep)."""


def features(label_names: Sequence[str], image_format: str = 'jpeg') -> Any:
  """The TFDS `FeaturesDict` of one video: what data_prep writes and the pipeline reads."""
  import tensorflow_datasets as tfds

  if image_format not in IMAGE_FORMATS:
    raise ValueError(f'image format {image_format!r} is not one of {IMAGE_FORMATS}')
  f = tfds.features
  return f.FeaturesDict(
    {
      VIDEO: f.Video(
        shape=(None, None, None, 3),
        encoding_format=image_format,
        doc='every decoded frame at the native frame rate, one image each',
      ),
      MIDDLE_FRAME: f.Image(
        shape=(None, None, 3),
        encoding_format=image_format,
        doc='frame num_frames // 2 (a preview for tfds.show_examples)',
      ),
      LABEL: f.ClassLabel(names=list(label_names)),
      VIDEO_ID: f.Text(doc="the video's path as given in the list or annotations"),
      FPS: f.Scalar(np.float32, doc='frames per second of the source video'),
      NUM_FRAMES: f.Scalar(np.int64, doc='number of stored (decodable) frames'),
      HEIGHT: f.Scalar(np.int64, doc='height of the stored frames'),
      WIDTH: f.Scalar(np.int64, doc='width of the stored frames'),
      ORIGINAL_HEIGHT: f.Scalar(np.int64, doc='height of the decoded source video'),
      ORIGINAL_WIDTH: f.Scalar(np.int64, doc='width of the decoded source video'),
    }
  )


def image_format_of(video_features: Any) -> str:
  """'jpeg' or 'png': how the frames of a `features()` dict are encoded."""
  fmt = video_features[VIDEO].feature.encoding_format
  if fmt not in IMAGE_FORMATS:
    raise DatasetError(
      f'frames are stored as {fmt!r}, which this version cannot read ({IMAGE_FORMATS})'
    )
  return fmt


def shard_name(split: str, index: int, num_shards: int) -> str:
  """File name of shard `index` of `num_shards` for `split` (`FILENAME_TEMPLATE`)."""
  return f'{split}-{index:05d}-of-{num_shards:05d}.{FILE_FORMAT}'


def manifest_path(data_dir: str, split: str) -> str:
  return storage.join(data_dir, f'{split}.manifest.json')


def skipped_path(data_dir: str, split: str) -> str:
  return storage.join(data_dir, f'{split}.skipped.csv')


def index_path(data_dir: str, split: str) -> str:
  return storage.join(data_dir, f'{split}.index.csv')


def label_map_path(data_dir: str) -> str:
  return storage.join(data_dir, 'label_map.txt')


def label_map_sha256(label_map: Sequence[str]) -> str:
  """A stable hash of an ordered list of class names."""
  return hashlib.sha256('\n'.join(label_map).encode('utf-8')).hexdigest()


def check_manifest(manifest: Mapping[str, Any], path: str) -> None:
  """Raises DatasetError for an old schema version or an inconsistent manifest."""
  version = manifest.get('schema_version')
  if version != SCHEMA_VERSION:
    raise DatasetError(
      f'{path} was written by another data_prep (schema version {version}; this version '
      f'reads {SCHEMA_VERSION}, a TFDS dataset of tf.train.Example records): re-run data_prep '
      'on the videos to convert them again'
    )
  missing = [k for k in MANIFEST_KEYS if k not in manifest]
  if missing:
    raise DatasetError(f'{path}: manifest lacks keys {missing}')
  if label_map_sha256(manifest['label_map']) != manifest['label_map_sha256']:
    raise DatasetError(f'{path}: label_map_sha256 does not match its label_map')
  if len(manifest['label_map']) != manifest['num_classes']:
    raise DatasetError(
      f'{path}: label_map has {len(manifest["label_map"])} names but '
      f'num_classes is {manifest["num_classes"]}'
    )
  shards = manifest['shards']
  if not shards:
    raise DatasetError(f'{path}: no shards listed')
  for shard in shards:
    if not isinstance(shard, Mapping) or not set(SHARD_KEYS) <= set(shard):
      raise DatasetError(f'{path}: shard entry {shard!r} lacks one of {SHARD_KEYS}')
  total = sum(int(s['num_examples']) for s in shards)
  if total != manifest['num_examples']:
    raise DatasetError(
      f'{path}: shards hold {total} examples but num_examples is {manifest["num_examples"]}'
    )


def read_manifest(data_dir: str, split: str) -> dict[str, Any]:
  """Reads and checks `{split}.manifest.json`; errors name the file and the problem.

  FileNotFoundError for a missing directory or manifest, DatasetError for anything else.
  """
  path = manifest_path(data_dir, split)
  if not storage.isdir(storage.check(data_dir, 'data directory')):
    raise FileNotFoundError(f'data directory {data_dir!r} does not exist')
  if not storage.exists(path):
    raise FileNotFoundError(
      f'no manifest for split {split!r}: {path} is missing (run data_prep first)'
    )
  try:
    manifest = storage.read_json(path)
  except (OSError, ValueError) as e:
    raise DatasetError(f'{path}: unreadable manifest ({e}); re-run data_prep') from None
  if not isinstance(manifest, dict):
    raise DatasetError(f'{path}: not a manifest (a JSON object is expected)')
  check_manifest(manifest, path)
  return manifest
