"""Tiny TFRecord splits for tests, written in the `cost_jax.data.schema` layout.

`pattern_video` makes frames that survive JPEG and resizing: red encodes the frame number,
green the video id, blue is a left-to-right ramp (shows flips). `read_pattern` recovers
(frame, video) from decoded, resized, cropped clips.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from cost_jax.data import schema

PATTERN_STEP = 8            # grey levels between consecutive frame / video codes
MAX_PATTERN_CODE = 256 // PATTERN_STEP


def pattern_video(num_frames: int, height: int, width: int, video_id: int) -> np.ndarray:
  """(T, H, W, 3) uint8: R = 8 * frame, G = 8 * video_id, B = horizontal ramp 0..255."""
  if num_frames > MAX_PATTERN_CODE or video_id >= MAX_PATTERN_CODE:
    raise ValueError(f"pattern codes go up to {MAX_PATTERN_CODE - 1}: num_frames={num_frames}, "
                     f"video_id={video_id}")
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


def encode_video(frames: np.ndarray, label: int, filename: str, label_text: str = "",
                 fps: float = 25.0, quality: int = 95) -> bytes:
  """One serialized SequenceExample of uint8 (T, H, W, 3) RGB frames, JPEG-encoded."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"{filename}: frames must be uint8 (T, H, W, 3), got {frames.dtype} "
                     f"{frames.shape}")
  num_frames, height, width, _ = frames.shape
  jpegs = [tf.io.encode_jpeg(f, quality=quality, chroma_downsampling=False).numpy()
           for f in frames]
  ints = {schema.LABEL_INDEX_KEY: label, schema.NUM_FRAMES_KEY: num_frames,
          schema.HEIGHT_KEY: height, schema.WIDTH_KEY: width,
          schema.ORIGINAL_HEIGHT_KEY: height, schema.ORIGINAL_WIDTH_KEY: width}
  context = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
             for k, v in ints.items()}
  context[schema.FPS_KEY] = tf.train.Feature(float_list=tf.train.FloatList(value=[fps]))
  for key, text in ((schema.LABEL_TEXT_KEY, label_text), (schema.FILENAME_KEY, filename)):
    context[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))
  frame_list = tf.train.FeatureList(
      feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[j])) for j in jpegs])
  example = tf.train.SequenceExample(
      context=tf.train.Features(feature=context),
      feature_lists=tf.train.FeatureLists(feature_list={schema.FRAMES_KEY: frame_list}))
  return example.SerializeToString()


def write_split(data_dir: str, split: str, videos: Sequence[tuple[np.ndarray, int]],
                label_map: Sequence[str], num_shards: int = 1,
                shard_sizes: Sequence[int] | None = None) -> dict:
  """Writes `videos` ((frames, label) pairs, in order) as shards plus a manifest.

  Videos go to shards contiguously, so a video's position in `videos` is its global index.
  `shard_sizes` (summing to len(videos)) overrides the even split. Returns the manifest.
  """
  os.makedirs(data_dir, exist_ok=True)
  if shard_sizes is None:
    shard_sizes = [len(a) for a in np.array_split(np.arange(len(videos)), num_shards)]
  if sum(shard_sizes) != len(videos):
    raise ValueError(f"shard_sizes {list(shard_sizes)} do not add up to {len(videos)} videos")
  shards, start = [], 0
  for i, size in enumerate(shard_sizes):
    name = schema.shard_name(split, i, len(shard_sizes))
    with tf.io.TFRecordWriter(os.path.join(data_dir, name)) as writer:
      for j in range(start, start + size):
        frames, label = videos[j]
        writer.write(encode_video(frames, label, f"video_{j:04d}.mp4", label_map[label]))
    shards.append({"file": name, "num_examples": int(size)})
    start += size
  manifest = {
      "schema_version": schema.SCHEMA_VERSION, "split": split, "num_examples": len(videos),
      "num_classes": len(label_map), "label_map": list(label_map),
      "label_map_sha256": schema.label_map_sha256(label_map),
      "options": {"source": "tests/tfrecord_factory.py"}, "shards": shards, "num_skipped": 0}
  schema.write_json_atomic(schema.manifest_path(data_dir, split), manifest)
  return manifest
