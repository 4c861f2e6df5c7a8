"""Input-pipeline throughput per CPU core: converted datasets (tf.data) vs decoding mp4 with PyAV.

  python benchmarks/input_pipeline.py [--tfrecord_dir DIR --split S --video_dir DIR]
                                      [--image_formats=jpeg,png]

Runs the full recipe (8x8 sampling; train RandomRescale 256-320 + RandomCrop 224 + Flip; val
Resize 256 + CenterCrop 224; test 10 clips x ThreeCrop 256) on one thread, from the converted
dataset through `cost_jax.data.input_pipeline`, and the same clips decoded straight from mp4
files with PyAV (MMAction2's on-the-fly path, with decord there) followed by the same
transforms. Without `--tfrecord_dir`, it writes synthetic 340x256 H.264 videos of 64-100 frames
and converts them with `data_prep.convert` once per `--image_formats` entry (JPEG q90, or
lossless PNG; timed: conversion videos/s per worker, disk bytes per frame). Prints a table and
writes `benchmarks/results/input_pipeline.json`.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from typing import Any

import av
import feeding_common  # benchmarks/, the script's own folder
import numpy as np
import tensorflow as tf
from absl import app, flags

from configs import base
from cost_jax import storage
from cost_jax.data import input_pipeline, sampling, schema, transforms
from cost_jax.training import metrics
from data_prep import convert

_TFRECORD_DIR = flags.DEFINE_string('tfrecord_dir', '', 'existing TFRecords (else synthetic)')
_SPLIT = flags.DEFINE_string('split', 'train', 'split to read from --tfrecord_dir')
_VIDEO_DIR = flags.DEFINE_string('video_dir', '', 'mp4 files for the PyAV path (else synthetic)')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 16, 'synthetic videos to write')
_TRAIN_CLIPS = flags.DEFINE_integer('train_clips', 256, 'clips timed per train measurement')
_EVAL_VIDEOS = flags.DEFINE_integer('eval_videos', 48, 'videos timed per val/test measurement')
_IMAGE_FORMATS = flags.DEFINE_list(
  'image_formats', ['jpeg', 'png'], 'frame formats to convert the synthetic videos to'
)
_OUTPUT = flags.DEFINE_string(
  'output',
  os.path.join(os.path.dirname(__file__), 'results', 'input_pipeline.json'),
  'JSON results',
)

_HEIGHT, _WIDTH = 256, 340


def _synthetic_video(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Moving smooth colour fields plus texture: JPEG sizes close to real footage."""
  yy, xx = np.mgrid[:_HEIGHT, :_WIDTH].astype(np.float32)
  texture = rng.normal(0, 12, (_HEIGHT, _WIDTH, 3)).astype(np.float32)
  phase = rng.uniform(0, 6.28, 3)
  frames = np.empty((num_frames, _HEIGHT, _WIDTH, 3), np.uint8)
  for t in range(num_frames):
    field = [
      128 + 80 * np.sin(xx / (23 + 7 * c) + yy / (31 + 5 * c) + phase[c] + 0.15 * t)
      for c in range(3)
    ]
    frames[t] = np.clip(np.stack(field, -1) + np.roll(texture, 3 * t, axis=1), 0, 255)
  return frames


def _write_mp4(path: str, frames: np.ndarray, fps: int = 25) -> None:
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


