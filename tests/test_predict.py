"""Prediction on video files: test views, view averaging, label maps, bad videos, checkpoints."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from cost_jax import predict
from cost_jax.checkpoints import saving
from cost_jax.data import sampling, transforms
from cost_jax.data.labels import read_label_names
from cost_jax.inference import loading, video_clips
from cost_jax.training.state import TrainState
from cost_jax.weights import import_mmaction2
from cost_jax.weights.saved import save_model
from tests import fixtures, train_testlib, trees, video_factory

NAMES = [f'action {i}' for i in range(10)]  # the costb fixture has 10 classes
# Test protocol at toy size; clip_len 4 x interval 2 over 20 frames gives 10 distinct clip starts.
TINY = dict(
  clip_len=4,
  frame_interval=2,
  val_short_side=32,
  crop_size=28,
  test_short_side=32,
  test_crop_size=32,
  views_per_chunk=7,
)


@pytest.fixture(scope='module')
def saved_dir(tmp_path_factory):
  """A saved model imported from the MMAction2 costb fixture, with a label file next to it."""
  model_config, variables = import_mmaction2(fixtures.path('costb.pth'))
  directory = save_model(str(tmp_path_factory.mktemp('costb_saved')), model_config, variables)
  with open(os.path.join(directory, 'labels.txt'), 'w') as f:
    f.write('\n'.join(NAMES) + '\n')
  return directory


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp('videos')
  paths = {
    'landscape': video_factory.write_video(
      str(root / 'landscape.mp4'), video_factory.pattern_frames(20, 32, 40, 0)
    ),
    'portrait': video_factory.write_video(
      str(root / 'portrait.mp4'), video_factory.pattern_frames(20, 40, 32, 1)
    ),
    'garbage': video_factory.write_bytes(str(root / 'garbage.mp4'), b'this is not a video'),
    'audio': video_factory.write_audio_only(str(root / 'audio.mp4')),
    'missing': str(root / 'missing.mp4'),
  }
  return paths


@pytest.fixture(scope='module')
def bundle(saved_dir):
  return loading.load_bundle(saved_dir, protocol_overrides=TINY)


@pytest.mark.parametrize('kind,offsets', [('landscape', (0, 8, 4)), ('portrait', (0, 8, 4))])
def test_views_are_the_official_test_pipeline(bundle, videos, kind, offsets):
  """30 views = 10 clips (SampleFrames test mode) x ThreeCrop [start, end, middle], crop-major;
  1 view = centre clip, CenterCrop. At short side 32 the resize is the identity."""
  frames = video_clips.read_video(videos[kind]).frames
  assert frames.shape == ((20, 32, 40, 3) if kind == 'landscape' else (20, 40, 32, 3))
  views, _ = video_clips.video_views(videos[kind], bundle.protocol, 30)
  assert views.shape == (30, 4, 32, 32, 3) and views.dtype == np.uint8
  starts = sampling.clip_offsets(20, 4, 2, 10, test_mode=True)
  assert len(set(starts.tolist())) == 10
  for crop, offset in enumerate(offsets):
    for clip in range(10):
      clip_frames = frames[(starts[clip] + 2 * np.arange(4)) % 20]
      if kind == 'landscape':
        expected = clip_frames[:, :, offset : offset + 32]
      else:
        expected = clip_frames[:, offset : offset + 32, :]
      np.testing.assert_array_equal(views[crop * 10 + clip], expected)
  one, _ = video_clips.video_views(videos[kind], bundle.protocol, 1)
  assert one.shape == (1, 4, 28, 28, 3)
  centre = frames[(sampling.clip_offsets(20, 4, 2, 1, test_mode=True)[0] + 2 * np.arange(4))]
  top, left = (2, 6) if kind == 'landscape' else (6, 2)
  np.testing.assert_array_equal(one[0], centre[:, top : top + 28, left : left + 28])


def test_predict_averages_softmax_over_views_and_survives_bad_videos(bundle, videos):
  paths = [
    videos['landscape'],
    videos['garbage'],
    videos['portrait'],
    videos['missing'],
    videos['audio'],
  ]
  results = predict.predict_videos(bundle, paths, top_k=5)
  assert [r['ok'] for r in results] == [True, False, True, False, False]
  assert [r['video'] for r in results] == paths
  assert 'not a video' in results[1]['error']
  assert 'missing file' in results[3]['error']
  assert 'no video stream' in results[4]['error']
  model_fn = jax.jit(
    lambda v, c: bundle.model.apply(
      v, transforms.normalize(c, bundle.protocol.mean, bundle.protocol.std)
    )
  )
  for result, kind in ((results[0], 'landscape'), (results[2], 'portrait')):
    assert result['num_views'] == 30 and result['view_shape'] == [4, 32, 32, 3]
    # 30 views in chunks of 7 (the last one padded) == one batch of 30, softmax then mean.
    views, _ = video_clips.video_views(videos[kind], bundle.protocol, 30)
    expected = np.asarray(jax.nn.softmax(model_fn(bundle.variables, views), axis=-1)).mean(0)
    np.testing.assert_allclose(result['probabilities'], expected, atol=2e-6)
    assert abs(float(result['probabilities'].sum()) - 1) < 1e-5
    top = result['top']
    assert len(top) == 5
    assert [t['index'] for t in top] == np.argsort(-expected, kind='stable')[:5].tolist()
    assert [t['label'] for t in top] == [NAMES[t['index']] for t in top]  # labels.txt was found
    assert all(a['probability'] >= b['probability'] for a, b in zip(top, top[1:]))
  text = predict.format_text(results)
  assert f'1. {results[0]["top"][0]["label"]}' in text and 'ERROR: not a video' in text


def test_one_view_is_the_centre_clip(bundle, videos):
  (result,) = predict.predict_videos(bundle, [videos['landscape']], views=1, top_k=3)
  assert result['num_views'] == 1 and result['view_shape'] == [4, 28, 28, 3]
  views, _ = video_clips.video_views(videos['landscape'], bundle.protocol, 1)
  np.testing.assert_allclose(result['probabilities'], bundle.view_scores(views)[0], atol=1e-6)
  assert len(result['top']) == 3
  with pytest.raises(ValueError, match='multiple of 3'):
    predict.predict_videos(bundle, [videos['landscape']], views=4)


def test_cli_json_output_and_exit_status(saved_dir, videos, capsys):
  status = predict.main(
    [
      '--checkpoint',
      saved_dir,
      '--json',
      '--views=1',
      '--clip_len=4',
      '--frame_interval=2',
      '--short_side=32',
      '--crop_size=28',
      videos['portrait'],
      videos['garbage'],
      videos['landscape'],
    ]
  )
  captured = capsys.readouterr()
  assert status == 1  # one video failed
  report = json.loads(captured.out)
  assert report['arch'] == 'costb' and report['num_classes'] == 10
  ok = [v['ok'] for v in report['videos']]
  assert ok == [True, False, True]
  assert report['videos'][1]['video'] == videos['garbage']
  assert 'not a video' in report['videos'][1]['error']
  assert 'garbage.mp4' in captured.err
  for video in (report['videos'][0], report['videos'][2]):
    assert video['num_views'] == 1 and len(video['top']) == 5
    assert {t['label'] for t in video['top']} <= set(NAMES)
  assert predict.main(['--checkpoint', os.path.join(saved_dir, 'nope'), videos['portrait']]) == 2
  assert 'does not exist' in capsys.readouterr().err


def _trainer_workdir(root, config, variables, steps):
  """A workdir laid out as the trainer writes it: config.json, manifests/, checkpoints/<step>."""
  workdir = str(root)
  os.makedirs(os.path.join(workdir, 'manifests'))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(json.loads(config.to_json_best_effort()), f)
  with open(os.path.join(workdir, 'manifests', 'val.manifest.json'), 'w') as f:
    json.dump({'split': 'val', 'label_map': NAMES[::-1], 'num_classes': 10}, f)
  tx = optax.sgd(0.1, momentum=0.9)
  manager = saving.create_manager(os.path.join(workdir, 'checkpoints'), keep=5)
  for step, scale in steps:
    params = jax.tree.map(lambda x, scale=scale: np.asarray(x) * scale, variables['params'])
    state = TrainState(
      step=np.int32(step),
      params=params,
      batch_stats=variables['batch_stats'],
      opt_state=tx.init(params),
      rng=np.zeros(2, np.uint32),
    )
    saving.save(manager, state, {'step': step})
  manager.wait_until_finished()
  manager.close()
  return workdir


def test_trainer_workdir_checkpoint_and_step(tmp_path, bundle, videos):
  config = train_testlib.tiny_config('unused', arch='costb', r50=True)
  config.model.update(num_classes=10, base_channels=8)  # the fixture's width and classes
  config.data.update(**{k: v for k, v in TINY.items() if k != 'views_per_chunk'})
  model_config, variables = import_mmaction2(fixtures.path('costb.pth'), config)
  workdir = _trainer_workdir(tmp_path / 'run', config, variables, [(3, 0.5), (5, 1.0)])
  latest = loading.load_bundle(workdir)
  assert latest.source.endswith(os.path.join('checkpoints', '5'))
  assert latest.label_names == NAMES[::-1]  # from the data manifest
  assert latest.protocol.clip_len == 4 and latest.protocol.crop_size == 28  # from config.json
  assert latest.protocol.test_num_clips == config.data.test_num_clips
  for path, got, want in trees.leaf_pairs(latest.variables, bundle.variables):
    np.testing.assert_array_equal(got, want, err_msg=path)
  older = loading.load_bundle(os.path.join(workdir, 'checkpoints', '3'))
  kernel = older.variables['params']['cls_head']['fc_cls']['kernel']
  np.testing.assert_allclose(
    kernel, 0.5 * np.asarray(bundle.variables['params']['cls_head']['fc_cls']['kernel']), rtol=1e-6
  )
  from_dir = loading.load_bundle(os.path.join(workdir, 'checkpoints'))
  assert from_dir.source == latest.source
  (result,) = predict.predict_videos(latest, [videos['landscape']], views=1)
  (reference,) = predict.predict_videos(bundle, [videos['landscape']], views=1)
  np.testing.assert_allclose(result['probabilities'], reference['probabilities'], atol=1e-6)
  assert result['top'][0]['label'] == NAMES[::-1][reference['top'][0]['index']]


def test_loading_errors_name_the_problem(tmp_path, saved_dir):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    loading.load_bundle(str(tmp_path / 'absent'))
  with pytest.raises(ValueError, match='not a trainer workdir'):
    loading.load_bundle(str(tmp_path))
  (tmp_path / 'weights.bin').write_bytes(b'0')
  with pytest.raises(ValueError, match='MMAction2'):
    loading.load_bundle(str(tmp_path / 'weights.bin'))
  labels = tmp_path / 'three.txt'
  labels.write_text('a\nb\nc\n')
  with pytest.raises(ValueError, match='three.txt: 3 class names, but the model has 10'):
    loading.load_bundle(saved_dir, labels=str(labels))
  with pytest.raises(ValueError, match='test_short_side == test_crop_size'):
    loading.load_bundle(saved_dir, protocol_overrides={'test_crop_size': 224})
  with pytest.raises(ValueError, match='unknown protocol fields'):
    loading.load_bundle(saved_dir, protocol_overrides={'clip_length': 4})
  empty = tmp_path / 'empty_run'
  (empty / 'checkpoints').mkdir(parents=True)
  tiny = train_testlib.tiny_config('unused', arch='costb')
  (empty / 'config.json').write_text(tiny.to_json_best_effort())
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    loading.load_bundle(str(empty))
  (empty / 'config.json').write_text('{"model": {}}')
  with pytest.raises(ValueError, match="no 'data' section"):
    loading.load_bundle(str(empty))
  as_json = tmp_path / 'names.json'
  as_json.write_text(json.dumps({str(i): n for i, n in enumerate(NAMES)}))
  assert read_label_names(str(as_json)) == NAMES
