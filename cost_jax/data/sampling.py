"""Frame sampling equal to MMAction2 0.24.1 `SampleFrames` (start_index 0, out_of_bound 'loop').

Two implementations of the same rule: a NumPy reference (`sample_frame_indices`) and an in-graph
TensorFlow one (`sample_frame_indices_tf`) used by the input pipeline. Random train offsets are
expressed through one uniform draw ``u in [0, 1)`` per clip: MMAction2's ``randint(n)`` becomes
``floor(u * n)``, so both versions give the same indices for the same draws.

Let ``span = clip_len * frame_interval`` and ``T = num_frames``.

* test mode: ``avg = (T - span + 1) / num_clips`` (float); clip i starts at
  ``int(i * avg + avg / 2)`` when ``T >= span``, else at 0.
* train mode: ``avg = (T - span + 1) // num_clips``; if ``avg > 0`` clip i starts at
  ``i * avg + randint(avg)``; elif ``T > max(num_clips, span)`` the starts are sorted
  ``randint(T - span + 1)``; elif ``avg == 0`` they are ``round(i * (T - span + 1) / num_clips)``
  (half to even, as ``np.around``); else 0.

Frame j of a clip is ``(start + j * frame_interval) % T``; the result is clip-major.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _check_args(clip_len: int, frame_interval: int, num_clips: int) -> None:
  for name, value in (
    ('clip_len', clip_len),
    ('frame_interval', frame_interval),
    ('num_clips', num_clips),
  ):
    if int(value) != value or value < 1:
      raise ValueError(f'{name} must be a positive int, got {value!r}')


def clip_offsets(
  num_frames: int,
  clip_len: int,
  frame_interval: int,
  num_clips: int,
  test_mode: bool,
  uniform: np.ndarray | None = None,
) -> np.ndarray:
  """Start frame of each clip, (num_clips,) int64. `uniform` (train mode): draws in [0, 1)."""
  _check_args(clip_len, frame_interval, num_clips)
  if num_frames < 1:
    raise ValueError(f'num_frames must be >= 1, got {num_frames}')
  span = clip_len * frame_interval
  clips = np.arange(num_clips)
  if test_mode:
    avg = (num_frames - span + 1) / float(num_clips)
    if num_frames > span - 1:
      return (clips * avg + avg / 2.0).astype(np.int64)
    return np.zeros((num_clips,), np.int64)
  if uniform is None:
    raise ValueError('train mode needs `uniform` draws')
  uniform = np.asarray(uniform, np.float64)
  if uniform.shape != (num_clips,):
    raise ValueError(f'uniform must have shape ({num_clips},), got {uniform.shape}')
  avg = (num_frames - span + 1) // num_clips
  if avg > 0:
    return clips * avg + _randint(uniform, avg)
  if num_frames > max(num_clips, span):
    return np.sort(_randint(uniform, num_frames - span + 1))
  if avg == 0:
    ratio = (num_frames - span + 1.0) / num_clips
    return np.around(clips * ratio).astype(np.int64)
  return np.zeros((num_clips,), np.int64)


def _randint(uniform: np.ndarray, n: int) -> np.ndarray:
  return np.minimum(np.floor(uniform * n).astype(np.int64), n - 1)


def sample_frame_indices(
  num_frames: int,
  clip_len: int,
  frame_interval: int,
  num_clips: int,
  test_mode: bool,
  rng: np.random.Generator | None = None,
  uniform: np.ndarray | None = None,
) -> np.ndarray:
  """NumPy reference of `SampleFrames`: (num_clips * clip_len,) int64 frame indices in [0, T).

  In train mode the random draws come from `uniform` if given, else from `rng` (a fresh
  `np.random.default_rng()` when None).
  """
  if not test_mode and uniform is None:
    rng = np.random.default_rng() if rng is None else rng
    uniform = rng.random(num_clips)
  starts = clip_offsets(num_frames, clip_len, frame_interval, num_clips, test_mode, uniform)
  inds = starts[:, None] + np.arange(clip_len)[None, :] * frame_interval
  return np.mod(inds, num_frames).reshape(-1).astype(np.int64)


def _divide(x: tf.Tensor, n: int) -> tf.Tensor:
  """IEEE float64 ``x / n``. Grappler rewrites a division by a constant into a multiplication by
  its reciprocal (28/10 -> 2.8000000000000003); `divide_no_nan` is left alone (n > 0)."""
  return tf.math.divide_no_nan(x, tf.constant(float(n), tf.float64))


def sample_frame_indices_tf(
  num_frames: tf.Tensor,
  clip_len: int,
  frame_interval: int,
  num_clips: int,
  test_mode: bool,
  uniform: tf.Tensor | None = None,
) -> tf.Tensor:
  """In-graph `SampleFrames`: (num_clips * clip_len,) int32 indices; `num_frames` is a scalar.

  `uniform` (train mode only): float64 (num_clips,) draws in [0, 1), e.g. from
  `tf.random.stateless_uniform`.
  """
  _check_args(clip_len, frame_interval, num_clips)
  t = tf.cast(num_frames, tf.int64)
  tf.debugging.assert_positive(t, message='a video has no frames')
  span = clip_len * frame_interval
  clips = tf.range(num_clips, dtype=tf.int64)
  zeros = tf.zeros([num_clips], tf.int64)
  if test_mode:
    avg = _divide(tf.cast(t - span + 1, tf.float64), num_clips)
    centred = tf.cast(tf.cast(clips, tf.float64) * avg + avg / 2.0, tf.int64)
    starts = tf.where(t > span - 1, centred, zeros)
  else:
    if uniform is None:
      raise ValueError('train mode needs `uniform` draws')
    uniform = tf.ensure_shape(tf.cast(uniform, tf.float64), [num_clips])
    slack = t - span + 1
    avg = tf.math.floordiv(slack, num_clips)

    def randint(n):
      n = tf.maximum(n, 1)
      return tf.minimum(tf.cast(tf.floor(uniform * tf.cast(n, tf.float64)), tf.int64), n - 1)

    segmented = clips * avg + randint(avg)
    anywhere = tf.sort(randint(slack))
    ratio = _divide(tf.cast(slack, tf.float64), num_clips)
    spread = tf.cast(tf.round(tf.cast(clips, tf.float64) * ratio), tf.int64)
    starts = tf.where(
      avg > 0,
      segmented,
      tf.where(t > max(num_clips, span), anywhere, tf.where(tf.equal(avg, 0), spread, zeros)),
    )
  inds = starts[:, None] + tf.range(clip_len, dtype=tf.int64)[None, :] * frame_interval
  return tf.cast(tf.reshape(tf.math.floormod(inds, t), [-1]), tf.int32)
