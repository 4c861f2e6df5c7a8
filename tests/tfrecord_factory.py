"""Tiny dataset splits for tests, written in the `cost_jax.data.schema` layout (TFDS datasets).

`pattern_video` makes frames that survive JPEG and resizing: red encodes the frame number,
green the video id, blue is a left-to-right ramp (shows flips). `read_pattern` recovers
(frame, video) from decoded, resized, cropped clips.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from cost_jax.data import integrity, schema
from data_prep import dataset_writer

PATTERN_STEP = 8  # grey levels between consecutive frame / video codes
MAX_PATTERN_CODE = 256 // PATTERN_STEP


def pattern_video(num_frames: int, height: int, width: int, video_id: int) -> np.ndarray:
  """(T, H, W, 3) uint8: R = 8 * frame, G = 8 * video_id, B = horizontal ramp 0..255."""
  if num_frames > MAX_PATTERN_CODE or video_id >= MAX_PATTERN_CODE:
    raise ValueError(
      f'pattern codes go up to {MAX_PATTERN_CODE - 1}: num_frames={num_frames}, video_id={video_id}'
    )
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  frames[..., 0] = (PATTERN_STEP * np.arange(num_frames))[:, None, None]
  frames[..., 1] = PATTERN_STEP * video_id
  frames[..., 2] = np.round(np.linspace(0, 255, width))[None, None, :]
  return frames


def read_pattern(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frame codes, video codes, ramp slope sign) per frame of a (..., H, W, 3) uint8 clip."""
  clip = np.asarray(clip, np.float64)
  frames = np.rint(clip[..., 0].mean(axis=(-2, -1)) / PATTERN_STEP).astype(np.int64)
  videos = np.rint(clip[..., 1].mean(axis=(-2, -1)) / PATTERN_STEP).astype(np.int64)
  slope = np.sign(clip[..., -1, 2].mean(axis=-1) - clip[..., 0, 2].mean(axis=-1))
  return frames, videos, slope.astype(np.int64)


def encode_frames(frames: np.ndarray, image_format: str = 'jpeg', quality: int = 95) -> list[bytes]:
  """uint8 (T, H, W, 3) RGB frames as JPEG (4:4:4) or PNG bytes."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}')
  if image_format == 'png':
    return [tf.io.encode_png(f).numpy() for f in frames]
  return [tf.io.encode_jpeg(f, quality=quality, chroma_downsampling=False).numpy() for f in frames]


def encode_video(
  frames: np.ndarray,
  label: int,
  filename: str,
  label_map: Sequence[str],
  fps: float = 25.0,
  image_format: str = 'jpeg',
  quality: int = 95,
) -> bytes:
  """One serialized record (the schema's tf.train.Example) of uint8 (T, H, W, 3) RGB frames."""
  frames = np.asarray(frames)
  serializer = dataset_writer.ExampleSerializer(label_map, image_format)
  _, height, width, _ = frames.shape
  return serializer.serialize(
    encode_frames(frames, image_format, quality),
    label=label,
    video_id=filename,
    fps=fps,
    height=height,
    width=width,
    original_height=height,
    original_width=width,
  )


def write_manifest(
  data_dir: str,
  split: str,
  shards: Sequence[tuple[str, int]],
  label_map: Sequence[str],
  image_format: str = 'jpeg',
  name: str = 'test_videos',
) -> dict:
  """Writes the manifest of existing shard files ((file, num_examples) in order) and TFDS's
  metadata, as data_prep does; returns the manifest."""
  entries = [
    {
      'file': file,
      'num_examples': int(n),
      'num_bytes': os.path.getsize(os.path.join(data_dir, file)),
      'sha256': integrity.sha256_file(os.path.join(data_dir, file)),
    }
    for file, n in shards
  ]
  manifest = {
    'schema_version': schema.SCHEMA_VERSION,
    'split': split,
    'name': name,
    'num_examples': sum(e['num_examples'] for e in entries),
    'num_classes': len(label_map),
    'label_map': list(label_map),
    'label_map_sha256': schema.label_map_sha256(label_map),
    'options': {'source': 'tests/tfrecord_factory.py', 'image_format': image_format},
    'shards': entries,
    'num_skipped': 0,
    'num_truncated': 0,
  }
  dataset_writer.publish_manifests(data_dir, [manifest])
  return manifest


def write_split(
  data_dir: str,
  split: str,
  videos: Sequence[tuple[np.ndarray, int]],
  label_map: Sequence[str],
  num_shards: int = 1,
  shard_sizes: Sequence[int] | None = None,
  image_format: str = 'jpeg',
) -> dict:
  """Writes `videos` ((frames, label) pairs, in order) as shards, a manifest and TFDS metadata.

  Videos go to shards contiguously, so a video's position in `videos` is its global index.
  `shard_sizes` (summing to len(videos)) overrides the even split. Returns the manifest.
  """
  os.makedirs(data_dir, exist_ok=True)
  if shard_sizes is None:
    shard_sizes = [len(a) for a in np.array_split(np.arange(len(videos)), num_shards)]
  if sum(shard_sizes) != len(videos):
    raise ValueError(f'shard_sizes {list(shard_sizes)} do not add up to {len(videos)} videos')
  shards, start = [], 0
  for i, size in enumerate(shard_sizes):
    name = schema.shard_name(split, i, len(shard_sizes))
    with tf.io.TFRecordWriter(os.path.join(data_dir, name)) as writer:
      for j in range(start, start + size):
        frames, label = videos[j]
        writer.write(
          encode_video(frames, label, f'video_{j:04d}.mp4', label_map, image_format=image_format)
        )
    shards.append((name, size))
    start += size
  return write_manifest(data_dir, split, shards, label_map, image_format)