def _make_synthetic(
  root: str, num_videos: int, image_formats: list[str]
) -> tuple[str, dict[str, str], dict[str, dict[str, float]]]:
  """Writes the videos and converts them once per image format: (video dir, {format: data dir},
  {format: conversion figures})."""
  rng = np.random.default_rng(0)
  video_dir = os.path.join(root, 'videos')
  os.makedirs(video_dir)
  entries = []
  for i in range(num_videos):
    path = os.path.join(video_dir, f'{i:04d}.mp4')
    _write_mp4(path, _synthetic_video(rng, int(rng.integers(64, 101))))
    entries.append((path, i % 2))
  data_dirs, conversions = {}, {}
  for image_format in image_formats:
    data_dirs[image_format] = os.path.join(root, f'data_{image_format}')
    start = time.perf_counter()
    summary = convert.convert_split(
      entries,
      data_dirs[image_format],
      'train',
      ['a', 'b'],
      convert.ConvertOptions(
        short_side=0,
        image_format=image_format,
        jpeg_quality=90,
        num_shards=4,
        workers=1,
        progress=False,
      ),
    )
    seconds = time.perf_counter() - start
    manifest = schema.read_manifest(data_dirs[image_format], 'train')
    with open(
      schema.index_path(data_dirs[image_format], 'train'), newline='', encoding='utf-8'
    ) as f:
      frames = sum(int(row['num_frames']) for row in csv.DictReader(f))
    conversions[image_format] = {
      'videos': summary['num_examples'],
      'workers': 1,
      'videos_per_s_per_worker': num_videos / seconds,
      'bytes_per_frame': sum(s['num_bytes'] for s in manifest['shards']) / frames,
    }
  return video_dir, data_dirs, conversions


