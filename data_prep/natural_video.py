"""Realistic synthetic footage: what a camera would record, without a camera or a download.

`natural_frames` draws a video whose frames have the statistics of photographs (1/f amplitude
spectrum, correlated colour channels, soft-edged regions), with a panning camera (sub-pixel
motion), textured objects moving across the scene, a slow change of lighting and sensor noise,
so that codecs, JPEG and resizing treat it as they treat real video. The benchmarks
(`benchmarks/frame_fidelity.py`, `benchmarks/input_pipeline.py`) and the tests use it.
"""

from __future__ import annotations

import numpy as np


def _pink_noise(rng: np.random.Generator, height: int, width: int, exponent: float) -> np.ndarray:
  """Zero-mean, unit-variance noise with amplitude spectrum 1/f**exponent (natural images: ~1)."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  radius = np.sqrt(fx**2 + fy**2)
  radius[0, 0] = 1.0
  spectrum = rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)
  field = np.fft.irfft2(spectrum / radius**exponent, s=(height, width))
  field -= field.mean()
  return field / (field.std() + 1e-12)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A float RGB (H, W, 3) texture in [0, 255] with natural statistics: 1/f luminance, smoother
  and weaker chroma, a few soft-edged regions of another brightness, fine grain."""
  luma = _pink_noise(rng, height, width, 1.15) + 0.08 * _pink_noise(rng, height, width, 0.5)
  yy, xx = np.mgrid[:height, :width].astype(np.float32)
  for _ in range(int(rng.integers(2, 5))):  # regions with edges (objects, shadows)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = rng.uniform(0.1, 0.4) * height, rng.uniform(0.1, 0.4) * width
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    luma += rng.uniform(-1.2, 1.2) / (1 + np.exp(np.minimum((inside - 1) * 12, 50)))
  chroma = [0.35 * _pink_noise(rng, height, width, 1.6) for _ in range(2)]
  base = rng.uniform(90, 150)
  y = base + 38 * luma
  # YCbCr-like mixing: channels correlated as in photographs.
  r = y + 45 * chroma[0] + rng.uniform(-15, 15)
  g = y - 20 * chroma[0] - 20 * chroma[1] + rng.uniform(-10, 10)
  b = y + 50 * chroma[1] + rng.uniform(-15, 15)
  return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.float32)


def _shifted(canvas: np.ndarray, top: float, left: float, height: int, width: int) -> np.ndarray:
  """Bilinear window [top, top + height) x [left, left + width) of `canvas` (sub-pixel)."""
  y0, x0 = int(np.floor(top)), int(np.floor(left))
  fy, fx = top - y0, left - x0
  window = canvas[y0 : y0 + height + 1, x0 : x0 + width + 1]
  rows = (1 - fy) * window[:-1] + fy * window[1:]
  return (1 - fx) * rows[:, :-1] + fx * rows[:, 1:]


def natural_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """A (T, H, W, 3) uint8 video that compresses like real footage: a camera panning (sub-pixel)
  over a textured scene with natural image statistics, two textured objects moving across it
  with soft edges, a slow change of lighting and per-frame sensor noise."""
  rng = np.random.default_rng(seed)
  margin = max(8, int(0.15 * max(height, width)))
  canvas = _texture(rng, height + 2 * margin + 2, width + 2 * margin + 2)
  # Camera: smooth random walk inside the margin.
  steps = (
    rng.normal(0, 0.6, (num_frames, 2)).cumsum(axis=0)
    + rng.uniform(-1.5, 1.5, 2)
    * np.arange(num_frames)[:, None]
    / max(1, num_frames - 1)
    * margin
    * 0.8
  )
  path = np.clip(steps + margin, 0, 2 * margin)
  objects = []
  for _ in range(2):
    size = rng.uniform(0.15, 0.35) * min(height, width)
    objects.append(
      dict(
        texture=_texture(rng, int(size) * 2 + 4, int(size) * 2 + 4),
        radius=size,
        start=rng.uniform([0, 0], [height, width]),
        velocity=rng.uniform(-1, 1, 2) * min(height, width) / max(8, num_frames),
      )
    )
  gain = 1 + 0.06 * np.sin(np.linspace(0, rng.uniform(1, 3), num_frames) + rng.uniform(0, 6))
  yy, xx = np.mgrid[:height, :width].astype(np.float32)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    image = _shifted(canvas, path[t, 0], path[t, 1], height, width)
    for obj in objects:
      cy, cx = obj['start'] + t * obj['velocity']
      r = obj['radius']
      dist = np.sqrt(((yy - cy) / r) ** 2 + ((xx - cx) / (0.8 * r)) ** 2)
      alpha = np.clip((1.0 - dist) * r / 1.5, 0, 1)[..., None]  # ~1.5 px soft edge
      tex = obj['texture']
      ty = np.clip((yy - cy + r).astype(int), 0, tex.shape[0] - 1)
      tx = np.clip((xx - cx + r).astype(int), 0, tex.shape[1] - 1)
      image = (1 - alpha) * image + alpha * tex[ty, tx]
    image = image * gain[t] + rng.normal(0, 1.5, image.shape)
    frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return frames
