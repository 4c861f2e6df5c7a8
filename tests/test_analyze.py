"""View coefficients of CoST layers: learned (CoST(a)) and predicted over a dataset (CoST(b))."""

import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util
from matplotlib import image as mpimg

from cost_jax import analyze
from cost_jax.data import transforms
from cost_jax.inference import loading
from tests import fixtures, tfrecord_factory

CLASSES = ('left', 'right', 'still')


def _softmax(x, axis):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def _check_png(path):
  image = mpimg.imread(path)
  assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
  assert image[..., :3].std() > 0.05  # not a blank canvas


def test_costa_reports_softmax_of_alpha(tmp_path):
  bundle = loading.load_bundle(fixtures.path('costa.pth'))
  report = analyze.analyze(bundle)
  state = fixtures.state_dict('costa')
  alphas = {
    k[len('backbone.') : -len('.conv2.conv.alpha')]: v
    for k, v in state.items()
    if k.endswith('.alpha')
  }
  assert list(report['layers']) == sorted(alphas, key=lambda k: tuple(map(int, k[5:].split('.'))))
  for layer, alpha in alphas.items():  # torch layout (3 views, C channels)
    weights = _softmax(alpha.astype(np.float64), axis=0)
    stats = report['layers'][layer]
    np.testing.assert_allclose(stats['mean'], weights.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(stats['std'], weights.std(axis=1), atol=1e-6)
    np.testing.assert_allclose(stats['min'], weights.min(axis=1), atol=1e-6)
    assert stats['channels'] == alpha.shape[1]
    assert abs(sum(stats['mean']) - 1) < 1e-6
  assert report['views'] == ['H-W', 'T-W', 'T-H'] and report['kind'] == 'learned'

  assert (
    analyze.main(['--checkpoint', fixtures.path('costa.pth'), '--output_dir', str(tmp_path)]) == 0
  )
  with open(tmp_path / analyze.JSON_NAME) as f:
    written = json.load(f)
  assert written['layers'].keys() == report['layers'].keys()
  for layer in report['layers']:
    np.testing.assert_allclose(written['layers'][layer]['mean'], report['layers'][layer]['mean'])
  _check_png(tmp_path / analyze.PNG_NAME)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """7 val videos of 3 classes (10 frames of 32x40) as TFRecords."""
  root = str(tmp_path_factory.mktemp('tfrecords'))
  rng = np.random.default_rng(0)
  labels = [0, 1, 2, 0, 1, 0, 2]
  videos = [(rng.integers(0, 256, (10, 32, 40, 3), dtype=np.uint8), label) for label in labels]
  tfrecord_factory.write_split(root, 'val', videos, CLASSES, num_shards=2)
  return root


@pytest.fixture(scope='module')
def costb():
  return loading.load_bundle(
    fixtures.path('costb.pth'),
    protocol_overrides=dict(clip_len=4, frame_interval=2, val_short_side=32, crop_size=32),
  )


def test_costb_statistics_over_a_dataset(costb, data_dir, tmp_path):
  # Batches of 3: the last one is padded with 2 masked examples, which must not count.
  batches, names = analyze.val_batches(costb, data_dir, 'val', batch_size=3)
  report = analyze.analyze(costb, batches, per_class=True, data_source=data_dir, class_names=names)
  assert report['num_videos'] == 7 and report['kind'] == 'predicted'
  assert {c: s['num_videos'] for c, s in report['per_class'].items()} == {
    'left': 3,
    'right': 2,
    'still': 2,
  }

  # Reference: the coefficients the CoST(b) layers sow, for all 7 clips in one batch.
  (full,), _ = analyze.val_batches(costb, data_dir, 'val', batch_size=7)
  assert full['mask'].all()
  clips = transforms.normalize(full['clips'], costb.protocol.mean, costb.protocol.std)
  _, state = jax.jit(lambda v, c: costb.model.apply(v, c, mutable=['intermediates']))(
    costb.variables, clips
  )
  flat = traverse_util.flatten_dict(state['intermediates'])  # leaves: tuples of sown values
  sown = {
    k[1].replace('_', '.'): np.asarray(v[0]) for k, v in flat.items() if k[-1] == 'view_weights'
  }
  assert set(sown) == set(report['layers']) and len(sown) == 8
  for layer, weights in sown.items():  # (7, C, 3)
    stats = report['layers'][layer]
    np.testing.assert_allclose(stats['mean'], weights.reshape(-1, 3).mean(0), atol=1e-5)
    np.testing.assert_allclose(stats['std'], weights.reshape(-1, 3).std(0), atol=1e-5)
    assert abs(sum(stats['mean']) - 1) < 1e-5
    left = weights[full['label'] == 0].reshape(-1, 3)
    np.testing.assert_allclose(report['per_class']['left'][layer]['mean'], left.mean(0), atol=1e-5)
  assert any(max(s['std']) > 1e-3 for s in report['layers'].values())

  paths = analyze.write_report(report, str(tmp_path))
  _check_png(paths['png'])
  _check_png(paths['per_class_png'])
  with open(paths['json']) as f:
    assert json.load(f)['per_class']['still']['num_videos'] == 2


def test_max_videos_and_cli(costb, data_dir, tmp_path, capsys):
  batches, _ = analyze.val_batches(costb, data_dir, 'val', batch_size=3, max_videos=4)
  assert analyze.analyze(costb, batches)['num_videos'] == 4
  # CoST(b) without data, and a model without CoST layers, are clear errors.
  assert (
    analyze.main(['--checkpoint', fixtures.path('costb.pth'), '--output_dir', str(tmp_path)]) == 2
  )
  assert 'give data (--data DIR)' in capsys.readouterr().err
  assert (
    analyze.main(['--checkpoint', fixtures.path('c2d.pth'), '--output_dir', str(tmp_path)]) == 2
  )
  assert "arch 'c2d' has no CoST layers" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / analyze.JSON_NAME)
