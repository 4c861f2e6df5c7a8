"""Clip transforms vs MMAction2 fixtures (pipeline.json, pipeline_e2e.npz, resize_exact.npz)."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from configs import base
from cost_jax.data import transforms
from tests import fixtures

MEAN, STD = base.IMAGENET_MEAN_RGB, base.IMAGENET_STD_RGB


@pytest.fixture(scope='module')
def pipeline():
  return fixtures.load_json('pipeline.json')


@pytest.fixture(scope='module')
def e2e():
  return fixtures.load('pipeline_e2e.npz')


@pytest.fixture(scope='module')
def resize_strips():
  return fixtures.load('resize_exact.npz')


def _frames(h, w, n=2, seed=0):
  return tf.constant(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8))


def test_resize_sizes_match_mmaction2(pipeline):
  cases = pipeline['resize_short_side_256']['cases']
  assert len(cases) >= 10
  for case in cases:
    h, w = case['in_hw']
    got = [int(v) for v in transforms.short_side_size(tf.constant(h), tf.constant(w), 256)]
    assert got == case['out_hw'], case
  out = transforms.resize_short_side(_frames(240, 320), 256)
  assert out.dtype == tf.uint8 and out.shape == (2, 256, 341, 3)


def test_center_crop_boxes_match_mmaction2(pipeline):
  for case in pipeline['center_crop_224']['cases']:
    h, w = case['in_hw']
    top, left = (int(v) for v in transforms.center_crop_offsets(h, w, 224))
    assert [left, top, left + 224, top + 224] == case['crop_bbox_xyxy'], case
    frames = _frames(h, w)
    if case['actual_array_hw'] == [224, 224]:
      np.testing.assert_array_equal(
        transforms.center_crop(frames, 224), frames.numpy()[:, top : top + 224, left : left + 224]
      )
    else:  # MMAction2 silently returns a short crop; we refuse.
      with pytest.raises(tf.errors.InvalidArgumentError, match='smaller than the crop'):
        transforms.center_crop(frames, 224)


def test_three_crop_boxes_and_order_match_mmaction2(pipeline):
  for case in pipeline['three_crop_256']['cases']:
    h, w = case['in_hw']
    offsets = transforms.three_crop_offsets(h, w, 256).numpy()
    boxes = [[int(left), int(top), int(left) + 256, int(top) + 256] for top, left in offsets]
    assert boxes == case['crop_bboxes_xyxy'], case
    frames = _frames(h, w, n=case['n_frames'])
    crops = transforms.three_crop(frames, 256).numpy()
    assert crops.shape == (3, case['n_frames'], 256, 256, 3)
    for crop, (x1, y1, x2, y2) in zip(crops, case['crop_bboxes_xyxy']):
      np.testing.assert_array_equal(crop, frames.numpy()[:, y1:y2, x1:x2])
  with pytest.raises(tf.errors.InvalidArgumentError, match='ThreeCrop'):
    transforms.three_crop_offsets(300, 400, 256)


def _assert_equal_to_cv2(ours, ref):
  # Bit-exact emulation of OpenCV's fixed-point INTER_LINEAR. For scale: float bilinear
  # (tf.image.resize) differs from OpenCV by one grey level on ~12% of these pixels.
  assert ours.shape == ref.shape and ours.dtype == np.uint8
  np.testing.assert_array_equal(ours, ref)


def test_val_pipeline_matches_mmaction2_e2e(e2e):
  video = e2e['video_THWC_uint8']
  frames = tf.constant(video[e2e['val_frame_inds']])
  resized = transforms.resize_short_side(frames, 16).numpy()
  assert resized.shape == e2e['val_resized_uint8'].shape
  _assert_equal_to_cv2(resized, e2e['val_resized_uint8'])
  want = e2e['val_imgs'][0].transpose(1, 2, 3, 0)  # CTHW -> THWC
  # Crop + normalize alone are exact on MMAction2's own resized frames.
  exact = transforms.normalize_tf(
    transforms.center_crop(tf.constant(e2e['val_resized_uint8']), 14), MEAN, STD
  )
  np.testing.assert_array_equal(exact.numpy(), want)
  ours = transforms.normalize_tf(
    transforms.val_transform(frames, short_side=16, crop_size=14), MEAN, STD
  ).numpy()
  np.testing.assert_array_equal(ours, want)


def test_test_pipeline_views_match_mmaction2_e2e(e2e):
  video = e2e['video_THWC_uint8']
  frames = tf.constant(video[e2e['test_frame_inds']])
  _assert_equal_to_cv2(transforms.resize_short_side(frames, 16).numpy(), e2e['test_resized_uint8'])
  want = e2e['test_imgs'].transpose(0, 2, 3, 4, 1)  # (views, T, H, W, C)
  kwargs = dict(short_side=16, crop_size=16, num_clips=3, clip_len=4)
  exact = transforms.multi_view_transform(tf.constant(e2e['test_resized_uint8']), **kwargs)
  assert exact.shape == (9, 4, 16, 16, 3)
  np.testing.assert_array_equal(transforms.normalize_tf(exact, MEAN, STD).numpy(), want)
  ours = transforms.normalize_tf(transforms.multi_view_transform(frames, **kwargs), MEAN, STD)
  np.testing.assert_array_equal(ours.numpy(), want)


def _sha256(array):
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _mismatch(key, ours, recorded, strips):
  """None when `ours` is MMAction2's recorded output bit for bit (same shape and sha256), else
  what differs (with the largest difference on the recorded middle row and column, if any)."""
  if list(ours.shape) != recorded['shape']:
    return f'{key}: shape {list(ours.shape)}, MMAction2 {recorded["shape"]}'
  if _sha256(ours) == recorded['sha256']:
    return None
  if f'{key}:middle_row' not in strips:
    return f'{key}: differs from MMAction2'
  row, col = ours[0, ours.shape[1] // 2], ours[0, :, ours.shape[2] // 2]
  diff = max(
    np.abs(row.astype(int) - strips[f'{key}:middle_row']).max(),
    np.abs(col.astype(int) - strips[f'{key}:middle_col']).max(),
  )
  where = f'max difference {diff} on' if diff else 'but not on'
  return f'{key}: differs from MMAction2, {where} the middle row and column of frame 0'


def test_resizes_are_bit_exact_with_mmaction2_at_the_configs_scales(pipeline, resize_strips):
  """Resize(-1, S) and CenterCrop after it (the val and test settings), and RandomRescale(256,
  320) -> RandomCrop(224) -> Flip with MMAction2's own draws (the train setting), on random
  frames: the outputs of cv2 through MMAction2, bit for bit. Upscales (OpenCV gives an edge row
  two taps), downscales, same size, exact halving (OpenCV's INTER_AREA path), odd sizes."""
  cases = pipeline['resize_exact']
  assert len(cases) >= 12 and {c['flip'] for c in cases if c['setting'] == 'train'} == {False, True}
  failures = []
  for case in cases:
    h, w = case['in_hw']
    shape = (case['n_frames'], h, w, 3)
    frames = np.random.RandomState(case['seed']).randint(0, 256, shape, dtype=np.uint8)
    assert _sha256(frames) == case['input_sha256'], case['name']  # MMAction2's input
    frames = tf.constant(frames)
    if case['setting'] == 'eval':
      resize, crop = case['pipeline']
      short_side = resize['scale'][1]
      ours = {
        'resized': transforms.resize_short_side(frames, short_side),
        'center_crop': transforms.val_transform(
          frames, short_side=short_side, crop_size=crop['crop_size']
        ),
      }
    else:
      rescale, crop, flip = case['pipeline']
      lo, hi = rescale['scale_range']
      new_h, new_w = case['rescaled']['shape'][1:3]
      top, left = case['crop_top_left']
      # Draws that make our choices MMAction2's: randint(lo, hi + 1), randint(0, side - crop),
      # rand() < flip_ratio.
      uniform = [
        (case['short_edge'] - lo + 0.5) / (hi + 1 - lo),
        (top + 0.5) / max(new_h - crop['size'], 1),
        (left + 0.5) / max(new_w - crop['size'], 1),
        flip['flip_ratio'] / 2 if case['flip'] else (1 + flip['flip_ratio']) / 2,
      ]
      ours = {
        'rescaled': transforms.resize_short_side(frames, case['short_edge']),
        'crop': transforms.train_transform(
          frames,
          scale_range=(lo, hi),
          crop_size=crop['size'],
          flip_ratio=flip['flip_ratio'],
          uniform=tf.constant(uniform, tf.float64),
        ),
      }
    for key, out in ours.items():
      failures.append(_mismatch(f'{case["name"]}/{key}', out.numpy(), case[key], resize_strips))
  failures = [f for f in failures if f]
  assert not failures, '\n'.join(failures)


def test_device_normalize_equals_host_normalize(e2e):
  clips = e2e['val_resized_uint8'][None]
  ours = np.asarray(transforms.normalize(clips, MEAN, STD))
  assert ours.dtype == np.float32
  np.testing.assert_allclose(
    ours, transforms.normalize_tf(clips, MEAN, STD).numpy(), rtol=0, atol=1e-6
  )
  np.testing.assert_allclose(
    ours[0, 0, 0, 0], (clips[0, 0, 0, 0] - np.array(MEAN)) / np.array(STD), rtol=1e-6
  )


def test_random_rescale_covers_the_inclusive_range():
  frames = _frames(30, 40, n=1)
  low = transforms.random_rescale(frames, (32, 48), tf.constant(0.0, tf.float64))
  high = transforms.random_rescale(frames, (32, 48), tf.constant(np.nextafter(1.0, 0.0)))
  assert low.shape == (1, 32, 43, 3) and high.shape == (1, 48, 64, 3)
  sides = {
    min(transforms.random_rescale(frames, (32, 48), tf.constant(u)).shape[1:3])
    for u in (np.arange(17) + 0.5) / 17
  }
  assert sides == set(range(32, 49))
  with pytest.raises(ValueError, match='train_scale_range'):
    transforms.random_rescale(frames, (48, 32), tf.constant(0.5))


def test_random_crop_excludes_the_last_offset_like_mmaction2():
  def offsets(h, w, u):
    return [
      int(v) for v in transforms.random_crop_offsets(h, w, 224, tf.constant(u), tf.constant(u))
    ]

  assert offsets(256, 300, 0.0) == [0, 0]
  assert offsets(256, 300, np.nextafter(1.0, 0.0)) == [31, 75]  # randint(0, 32), (0, 76)
  assert offsets(224, 224, 0.9) == [0, 0]
  frames = _frames(256, 300, n=3)
  crop = transforms.random_crop(frames, 224, tf.constant(0.5), tf.constant(0.25))
  np.testing.assert_array_equal(crop, frames.numpy()[:, 16:240, 19:243])
  with pytest.raises(tf.errors.InvalidArgumentError, match='RandomCrop'):
    transforms.random_crop(_frames(200, 300), 224, tf.constant(0.5), tf.constant(0.5))


def test_flip_and_train_transform():
  frames = _frames(40, 50, n=2)
  np.testing.assert_array_equal(
    transforms.random_flip(frames, 0.5, tf.constant(0.49)), frames.numpy()[:, :, ::-1]
  )
  np.testing.assert_array_equal(transforms.random_flip(frames, 0.5, tf.constant(0.5)), frames)
  np.testing.assert_array_equal(transforms.random_flip(frames, 0.0, tf.constant(0.0)), frames)
  # scale u=0 -> short side 32 (40x50 -> 32x40); crop 28 at (0, 0); u=0 flips.
  uniform = tf.constant([0.0, 0.0, 0.0, 0.0], tf.float64)
  out = transforms.train_transform(
    frames, scale_range=(32, 40), crop_size=28, flip_ratio=0.5, uniform=uniform
  ).numpy()
  want = transforms.resize(frames, 32, 40).numpy()[:, :28, :28][:, :, ::-1]
  np.testing.assert_array_equal(out, want)


def test_resize_matches_a_float_bilinear_within_one_level_up_and_down():
  frames = _frames(37, 53, n=2, seed=3)
  for size in [(20, 29), (37, 53), (74, 106), (90, 61)]:
    ours = transforms.resize(frames, *size).numpy().astype(np.int64)
    ref = tf.image.resize(frames, size, method='bilinear', antialias=False).numpy()
    assert np.abs(ours - ref).max() < 1.0, size
  np.testing.assert_array_equal(transforms.resize(frames, 37, 53), frames)  # identity
  # The fixed-point kernel itself (bypassed for same-size resizes) is exact at scale 1, too.
  taps = transforms._linear_taps(53, 53, 0, 53) + transforms._linear_taps(37, 37, 0, 37)
  np.testing.assert_array_equal(transforms._apply_taps(frames, *taps), frames)


def test_windowed_resize_equals_resize_then_crop():
  frames = _frames(45, 61, n=2, seed=4)
  full = transforms.resize(frames, 70, 95).numpy()
  np.testing.assert_array_equal(
    transforms.resize_window(frames, 70, 95, 9, 30, 50, 40), full[:, 9:59, 30:70]
  )
  for uniform in ([0.3, 0.7, 0.2, 0.9], [0.99, 0.01, 0.99, 0.1]):
    u = tf.constant(uniform, tf.float64)
    fused = transforms.train_transform(
      frames, scale_range=(48, 64), crop_size=40, flip_ratio=0.5, uniform=u
    )
    steps = transforms.random_flip(
      transforms.random_crop(transforms.random_rescale(frames, (48, 64), u[0]), 40, u[1], u[2]),
      0.5,
      u[3],
    )
    np.testing.assert_array_equal(fused, steps)
  np.testing.assert_array_equal(
    transforms.val_transform(frames, short_side=48, crop_size=40),
    transforms.center_crop(transforms.resize_short_side(frames, 48), 40),
  )
  # Multi-view on distinct frames + `order` equals multi-view on the clip-major sequence.
  order = tf.constant([0, 1, 1, 0, 1, 0])
  kwargs = dict(short_side=48, crop_size=48, num_clips=3, clip_len=2)
  np.testing.assert_array_equal(
    transforms.multi_view_transform(frames, order=order, **kwargs),
    transforms.multi_view_transform(tf.gather(frames, order), **kwargs),
  )
