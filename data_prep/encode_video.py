"""One video file -> its frames as encoded images (JPEG, or lossless PNG), optionally resized.

`encode_video` either returns an `EncodedVideo` (possibly partial: see `EncodedVideo.problem`)
or raises `BadVideoError` whose message is the reason the video cannot be used (for
skipped.csv). Decoding is `cost_jax.data.video_decode` (PyAV); frames are converted to RGB as
`frame.to_ndarray(format="rgb24")` does, the conversion the reference decode uses. A video on a
bucket (`gs://`) is copied to a local temporary file for PyAV, one at a time, deleted once
decoded; reasons name the original path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Iterator

import av
from PIL import Image

from cost_jax import storage
from cost_jax.data import video_decode
from cost_jax.data.video_decode import BadVideoError

PNG_COMPRESS_LEVEL = 1  # zlib level: 6 (PIL's default) saves ~2% of disk and costs ~40% time


@dataclasses.dataclass
class EncodedVideo:
  """Frames of one video, one encoded image each, at the native frame rate."""

  frames: list[bytes]
  fps: float
  height: int  # of the stored frames
  width: int
  original_height: int
  original_width: int
  container_frames: int  # the frame count the container states (0: not stated)
  problem: str = ''  # non-empty when only part of the video decoded ("truncated: ...")

  @property
  def num_frames(self) -> int:
    return len(self.frames)


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the short side scaled to `short_side` (0 keeps the size).

  The long side is rounded to an even number, as `ffmpeg -vf scale=-2:320` does in MMAction2's
  `tools/data/resize_videos.py`, the usual way to make "320p" Kinetics.
  """
  if short_side <= 0 or min(height, width) == short_side:
    return height, width

  def even(x: float) -> int:
    return max(2, 2 * int(x / 2 + 0.5))

  if height <= width:
    return short_side, even(width * short_side / height)
  return even(height * short_side / width), short_side


def encode_frame(
  frame: av.VideoFrame, height: int, width: int, image_format: str = 'jpeg', jpeg_quality: int = 90
) -> bytes:
  """One decoded frame as JPEG or PNG bytes of size (height, width).

  At the frame's own size the RGB pixels are exactly `frame.to_ndarray(format="rgb24")`;
  otherwise the frame is resized by FFmpeg's bicubic scaler.
  """
  if (height, width) == (frame.height, frame.width):
    image = Image.fromarray(frame.to_ndarray(format='rgb24'))
  else:
    image = frame.reformat(
      width=width, height=height, format='rgb24', interpolation='BICUBIC'
    ).to_image()
  buf = io.BytesIO()
  if image_format == 'png':
    image.save(buf, format='PNG', compress_level=PNG_COMPRESS_LEVEL)
  elif image_format == 'jpeg':
    image.save(buf, format='JPEG', quality=jpeg_quality)
  else:
    raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
  return buf.getvalue()


@contextlib.contextmanager
def local_video(path: str) -> Iterator[str]:
  """A local path holding the video `path`: itself, or a temporary copy of a remote file
  (deleted on exit), with `BadVideoError`s naming `path` rather than the copy."""
  if not storage.is_remote(path):
    yield path
    return
  if not storage.exists(path):
    raise BadVideoError('missing file')
  with storage.local_file(path) as local:
    try:
      yield local
    except BadVideoError as e:
      raise BadVideoError(str(e).replace(local, path)) from None


def encode_video(
  path: str,
  short_side: int = 320,
  image_format: str = 'jpeg',
  jpeg_quality: int = 90,
  min_side: int = video_decode.MIN_SIDE,
  max_side: int = video_decode.MAX_SIDE,
) -> EncodedVideo:
  """Decodes every frame of `path` (first video stream) and encodes it as an image.

  Damaged packets are skipped; when frames are missing (fewer than the container states, or
  packets that failed) the result carries `problem = "truncated: kept N frames of M"`. Raises
  `BadVideoError` (message = reason) for a missing, empty, unreadable or audio-only file, an
  absurd resolution or no decodable frame. `path` is local or gs://.
  """
  with local_video(path) as local:
    return _encode_local(local, short_side, image_format, jpeg_quality, min_side, max_side)


def _encode_local(
  path: str, short_side: int, image_format: str, jpeg_quality: int, min_side: int, max_side: int
) -> EncodedVideo:
  container, stream = video_decode.open_video(path)
  log, frames = video_decode.DecodeLog(), []
  size = None  # (original, stored) (height, width), from the first frame
  with container:
    video_decode.check_resolution(
      stream.codec_context.height, stream.codec_context.width, min_side, max_side
    )
    fps = video_decode.frame_rate(stream)
    expected = stream.frames  # 0 when the container does not say
    for frame in video_decode.robust_frames(container, stream, log, min_side, max_side):
      if size is None:
        original = (frame.height, frame.width)
        size = original, resized_shape(*original, short_side)
      frames.append(encode_frame(frame, *size[1], image_format, jpeg_quality))
  if not frames:
    detail = f': {log.last_error}' if log.last_error else ''
    raise BadVideoError(f'no decodable frame{detail}')
  problem = ''
  if log.errors or len(frames) < expected:
    total = f' of {expected}' if expected else ''
    errors = f', {log.errors} damaged packet(s)' if log.errors else ''
    problem = f'truncated: kept {len(frames)} frames{total}{errors}'
  (orig_h, orig_w), (height, width) = size
  return EncodedVideo(frames, fps, height, width, orig_h, orig_w, int(expected), problem)
