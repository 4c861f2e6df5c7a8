"""Opening and decoding video files with PyAV, with checks for bad input.

Shared by `data_prep` (conversion) and `cost_jax.inference` (prediction on video files).
`BadVideoError`'s message is the reason a file cannot be used (it goes into skipped.csv).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import av

MIN_SIDE = 8
MAX_SIDE = 8192
# Stop reading a damaged file after this many packets in a row fail to decode.
_MAX_CONSECUTIVE_ERRORS = 16


class BadVideoError(Exception):
  """A video that yields no usable frame; `str(error)` is the reason."""


def check_file(path: str) -> None:
  """Raises `BadVideoError` if `path` is missing, not a regular file or empty."""
  if not os.path.exists(path):
    raise BadVideoError('missing file')
  if not os.path.isfile(path):
    raise BadVideoError('not a regular file')
  if os.path.getsize(path) == 0:
    raise BadVideoError('empty file (0 bytes)')


def check_resolution(
  height: int, width: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE
) -> None:
  """Raises `BadVideoError` for a frame side outside [min_side, max_side] (0 = unknown)."""
  if height and width and (min(height, width) < min_side or max(height, width) > max_side):
    raise BadVideoError(
      f'absurd resolution {width}x{height} (allowed sides {min_side}..{max_side} px)'
    )


def frame_rate(stream: av.video.stream.VideoStream) -> float:
  """The stream's frame rate (average, else guessed, else base); `BadVideoError` if unknown."""
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate is not None and rate > 0:
      return float(rate)
  raise BadVideoError('unknown frame rate')


@dataclasses.dataclass
class DecodeLog:
  """What went wrong while decoding: damaged packets skipped and the last error."""

  errors: int = 0
  last_error: str = ''

  def add(self, error: Exception) -> None:
    self.errors += 1
    self.last_error = str(error)


def open_video(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
  """Opens `path` and its first video stream; `BadVideoError` says why a file is unusable."""
  check_file(path)
  try:
    container = av.open(path)
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise BadVideoError(f'not a video: {e}') from None
  if not container.streams.video:
    kinds = sorted({s.type for s in container.streams})
    container.close()
    what = 'audio-only' if 'audio' in kinds else 'no streams' if not kinds else '/'.join(kinds)
    raise BadVideoError(f'no video stream ({what})')
  return container, container.streams.video[0]


def robust_frames(
  container: av.container.InputContainer,
  stream: av.video.stream.VideoStream,
  log: DecodeLog,
  min_side: int = MIN_SIDE,
  max_side: int = MAX_SIDE,
) -> Iterator[av.VideoFrame]:
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
          check_resolution(frame.height, frame.width, min_side, max_side)
          first = False
        yield frame
  except av.error.FFmpegError as e:  # demuxing failed part-way
    log.add(e)
