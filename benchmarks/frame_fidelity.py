"""How close the pipeline's crops are to the official decode, per data_prep frame format.

  python benchmarks/frame_fidelity.py [--frames=72]

The official code decodes the original video at every read (decord) and applies MMAction2's
transforms. This benchmark writes realistic videos (natural image statistics, a panning camera,
moving textured objects, lighting change, sensor noise; `data_prep.natural_video`) of
several sizes and codecs, converts them with `data_prep` in three ways:

* default: frames resized to a short side of 320, JPEG quality 90;
* native q95: `--short_side=0 --jpeg_quality=95`;
* lossless: `--short_side=0 --image_format=png`;

and compares the val crops (1 clip 8x8, Resize 256, CenterCrop 224) and test crops (10 clips,
Resize 256, ThreeCrop 256) that `cost_jax.data.input_pipeline` makes from them with the crops
the same transforms (bit-exact with MMAction2's) make from the frames decoded from the original
file (PyAV `to_ndarray("rgb24")`; PyAV and decord give the same RGB frames). It also records
disk bytes per frame and conversion speed. Prints tables, writes
`benchmarks/results/frame_fidelity.json`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import time
from typing import Any

import av
import numpy as np
import tensorflow as tf
from absl import app, flags

from configs import base
from cost_jax import storage
from cost_jax.data import input_pipeline, sampling, schema, transforms
from data_prep import convert, natural_video

_FRAMES = flags.DEFINE_integer('frames', 72, 'frames per video (25 fps)')
_WORKERS = flags.DEFINE_integer('workers', 2, 'data_prep workers')
_OUTPUT = flags.DEFINE_string(
  'output',
  os.path.join(os.path.dirname(__file__), 'results', 'frame_fidelity.json'),
  'JSON results',
)


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  name: str
  height: int
  width: int
  codec: str
  container: str
  pix_fmt: str = 'yuv420p'
  options: tuple[tuple[str, str], ...] = ()


VIDEOS = (
  VideoSpec('h264_320x240', 240, 320, 'libx264', 'mp4', options=(('crf', '23'),)),
  VideoSpec('mpeg4_340x256', 256, 340, 'mpeg4', 'avi', options=(('qscale', '4'),)),
  VideoSpec(
    'vp9_480x360',
    360,
    480,
    'libvpx-vp9',
    'webm',
    options=(('crf', '32'), ('b', '0'), ('deadline', 'realtime'), ('cpu-used', '8')),
  ),
  VideoSpec('h264_640x360', 360, 640, 'libx264', 'mp4', options=(('crf', '20'),)),
  VideoSpec('h264_portrait_360x640', 640, 360, 'libx264', 'mkv', options=(('crf', '23'),)),
  VideoSpec(
    'hevc_1280x720',
    720,
    1280,
    'libx265',
    'mp4',
    options=(('crf', '26'), ('preset', 'ultrafast'), ('x265-params', 'log-level=0')),
  ),
  VideoSpec('mjpeg_320x180', 180, 320, 'mjpeg', 'avi', pix_fmt='yuvj420p', options=(('q', '5'),)),
)

VARIANTS = {
  'default (short side 320, JPEG q90)': convert.ConvertOptions(short_side=320, jpeg_quality=90),
  'native size, JPEG q95': convert.ConvertOptions(short_side=0, jpeg_quality=95),
  'lossless (native size, PNG)': convert.ConvertOptions(short_side=0, image_format='png'),
}


def write_video(path: str, frames: np.ndarray, spec: VideoSpec, fps: int = 25) -> None:
  """Encodes uint8 RGB frames with the spec's codec and options."""
  with av.open(path, 'w') as container:
    stream = container.add_stream(spec.codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = spec.pix_fmt
    stream.options = dict(spec.options)
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


def decode_all(path: str) -> np.ndarray:
  """The reference decode: every frame, RGB, as PyAV (and decord) give it."""
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


def reference_crops(frames: np.ndarray, cfg, mode: str) -> np.ndarray:
  """MMAction2's val or test crops of decoded frames (the formulas the pipeline reproduces)."""
  num_clips = 1 if mode == 'val' else cfg.test_num_clips
  indices = sampling.sample_frame_indices(
    len(frames), cfg.clip_len, cfg.frame_interval, num_clips, test_mode=True
  )
  sampled = tf.constant(frames[indices])
  if mode == 'val':
    return transforms.val_transform(
      sampled, short_side=cfg.val_short_side, crop_size=cfg.crop_size
    ).numpy()
  return transforms.multi_view_transform(
    sampled,
    short_side=cfg.test_short_side,
    crop_size=cfg.test_crop_size,
    num_clips=num_clips,
    clip_len=cfg.clip_len,
  ).numpy()


def pipeline_crops(data_dir: str, cfg, mode: str) -> dict[str, np.ndarray]:
  """video_id -> the crops `input_pipeline.create_eval_dataset` gives (batch 1)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.data_dir = data_dir
  ds, _ = input_pipeline.create_eval_dataset(
    cfg, split='val', batch_size=1, mode=mode, process_index=0, process_count=1
  )
  with open(schema.index_path(data_dir, 'val'), newline='', encoding='utf-8') as f:
    names = {int(row['index']): row['video_id'] for row in csv.DictReader(f)}
  return {names[int(b['index'][0])]: b['clips'][0] for b in ds.as_numpy_iterator()}


def compare(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
  diff = ours.astype(np.int32) - ref.astype(np.int32)
  mse = float(np.mean(diff.astype(np.float64) ** 2))
  return {
    'mse': mse,
    'max_abs': int(np.abs(diff).max()),
    'mean_abs': float(np.abs(diff).mean()),
    'equal_fraction': float(np.mean(diff == 0)),
    'pixels': int(diff.size),
  }


def psnr(mse: float) -> float:
  return float('inf') if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str]) -> None:
  del argv
  cfg = base.get_config().data
  results: dict[str, Any] = {'videos': [], 'variants': {}}
  with tempfile.TemporaryDirectory() as root:
    entries, reference = [], {}
    for i, spec in enumerate(VIDEOS):
      path = os.path.join(root, f'{spec.name}.{spec.container}')
      frames = natural_video.natural_frames(_FRAMES.value, spec.height, spec.width, seed=i)
      write_video(path, frames, spec)
      reference[spec.name] = decode_all(path)
      entries.append(convert.Entry(path, 0, spec.name))
      with av.open(path) as container:
        stated = container.streams.video[0].frames
      results['videos'].append(
        {
          'name': spec.name,
          'codec': spec.codec,
          'height': spec.height,
          'width': spec.width,
          'decoded_frames': len(reference[spec.name]),
          'container_frames': stated,
          'file_bytes': os.path.getsize(path),
        }
      )
    total_frames = sum(len(f) for f in reference.values())
    for variant, options in VARIANTS.items():
      data_dir = os.path.join(root, variant.split()[0])
      options = dataclasses.replace(options, workers=_WORKERS.value, progress=False, num_shards=2)
      start = time.perf_counter()
      convert.convert_split(entries, data_dir, 'val', ['video'], options, name='fidelity')
      seconds = time.perf_counter() - start
      manifest = schema.read_manifest(data_dir, 'val')
      stored = sum(s['num_bytes'] for s in manifest['shards'])
      row: dict[str, Any] = {
        'bytes_per_frame': stored / total_frames,
        'bytes_total': stored,
        'conversion_seconds': seconds,
        'workers': _WORKERS.value,
      }
      for mode in ('val', 'test'):
        ours = pipeline_crops(data_dir, cfg, mode)
        per_video = {
          name: compare(ours[name], reference_crops(reference[name], cfg, mode))
          for name in reference
        }
        mse = sum(v['mse'] * v['pixels'] for v in per_video.values()) / sum(
          v['pixels'] for v in per_video.values()
        )
        row[mode] = {
          'psnr_db': psnr(mse),
          'min_video_psnr_db': min(psnr(v['mse']) for v in per_video.values()),
          'max_abs_diff': max(v['max_abs'] for v in per_video.values()),
          'mean_abs_diff': float(np.mean([v['mean_abs'] for v in per_video.values()])),
          'equal_fraction': float(np.mean([v['equal_fraction'] for v in per_video.values()])),
          'per_video': {k: dict(v, psnr_db=psnr(v['mse'])) for k, v in per_video.items()},
        }
      results['variants'][variant] = row

  def db(x):
    return 'inf (identical)' if x == float('inf') else f'{x:.2f}'

  print(
    f'\nCrops vs. the official decode + MMAction2 transforms ({len(VIDEOS)} videos, '
    f'{_FRAMES.value} frames each: ' + ', '.join(v.name for v in VIDEOS) + ')'
  )
  print(
    f'{"data_prep frames":38} {"mode":5} {"PSNR dB":>16} {"worst video":>16} '
    f'{"max |diff|":>10} {"mean |diff|":>11} {"equal px":>9}'
  )
  for variant, row in results['variants'].items():
    for mode in ('val', 'test'):
      r = row[mode]
      print(
        f'{variant:38} {mode:5} {db(r["psnr_db"]):>16} {db(r["min_video_psnr_db"]):>16} '
        f'{r["max_abs_diff"]:>10} {r["mean_abs_diff"]:>11.3f} '
        f'{100 * r["equal_fraction"]:>8.1f}%'
      )
  print(f'\n{"data_prep frames":38} {"bytes/frame":>12} {"vs default":>10} {"conversion s":>12}')
  default = next(iter(results['variants'].values()))['bytes_per_frame']
  for variant, row in results['variants'].items():
    print(
      f'{variant:38} {row["bytes_per_frame"]:12.0f} '
      f'{row["bytes_per_frame"] / default:9.2f}x {row["conversion_seconds"]:12.1f}'
    )
  results.update(
    benchmark='frame_fidelity',
    frames_per_video=_FRAMES.value,
    recipe={
      k: cfg[k]
      for k in (
        'clip_len',
        'frame_interval',
        'val_short_side',
        'crop_size',
        'test_num_clips',
        'test_short_side',
        'test_crop_size',
      )
    },
    pyav=av.__version__,
    time=time.strftime('%Y-%m-%dT%H:%M:%S'),
  )
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  storage.write_json(_OUTPUT.value, results)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
