"""A video file -> the views of MMAction2's test pipelines, as uint8 (V, T, H, W, 3) RGB clips.

* `views = 3 * k` (default: the config's test protocol, 10 clips x 3 crops = 30): k test-mode clips
  (`SampleFrames(..., num_clips=k, test_mode=True)`), `Resize(-1, test_short_side)`,
  `ThreeCrop(test_crop_size)`; views are crop-major, as `FormatShape('NCTHW')`.
* `views = 1`: the val pipeline, one centre clip, `Resize(-1, val_short_side)`,
  `CenterCrop(crop_size)`.

Frames are decoded with PyAV (every frame, RGB); frame sampling and the transforms are those of
the training input pipeline (`cost_jax.data.sampling` / `cost_jax.data.transforms`). The frame
count is that of the decodable frames (MMAction2's decord reads it from the container index; the
two agree for intact files).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import tensorflow as tf

from cost_jax import storage
from cost_jax.data import sampling, transforms, video_decode
from cost_jax.data.video_decode import BadVideoError

__all__ = [
  'BadVideoError',
  'VideoFrames',
  'num_clips_for_views',
  'read_video',
  'video_views',
  'views_from_frames',
]


@dataclasses.dataclass
class VideoFrames:
  """Every decoded frame of a video: uint8 (T, H, W, 3) RGB."""

  frames: np.ndarray
  fps: float
  problem: str = ''  # non-empty when only part of the file decoded


def read_video(path: str) -> VideoFrames:
  """Decodes all frames of the first video stream of `path`.

  Damaged packets are skipped (reported in `problem`). Raises `BadVideoError` (message = the
  reason) for a missing, empty or unreadable file, no video stream, an absurd resolution or no
  decodable frame. A `gs://` video is copied to a temporary local file first (one at a time).
  """
  if storage.is_remote(path):
    if not storage.isfile(path):
      raise BadVideoError('missing file')
    with storage.local_file(path) as local:
      return read_video(local)
  container, stream = video_decode.open_video(path)
  log = video_decode.DecodeLog()
  with container:
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    frames = [
      frame.to_ndarray(format='rgb24')
      for frame in video_decode.robust_frames(container, stream, log)
    ]
  errors, last_error = log.errors, log.last_error
  if not frames:
    raise BadVideoError('no decodable frame' + (f': {last_error}' if last_error else ''))
  if len({f.shape for f in frames}) > 1:
    raise BadVideoError('the frame size changes within the video')
  problem = f'{errors} damaged packet(s) skipped: {last_error}' if errors else ''
  return VideoFrames(np.stack(frames), fps, problem)


def num_clips_for_views(views: int) -> int:
  """Clips of a `views`-view protocol: 1 for 1 view (centre crop), k for 3k views (ThreeCrop)."""
  if views == 1:
    return 1
  if views < 3 or views % 3:
    raise ValueError(
      f'views must be 1 (one centre clip) or a multiple of 3 (clips x ThreeCrop), got {views}'
    )
  return views // 3


def views_from_frames(
  frames: np.ndarray, protocol: ml_collections.ConfigDict, views: int
) -> np.ndarray:
  """uint8 (views, clip_len, S, S, 3) test views of decoded frames (T, H, W, 3)."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}')
  num_clips = num_clips_for_views(views)
  indices = sampling.sample_frame_indices(
    len(frames), protocol.clip_len, protocol.frame_interval, num_clips, test_mode=True
  )
  sampled = tf.constant(frames[indices])
  if views == 1:
    clip = transforms.val_transform(
      sampled, short_side=protocol.val_short_side, crop_size=protocol.crop_size
    )
    return clip.numpy()[None]
  return transforms.multi_view_transform(
    sampled,
    short_side=protocol.test_short_side,
    crop_size=protocol.test_crop_size,
    num_clips=num_clips,
    clip_len=protocol.clip_len,
  ).numpy()


def video_views(
  path: str, protocol: ml_collections.ConfigDict, views: int
) -> tuple[np.ndarray, VideoFrames]:
  """Decodes `path` and builds its test views; also returns the decoded video."""
  video = read_video(path)
  try:
    return views_from_frames(video.frames, protocol, views), video
  except tf.errors.InvalidArgumentError as e:  # e.g. frames smaller than the crop
    raise BadVideoError(f'cannot build the test views: {e.message.splitlines()[0]}') from None