def _one_core(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def _time(iterator, count: int, per_item: int) -> dict[str, float]:
  """Items per wall second and per CPU second of this process (robust on a shared machine)."""
  next(iterator)  # warm-up: graph building, XLA compilation, first reads
  wall, cpu = time.perf_counter(), time.process_time()
  done = 0
  while done < count:
    next(iterator)
    done += per_item
  return {
    'per_cpu_s': done / (time.process_time() - cpu),
    'per_wall_s': done / (time.perf_counter() - wall),
  }


def _tfrecord_rates(cfg, num_examples: int) -> dict[str, dict[str, float]]:
  train = _one_core(
    input_pipeline.create_train_dataset(cfg, batch_size=8, seed=0, process_index=0, process_count=1)
  )
  rates = {'train': _time(iter(train), _TRAIN_CLIPS.value, 8)}
  for mode, split in (('val', cfg.val_split), ('test', cfg.test_split)):
    ds, _ = input_pipeline.create_eval_dataset(
      cfg, split=split, batch_size=1, mode=mode, process_index=0, process_count=1
    )
    iterator = iter(_one_core(ds).repeat())
    rates[mode] = _time(iterator, min(_EVAL_VIDEOS.value, 4 * num_examples), 1)
  return rates


def _pyav_clip(path: str, mode: str, cfg, rng: np.random.Generator) -> np.ndarray:
  """Decodes the sampled frames of one mp4 (sequentially, one thread), as decord would."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type, stream.codec_context.thread_count = 'SLICE', 1
    num_frames = stream.frames
    num_clips = {'train': 1, 'val': 1, 'test': cfg.test_num_clips}[mode]
    indices = sampling.sample_frame_indices(
      num_frames, cfg.clip_len, cfg.frame_interval, num_clips, mode != 'train', rng=rng
    )
    wanted, last, kept = set(indices.tolist()), int(indices.max()), {}
    for i, frame in enumerate(container.decode(stream)):
      if i in wanted:
        kept[i] = frame.to_ndarray(format='rgb24')
      if i >= last:
        break
  return np.stack([kept[i] for i in indices])


def _pyav_rates(cfg, paths: list[str]) -> dict[str, dict[str, float]]:
  rng = np.random.default_rng(0)
  fns = {
    'train': tf.function(
      lambda f, u: transforms.train_transform(
        f,
        scale_range=cfg.train_scale_range,
        crop_size=cfg.crop_size,
        flip_ratio=cfg.flip_ratio,
        uniform=u,
      )
    ),
    'val': tf.function(
      lambda f, u: transforms.val_transform(
        f, short_side=cfg.val_short_side, crop_size=cfg.crop_size
      )
    ),
    'test': tf.function(
      lambda f, u: transforms.multi_view_transform(
        f,
        short_side=cfg.test_short_side,
        crop_size=cfg.test_crop_size,
        num_clips=cfg.test_num_clips,
        clip_len=cfg.clip_len,
      )
    ),
  }
  counts = {'train': _TRAIN_CLIPS.value, 'val': _EVAL_VIDEOS.value, 'test': _EVAL_VIDEOS.value}
  rates = {}
  for mode, fn in fns.items():

    def clips(mode=mode, fn=fn):
      k = 0
      while True:
        frames = _pyav_clip(paths[k % len(paths)], mode, cfg, rng)
        yield fn(tf.constant(frames), tf.constant(rng.random(4)))
        k += 1

    rates[mode] = _time(clips(), counts[mode], 1)
  return rates


def main(argv: list[str]) -> None:
  del argv
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  with tempfile.TemporaryDirectory() as root:
    video_dir, split, conversions = _VIDEO_DIR.value, _SPLIT.value, {}
    data_dirs = {'given': _TFRECORD_DIR.value}
    if not _TFRECORD_DIR.value or not video_dir:
      video_dir, data_dirs, conversions = _make_synthetic(
        root, _NUM_VIDEOS.value, list(_IMAGE_FORMATS.value)
      )
      split = 'train'
    cfg = base.get_config().data
    cfg.update(dict(train_split=split, val_split=split, test_split=split, shuffle_buffer=16))
    dataset_rates = {}
    for key, data_dir in data_dirs.items():
      cfg.data_dir = data_dir
      num_examples = input_pipeline.get_dataset_info(data_dir, split)['num_examples']
      dataset_rates[key] = _tfrecord_rates(cfg, num_examples)
    paths = sorted(os.path.join(video_dir, f) for f in os.listdir(video_dir) if f.endswith('.mp4'))
    pyav = _pyav_rates(cfg, paths)

  views = metrics.num_test_views(cfg)
  rows = []
  print(
    f'\nInput pipeline on one thread, per CPU-second ({feeding_common.cpu_name()}); clips '
    f'{cfg.clip_len}x{cfg.frame_interval}'
  )
  for key, conversion in conversions.items():
    print(
      f'conversion to {key} (data_prep.convert, 1 worker, incl. start-up): '
      f'{conversion["videos_per_s_per_worker"]:.2f} videos/s per worker, '
      f'{conversion["bytes_per_frame"]:.0f} bytes per frame'
    )
  print(
    f'{"frames":6} {"mode":6} {"unit":18} {"dataset":>9} {"PyAV mp4":>9} {"ratio":>6}   '
    '(per wall s)'
  )
  for key, rates in dataset_rates.items():
    for mode in ('train', 'val', 'test'):
      unit = 'clips' if mode != 'test' else f'videos ({views} views)'
      ours, theirs = rates[mode]['per_cpu_s'], pyav[mode]['per_cpu_s']
      print(
        f'{key:6} {mode:6} {unit:18} {ours:9.2f} {theirs:9.2f} {ours / theirs:6.2f}   '
        f'({rates[mode]["per_wall_s"]:.2f} vs {pyav[mode]["per_wall_s"]:.2f})'
      )
      rows.append(
        {
          'image_format': key,
          'mode': mode,
          'unit': unit,
          'tfrecord_per_cpu_s': ours,
          'pyav_per_cpu_s': theirs,
          'tfrecord_over_pyav': ours / theirs,
          'tfrecord_per_wall_s': rates[mode]['per_wall_s'],
          'pyav_per_wall_s': pyav[mode]['per_wall_s'],
        }
      )
  result: dict[str, Any] = {
    'benchmark': 'input_pipeline',
    'threads': 1,
    'cpu': feeding_common.cpu_name(),
    'tensorflow': tf.__version__,
    'pyav': av.__version__,
    'recipe': {
      k: cfg[k]
      for k in (
        'clip_len',
        'frame_interval',
        'train_scale_range',
        'crop_size',
        'val_short_side',
        'test_num_clips',
        'test_crop_size',
      )
    },
    'data': {
      'source': 'synthetic 340x256 H.264, 64-100 frames' if conversions else _TFRECORD_DIR.value,
      'num_videos': _NUM_VIDEOS.value,
    },
    'conversion': conversions,
    'rows': rows,
    'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
  }
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  storage.write_json(_OUTPUT.value, result)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
