"""Decodes one video file with PyAV into resized JPEG frames, with checks for bad input.

`decode_video` either returns a `DecodedVideo` (possibly partial: see `DecodedVideo.problem`) or
raises `BadVideoError` whose message is the reason the video cannot be used (for skipped.csv).
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Iterator

import av

MIN_SIDE = 8
MAX_SIDE = 8192
# Stop reading a damaged file after this many packets in a row fail to decode.
_MAX_CONSECUTIVE_ERRORS = 16


class BadVideoError(Exception):
  """A video that yields no usable frame; `str(error)` is the reason."""


@dataclasses.dataclass
class DecodedVideo:
  """Frames of one video, JPEG-encoded at the native frame rate."""
  jpeg_frames: list[bytes]
  fps: float
  height: int             # of the stored frames
  width: int
  original_height: int
  original_width: int
  problem: str = ""       # non-empty when only part of the video decoded ("truncated: ...")

  @property
  def num_frames(self) -> int:
    return len(self.jpeg_frames)


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


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate is not None and rate > 0:
      return float(rate)
  raise BadVideoError("unknown frame rate")


def _encode_jpeg(frame: av.VideoFrame, height: int, width: int, quality: int) -> bytes:
  image = frame.reformat(width=width, height=height, format="rgb24",
                         interpolation="BICUBIC").to_image()
  buf = io.BytesIO()
  image.save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _check_resolution(height: int, width: int, min_side: int, max_side: int) -> None:
  if height and width and (min(height, width) < min_side or max(height, width) > max_side):
    raise BadVideoError(f"absurd resolution {width}x{height} (allowed sides "
                        f"{min_side}..{max_side} px)")


def check_file(path: str) -> None:
  """Raises `BadVideoError` if `path` is missing, not a regular file or empty."""
  if not os.path.exists(path):
    raise BadVideoError("missing file")
  if not os.path.isfile(path):
    raise BadVideoError("not a regular file")
  if os.path.getsize(path) == 0:
    raise BadVideoError("empty file (0 bytes)")


@dataclasses.dataclass
class DecodeLog:
  """What went wrong while decoding: damaged packets skipped and the last error."""
  errors: int = 0
  last_error: str = ""

  def add(self, error: Exception) -> None:
    self.errors += 1
    self.last_error = str(error)


def open_video(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
  """Opens `path` and its first video stream; `BadVideoError` says why a file is unusable."""
  check_file(path)
  try:
    container = av.open(path)
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise BadVideoError(f"not a video: {e}") from None
  if not container.streams.video:
    kinds = sorted({s.type for s in container.streams})
    container.close()
    what = "audio-only" if "audio" in kinds else "no streams" if not kinds else "/".join(kinds)
    raise BadVideoError(f"no video stream ({what})")
  return container, container.streams.video[0]


def robust_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  log: DecodeLog, min_side: int = MIN_SIDE,
                  max_side: int = MAX_SIDE) -> Iterator[av.VideoFrame]:
  """The frames of `stream`, skipping damaged packets (counted in `log`).

  Stops after `_MAX_CONSECUTIVE_ERRORS` failures in a row or when demuxing fails; checks the
  resolution of the first frame.
  """
  consecutive = 0
  first = True
  try:
    for packet in container.demux(stream):
      try:
        decoded = packet.decode()
      except av.error.FFmpegError as e:
        log.add(e)
        consecutive += 1
        if consecutive >= _MAX_CONSECUTIVE_ERRORS:
          return
        continue
      consecutive = 0
      for frame in decoded:
        if first:
          _check_resolution(frame.height, frame.width, min_side, max_side)
          first = False
        yield frame
  except av.error.FFmpegError as e:  # demuxing failed part-way
    log.add(e)


def decode_video(path: str, short_side: int = 320, jpeg_quality: int = 90,
                 min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> DecodedVideo:
  """Decodes every frame of `path` (first video stream) to JPEG, short side `short_side`.

  Damaged packets are skipped; if frames are missing at the end the result carries
  `problem = "truncated: kept N frames of M"`. Raises `BadVideoError` (message = reason) for a
  missing, empty, unreadable or audio-only file, an absurd resolution or no decodable frame.
  """
  container, stream = open_video(path)
  log, frames = DecodeLog(), []
  size = None  # (original, stored) (height, width), from the first frame
  with container:
    _check_resolution(stream.codec_context.height, stream.codec_context.width, min_side,
                      max_side)
    fps = _frame_rate(stream)
    expected = stream.frames  # 0 when the container does not say
    for frame in robust_frames(container, stream, log, min_side, max_side):
      if size is None:
        original = (frame.height, frame.width)
        size = original, resized_shape(*original, short_side)
      frames.append(_encode_jpeg(frame, *size[1], jpeg_quality))
  errors, last_error = log.errors, log.last_error
  if not frames:
    detail = f": {last_error}" if last_error else ""
    raise BadVideoError(f"no decodable frame{detail}")
  problem = ""
  if errors or len(frames) < expected:
    total = f" of {expected}" if expected else ""
    problem = f"truncated: kept {len(frames)} frames{total}"
  (orig_h, orig_w), (height, width) = size
  return DecodedVideo(frames, fps, height, width, orig_h, orig_w, problem)
