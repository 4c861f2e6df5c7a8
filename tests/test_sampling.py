"""Frame sampling: NumPy reference and TF version vs MMAction2 fixtures and each other."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from cost_jax.data import sampling
from tests import fixtures


@functools.lru_cache(maxsize=None)
def _tf_sampler(clip_len, frame_interval, num_clips, test_mode):
  # As the input pipeline traces it: as written, without AutoGraph.
  @tf.function(
    input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([None], tf.float64)],
    autograph=False,
  )
  def fn(num_frames, uniform):
    return sampling.sample_frame_indices_tf(
      num_frames, clip_len, frame_interval, num_clips, test_mode, None if test_mode else uniform
    )

  return fn


def _tf_indices(num_frames, clip_len, frame_interval, num_clips, test_mode, uniform=None):
  uniform = np.zeros([num_clips]) if uniform is None else uniform
  fn = _tf_sampler(clip_len, frame_interval, num_clips, test_mode)
  return fn(tf.constant(num_frames, tf.int32), tf.constant(uniform, tf.float64)).numpy()


@pytest.fixture(scope='module')
def fixture_cases():
  data = fixtures.load_json('pipeline.json')
  common = data['sample_frames']['common']
  assert common['start_index'] == 0 and common['out_of_bound_opt'] == 'loop'
  # Extra cases with start_index 1 (and loop, no twice_sample): start_index is added after
  # the modulo, so they are our indices + 1.
  extra = [
    c
    for c in data['sample_frames_extra']
    if c['out_of_bound_opt'] == 'loop' and not c['twice_sample']
  ]
  assert extra and all(c['start_index'] == 1 for c in extra)
  return [dict(c, start_index=0) for c in data['sample_frames']['cases']] + extra


def test_numpy_and_tf_match_all_mmaction2_cases(fixture_cases):
  assert len(fixture_cases) > 502
  for case in fixture_cases:
    args = (case['total_frames'], case['clip_len'], case['frame_interval'], case['num_clips'])
    want = np.asarray(case['frame_inds']) - case['start_index']
    got_np = sampling.sample_frame_indices(*args, test_mode=True)
    assert got_np.dtype == np.int64 and got_np.shape == want.shape, case
    np.testing.assert_array_equal(got_np, want, err_msg=str(case))
    np.testing.assert_array_equal(_tf_indices(*args, test_mode=True), want, err_msg=str(case))


def test_loop_examples_from_the_readme():
  np.testing.assert_array_equal(
    sampling.sample_frame_indices(9, 8, 8, 1, True), [0, 8, 7, 6, 5, 4, 3, 2]
  )
  np.testing.assert_array_equal(sampling.sample_frame_indices(8, 8, 8, 1, True), [0] * 8)


def test_train_mode_tf_equals_numpy_for_the_same_draws():
  rng = np.random.default_rng(0)
  for clip_len, interval, num_clips in [(8, 8, 1), (4, 2, 3), (2, 3, 10), (1, 1, 2), (16, 1, 4)]:
    for num_frames in range(1, 3 * clip_len * interval + 12):
      for uniform in (
        rng.random(num_clips),
        np.zeros(num_clips),
        np.full(num_clips, np.nextafter(1.0, 0.0)),
      ):
        args = (num_frames, clip_len, interval, num_clips, False)
        want = sampling.sample_frame_indices(*args, uniform=uniform)
        np.testing.assert_array_equal(
          _tf_indices(*args, uniform=uniform), want, err_msg=f'{args} {uniform}'
        )
        assert want.min() >= 0 and want.max() < num_frames


def test_train_mode_branches():
  # avg > 0: one start per segment, each value of randint(avg) reachable.
  span, num_frames = 64, 100
  avg = num_frames - span + 1
  starts = {
    int(sampling.clip_offsets(num_frames, 8, 8, 1, False, [u])[0])
    for u in (np.arange(avg) + 0.5) / avg
  }
  assert starts == set(range(avg))
  two = sampling.clip_offsets(40, 4, 2, 2, False, [0.0, 0.999])  # avg = 16
  np.testing.assert_array_equal(two, [0, 16 + 15])
  # avg <= 0 but T > max(num_clips, span): sorted random starts in [0, T - span].
  sorted_starts = sampling.clip_offsets(10, 4, 2, 5, False, [0.9, 0.1, 0.5, 0.0, 0.7])
  np.testing.assert_array_equal(sorted_starts, [0, 0, 1, 2, 2])
  # avg == 0 and T <= max(num_clips, span): round(i * ratio), half to even (np.around).
  np.testing.assert_array_equal(
    sampling.clip_offsets(8, 8, 1, 10, False, np.zeros(10)), [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
  )
  # avg < 0: all zeros, then the loop wraps.
  np.testing.assert_array_equal(
    sampling.sample_frame_indices(3, 4, 2, 2, False, uniform=[0.3, 0.6]), [0, 2, 1, 0, 0, 2, 1, 0]
  )


def test_train_mode_distribution_is_uniform_over_valid_starts():
  rng = np.random.default_rng(1)
  num_frames, clip_len, interval = 50, 4, 4  # span 16 -> starts 0..34
  draws = np.array(
    [
      sampling.sample_frame_indices(num_frames, clip_len, interval, 1, False, rng=rng)[0]
      for _ in range(7000)
    ]
  )
  counts = np.bincount(draws, minlength=35)
  assert counts.size == 35 and counts.min() > 0
  # Chi-square against uniform, 34 dof: the 0.999 quantile is about 65.
  expected = draws.size / 35
  assert ((counts - expected) ** 2 / expected).sum() < 65

  uniform = tf.random.stateless_uniform([2000, 1], seed=[3, 4], dtype=tf.float64).numpy()
  tf_starts = np.array(
    [_tf_indices(num_frames, clip_len, interval, 1, False, u)[0] for u in uniform[:300]]
  )
  assert tf_starts.min() >= 0 and tf_starts.max() <= 34 and len(set(tf_starts)) > 25


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='num_frames'):
    sampling.sample_frame_indices(0, 8, 8, 1, True)
  with pytest.raises(ValueError, match='clip_len'):
    sampling.sample_frame_indices(10, 0, 8, 1, True)
  with pytest.raises(ValueError, match='uniform'):
    sampling.clip_offsets(10, 2, 2, 2, False, [0.5])
  with pytest.raises(ValueError, match='uniform'):
    sampling.sample_frame_indices_tf(tf.constant(10), 2, 2, 1, False)


def test_tf_version_inside_tf_data_matches_fixtures(fixture_cases):
  cases = [
    c
    for c in fixture_cases
    if (c['clip_len'], c['frame_interval'], c['num_clips']) == (8, 3, 10) and c['start_index'] == 0
  ]
  assert len(cases) > 5
  ds = tf.data.Dataset.from_tensor_slices([c['total_frames'] for c in cases]).map(
    lambda t: sampling.sample_frame_indices_tf(t, 8, 3, 10, test_mode=True)
  )
  for case, got in zip(cases, ds.as_numpy_iterator()):
    np.testing.assert_array_equal(got, case['frame_inds'], err_msg=str(case))
