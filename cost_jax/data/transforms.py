"""Clip transforms equal to MMAction2 0.24.1 (`Resize`, `RandomRescale`, `RandomCrop`, `Flip`,
`CenterCrop`, `ThreeCrop`, `Normalize`), in TensorFlow for the input pipeline.

Frames are uint8 ``(N, H, W, 3)`` RGB. Resizing reproduces OpenCV's fixed-point uint8
``INTER_LINEAR`` (half-pixel centres, no antialiasing) in integer arithmetic, so resized frames
equal MMAction2's bit for bit; crops after a resize are computed as windows of the resized frame.
Random choices take uniform draws in [0, 1) so that the caller controls the randomness
(stateless RNG in the pipeline).

`normalize` (jnp) is the device-side normalisation used inside the jitted step.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import tensorflow as tf


def short_side_size(
  height: tf.Tensor, width: tf.Tensor, short_side: int
) -> tuple[tf.Tensor, tf.Tensor]:
  """(new_h, new_w) of `Resize(scale=(-1, short_side))`: ``int(side * short/min(h, w) + 0.5)``."""
  h = tf.cast(height, tf.float64)
  w = tf.cast(width, tf.float64)
  # divide_no_nan: exact IEEE division that grappler does not turn into a reciprocal multiply.
  factor = tf.math.divide_no_nan(tf.cast(short_side, tf.float64), tf.minimum(h, w))
  new_h = tf.cast(tf.floor(h * factor + 0.5), tf.int32)
  new_w = tf.cast(tf.floor(w * factor + 0.5), tf.int32)
  return new_h, new_w


_COEF_SCALE = 2048  # OpenCV INTER_RESIZE_COEF_SCALE (11 fractional bits per axis)


def _linear_taps(
  in_size: tf.Tensor,
  out_size: tf.Tensor,
  start: tf.Tensor,
  count: int | tf.Tensor,
  vertical: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """OpenCV's INTER_LINEAR taps for output positions [start, start + count) along one axis.

  Returns (first source index, second source index, int weight, int weight); weights sum to
  2048. The source position is computed in double, then rounded to float as OpenCV does.
  Outside the source, OpenCV treats the axes differently: along x (columns) it moves the
  position onto the edge pixel (fraction 0); along y (`vertical`) it keeps the fraction and
  clamps both row indices, so an edge row gets two taps, each truncated separately.
  """
  in_size = tf.cast(in_size, tf.int32)
  scale = tf.math.divide_no_nan(tf.cast(in_size, tf.float64), tf.cast(out_size, tf.float64))
  dst = tf.cast(start + tf.range(count), tf.float64)
  fx = tf.cast((dst + 0.5) * scale - 0.5, tf.float32)
  sx = tf.floor(fx)
  fx = fx - sx
  sx = tf.cast(sx, tf.int32)
  if not vertical:
    fx = tf.where(tf.logical_or(sx < 0, sx >= in_size - 1), 0.0, fx)
  w0 = tf.cast(tf.round((1.0 - fx) * _COEF_SCALE), tf.int32)  # round half to even = cvRound
  w1 = tf.cast(tf.round(fx * _COEF_SCALE), tf.int32)
  return tf.clip_by_value(sx, 0, in_size - 1), tf.clip_by_value(sx + 1, 0, in_size - 1), w0, w1


def resize_window(
  frames: tf.Tensor,
  height: tf.Tensor,
  width: tf.Tensor,
  top: tf.Tensor,
  left: tf.Tensor,
  win_height: int | tf.Tensor,
  win_width: int | tf.Tensor,
) -> tf.Tensor:
  """The window [top:top+win_height, left:left+win_width] of `resize(frames, height, width)`,
  computed without resizing the rest of the frame (a plain slice when the size is unchanged)."""
  shape = tf.shape(frames)

  def resized():
    x0, x1, a0, a1 = _linear_taps(shape[2], width, left, win_width)
    y0, y1, b0, b1 = _linear_taps(shape[1], height, top, win_height, vertical=True)
    return _apply_taps(frames, x0, x1, a0, a1, y0, y1, b0, b1)

  def sliced():  # same size: OpenCV copies the frame
    return tf.slice(frames, tf.stack([0, top, left, 0]), tf.stack([-1, win_height, win_width, -1]))

  same = tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width))
  return tf.cond(same, sliced, resized)


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _apply_taps(frames, x0, x1, a0, a1, y0, y1, b0, b1):
  """OpenCV's uint8 two-pass kernel, integer-only (exact under XLA, which fuses it: ~4x faster
  than op-by-op TF). Compiled once per input frame shape."""

  # Horizontal pass: exact integers in units of 1/2048, then >> 4 as OpenCV's SIMD kernel.
  def h_tap(index, weight):
    return tf.cast(tf.gather(frames, index, axis=2), tf.int32) * weight[:, None]

  rows = tf.bitwise.right_shift(h_tap(x0, a0) + h_tap(x1, a1), 4)

  # Vertical pass: ((r * b) >> 16) per tap, then (sum + 2) >> 2; the result is <= 255.
  def v_tap(index, weight):
    return tf.bitwise.right_shift(tf.gather(rows, index, axis=1) * weight[:, None, None], 16)

  out = tf.bitwise.right_shift(v_tap(y0, b0) + v_tap(y1, b1) + 2, 2)
  return tf.cast(tf.minimum(out, 255), tf.uint8)


def resize(frames: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """Bilinear resize of uint8 frames, bit-exact with OpenCV ``cv2.resize(INTER_LINEAR)`` (the
  fixed-point uint8 path MMAction2 uses through mmcv)."""
  return resize_window(frames, height, width, 0, 0, height, width)


def resize_short_side(frames: tf.Tensor, short_side: tf.Tensor | int) -> tf.Tensor:
  """`Resize(scale=(-1, short_side))` with keep_ratio (also RandomRescale's inner step)."""
  shape = tf.shape(frames)
  new_h, new_w = short_side_size(shape[1], shape[2], short_side)
  return resize(frames, new_h, new_w)


def _fix_shape(crop: tf.Tensor, frames: tf.Tensor, size: int) -> tf.Tensor:
  return tf.ensure_shape(crop, [frames.shape[0], size, size, 3])


def _crop(frames: tf.Tensor, top: tf.Tensor, left: tf.Tensor, size: int) -> tf.Tensor:
  out = tf.slice(frames, tf.stack([0, top, left, 0]), tf.stack([-1, size, size, -1]))
  return _fix_shape(out, frames, size)


def _assert_size_fits(height: tf.Tensor, width: tf.Tensor, size: int, name: str) -> None:
  tf.debugging.Assert(
    tf.minimum(height, width) >= size,
    [f'{name}: frames are smaller than the crop size {size}; height, width:', height, width],
  )


def _assert_fits(frames: tf.Tensor, size: int, name: str) -> None:
  shape = tf.shape(frames)
  _assert_size_fits(shape[1], shape[2], size, name)


def center_crop_offsets(
  height: tf.Tensor, width: tf.Tensor, size: int
) -> tuple[tf.Tensor, tf.Tensor]:
  """(top, left) of `CenterCrop(size)`: floor((side - size) / 2)."""
  return tf.math.floordiv(height - size, 2), tf.math.floordiv(width - size, 2)


def center_crop(frames: tf.Tensor, size: int) -> tf.Tensor:
  """`CenterCrop(size)`; frames smaller than `size` are an error."""
  _assert_fits(frames, size, 'CenterCrop')
  shape = tf.shape(frames)
  top, left = center_crop_offsets(shape[1], shape[2], size)
  return _crop(frames, top, left, size)


def three_crop_offsets(height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
  """(3, 2) int32 (top, left) of `ThreeCrop(size)`, in MMAction2's order start, end, middle.

  Crops run along the width when ``height == size``, else along the height (then
  ``width == size`` is required).
  """
  height = tf.convert_to_tensor(height, tf.int32)
  width = tf.convert_to_tensor(width, tf.int32)
  tf.debugging.Assert(
    tf.logical_or(tf.equal(height, size), tf.equal(width, size)),
    [f'ThreeCrop({size}) needs one side equal to {size}; got height, width:', height, width],
  )
  along_w = tf.equal(height, size)
  step = tf.math.floordiv(tf.where(along_w, width, height) - size, 2)
  moves = tf.stack([0, 2 * step, step])
  zeros = tf.zeros_like(moves)
  return tf.where(along_w, tf.stack([zeros, moves], 1), tf.stack([moves, zeros], 1))


def three_crop(frames: tf.Tensor, size: int) -> tf.Tensor:
  """`ThreeCrop(size)`: (3, N, size, size, 3), crops in the order start, end, middle."""
  shape = tf.shape(frames)
  offsets = three_crop_offsets(shape[1], shape[2], size)
  return tf.stack([_crop(frames, offsets[i, 0], offsets[i, 1], size) for i in range(3)])


def _randint(u: tf.Tensor, low: tf.Tensor | int, high: tf.Tensor | int) -> tf.Tensor:
  """Integer in [low, high) from a uniform draw in [0, 1) (high > low)."""
  n = tf.cast(high - low, tf.float64)
  value = tf.cast(tf.floor(tf.cast(u, tf.float64) * n), tf.int32)
  return low + tf.minimum(value, tf.cast(n, tf.int32) - 1)


def _random_short_side(scale_range: Sequence[int], u: tf.Tensor) -> tf.Tensor:
  lo, hi = int(scale_range[0]), int(scale_range[1])
  if not 0 < lo < hi:
    raise ValueError(f'train_scale_range must be (lo, hi) with 0 < lo < hi, got {scale_range}')
  return _randint(u, lo, hi + 1)


def random_rescale(frames: tf.Tensor, scale_range: Sequence[int], u: tf.Tensor) -> tf.Tensor:
  """`RandomRescale(scale_range)`: short side = randint(lo, hi + 1), keep ratio."""
  return resize_short_side(frames, _random_short_side(scale_range, u))


def random_crop_offsets(
  height: tf.Tensor, width: tf.Tensor, size: int, u_top: tf.Tensor, u_left: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """(top, left) of `RandomCrop(size)`: ``randint(0, side - size)`` (upper bound excluded, as
  MMAction2), 0 when ``side == size``."""
  top = tf.where(height > size, _randint(u_top, 0, tf.maximum(height - size, 1)), 0)
  left = tf.where(width > size, _randint(u_left, 0, tf.maximum(width - size, 1)), 0)
  return top, left


def random_crop(frames: tf.Tensor, size: int, u_top: tf.Tensor, u_left: tf.Tensor) -> tf.Tensor:
  """`RandomCrop(size)` with the same box for every frame."""
  _assert_fits(frames, size, 'RandomCrop')
  shape = tf.shape(frames)
  top, left = random_crop_offsets(shape[1], shape[2], size, u_top, u_left)
  return _crop(frames, top, left, size)


def random_flip(frames: tf.Tensor, flip_ratio: float, u: tf.Tensor) -> tf.Tensor:
  """`Flip(flip_ratio)`, horizontal: flips all frames when ``u < flip_ratio``."""
  return tf.cond(u < flip_ratio, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


NUM_TRAIN_DRAWS = 4  # uniform draws `train_transform` consumes: scale, top, left, flip


def train_transform(
  frames: tf.Tensor,
  *,
  scale_range: Sequence[int],
  crop_size: int,
  flip_ratio: float,
  uniform: tf.Tensor,
) -> tf.Tensor:
  """RandomRescale -> RandomCrop -> Flip; `uniform` holds `NUM_TRAIN_DRAWS` draws in [0, 1).

  Equal to the three transforms in a row, but resizes only the crop window.
  """
  shape = tf.shape(frames)
  new_h, new_w = short_side_size(shape[1], shape[2], _random_short_side(scale_range, uniform[0]))
  _assert_size_fits(new_h, new_w, crop_size, 'RandomCrop')
  top, left = random_crop_offsets(new_h, new_w, crop_size, uniform[1], uniform[2])
  crop = _fix_shape(
    resize_window(frames, new_h, new_w, top, left, crop_size, crop_size), frames, crop_size
  )
  return random_flip(crop, flip_ratio, uniform[3])


def val_transform(frames: tf.Tensor, *, short_side: int, crop_size: int) -> tf.Tensor:
  """Resize(-1, short_side) -> CenterCrop(crop_size), resizing only the crop window."""
  shape = tf.shape(frames)
  new_h, new_w = short_side_size(shape[1], shape[2], short_side)
  _assert_size_fits(new_h, new_w, crop_size, 'CenterCrop')
  top, left = center_crop_offsets(new_h, new_w, crop_size)
  return _fix_shape(
    resize_window(frames, new_h, new_w, top, left, crop_size, crop_size), frames, crop_size
  )


def multi_view_transform(
  frames: tf.Tensor,
  *,
  short_side: int,
  crop_size: int,
  num_clips: int,
  clip_len: int,
  order: tf.Tensor | None = None,
) -> tf.Tensor:
  """Resize(-1, short_side) -> ThreeCrop(crop_size) on clip-major frames.

  `order` (optional): the clip-major sequence as indices into `frames`, which then hold each
  distinct frame once (each is resized and cropped once). Returns (3 * num_clips, clip_len,
  crop, crop, 3) views, crop outer and clip inner, like MMAction2's `FormatShape('NCTHW')`.
  """
  crops = three_crop(resize_short_side(frames, short_side), crop_size)
  if order is not None:
    crops = tf.gather(crops, order, axis=1)
  return tf.reshape(crops, [3 * num_clips, clip_len, crop_size, crop_size, 3])


def normalize_tf(clips: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """Host-side `Normalize(to_bgr=False)`: float32 ``(x - mean) / std`` over the last axis."""
  x = tf.cast(clips, tf.float32)
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def normalize(clips_uint8: jnp.ndarray, mean: Sequence[float], std: Sequence[float]) -> jnp.ndarray:
  """Device-side `Normalize`: float32 ``(x - mean) / std`` per RGB channel (last axis)."""
  x = clips_uint8.astype(jnp.float32)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
