"""Tiny real media files for tests, written with PyAV (videos, audio-only, damaged files)."""

from __future__ import annotations

import os
import struct

import av
import numpy as np

from data_prep import natural_video


def pattern_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """A (T, H, W, 3) uint8 video: smooth random colours with a bright bar moving right."""
  rng = np.random.default_rng(seed)
  base = rng.integers(40, 200, size=(1, 1, 1, 3)).astype(np.float32)
  yy, xx = np.mgrid[:height, :width].astype(np.float32)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    img = base + 30 * np.sin(xx / 5 + t)[None, :, :, None] * np.array([1, -1, 0.5])
    col = (t * max(1, width // max(1, num_frames))) % width
    img[0, :, col : col + max(1, width // 8)] = 255
    frames[t] = np.clip(img[0], 0, 255).astype(np.uint8)
  return frames


def write_video(
  path: str,
  frames: np.ndarray,
  fps: int = 8,
  codec: str = 'libx264',
  faststart: bool = True,
  pix_fmt: str = 'yuv420p',
  codec_options: dict[str, str] | None = None,
) -> str:
  """Writes uint8 RGB frames (T, H, W, 3) as a video; container from the file extension.

  `faststart` moves the mp4 index to the front, so a truncated copy stays partly decodable.
  x264/yuv420p needs even H and W; use codec="mjpeg", pix_fmt="yuvj444p" for odd sizes.
  `codec_options` go to the encoder (e.g. {"crf": "23"} for libx264).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f'frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  options = {'movflags': 'faststart'} if faststart and path.endswith(('.mp4', '.mov')) else {}
  with av.open(path, 'w', options=options) as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    if codec_options:
      stream.options = dict(codec_options)
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())
  return path


def write_audio_only(path: str, seconds: float = 0.5, rate: int = 16000) -> str:
  """Writes an AAC audio-only file (no video stream)."""
  with av.open(path, 'w', format='mp4') as container:
    stream = container.add_stream('aac', rate=rate)
    for _ in range(int(seconds * rate) // 1024 + 1):
      frame = av.AudioFrame.from_ndarray(
        np.zeros((1, 1024), np.float32), format='fltp', layout='mono'
      )
      frame.sample_rate = rate
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return path


def write_truncated_copy(src: str, dst: str, num_bytes: int) -> str:
  """Copies the first `num_bytes` bytes of `src` to `dst` (a download cut short)."""
  with open(src, 'rb') as f:
    data = f.read(num_bytes)
  with open(dst, 'wb') as f:
    f.write(data)
  return dst


def mp4_box_offset(path: str, box: bytes = b'mdat') -> int:
  """Byte offset of a top-level mp4 box (e.g. the media data, b"mdat")."""
  with open(path, 'rb') as f:
    data = f.read()
  offset = 0
  while offset + 8 <= len(data):
    size, kind = struct.unpack('>I4s', data[offset : offset + 8])
    if kind == box:
      return offset
    if size < 8:
      break
    offset += size
  raise ValueError(f'{path}: no top-level {box!r} box')


def write_bytes(path: str, data: bytes) -> str:
  """Writes raw bytes (e.g. b"" for a zero-byte file or text posing as a video)."""
  with open(path, 'wb') as f:
    f.write(data)
  return path


# Realistic footage (natural image statistics, camera and object motion): data_prep's generator,
# shared with the benchmarks.
natural_frames = natural_video.natural_frames
