"""The synthetic temporal dataset: determinism, exact time reversal, list files, TFRecords."""

import os

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cost_jax.data import labels, schema
from data_prep import build, convert, synthetic

TINY = synthetic.SyntheticConfig(
  num_classes=4, train_per_class=2, val_per_class=1, frames=8, size=32, fps=4, seed=3
)


def decode(path: str) -> np.ndarray:
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('synthetic'))
  return out, synthetic.generate(out, TINY, workers=1)


def test_list_files_and_labels_are_valid(tiny_dataset):
  _, paths = tiny_dataset
  assert labels.read_label_names(paths['labels']) == [
    'move_right',
    'move_left',
    'move_down',
    'move_up',
  ]
  for split, per_class in (('train', 2), ('val', 1)):
    entries = build.read_list_file(paths[f'{split}_list'], paths['video_root'])
    assert sorted(e.label for e in entries) == sorted(list(range(4)) * per_class)
    for entry in entries:
      assert entry.name.startswith(f'{split}/') and os.path.isfile(entry.path)
      video = decode(entry.path)
      assert video.shape == (TINY.frames, TINY.size, TINY.size, 3)
      with av.open(entry.path) as container:
        assert container.streams.video[0].average_rate == TINY.fps


def test_generation_is_deterministic(tiny_dataset, tmp_path):
  out, paths = tiny_dataset
  again = synthetic.generate(str(tmp_path), TINY, workers=2)
  for key in ('labels', 'train_list', 'val_list'):
    with open(paths[key], 'rb') as a, open(again[key], 'rb') as b:
      assert a.read() == b.read()
  for rel in ('train/move_left/00001.mp4', 'val/move_up/00000.mp4'):
    with (
      open(os.path.join(paths['video_root'], rel), 'rb') as a,
      open(os.path.join(again['video_root'], rel), 'rb') as b,
    ):
      assert a.read() == b.read()
  other_seed = synthetic.generate(
    str(tmp_path / 'seed4'), synthetic.SyntheticConfig(**{**TINY.__dict__, 'seed': 4})
  )
  rel = 'train/move_left/00001.mp4'
  assert not np.array_equal(
    decode(os.path.join(paths['video_root'], rel)),
    decode(os.path.join(other_seed['video_root'], rel)),
  )
  # A second call with the same options reuses the files.
  mtime = os.stat(os.path.join(paths['video_root'], rel)).st_mtime_ns
  synthetic.generate(out, TINY)
  assert os.stat(os.path.join(paths['video_root'], rel)).st_mtime_ns == mtime


@pytest.mark.parametrize('pair', range(4))
def test_each_pair_is_an_exact_time_reversal(pair, tmp_path):
  forward = synthetic.make_video(2 * pair, 8, 32, np.random.default_rng(11))
  backward = synthetic.make_video(2 * pair + 1, 8, 32, np.random.default_rng(11))
  np.testing.assert_array_equal(backward, forward[::-1])
  assert not np.array_equal(forward[0], forward[-1])  # something does move
  # Intra-only coding keeps the reversal exact in the decoded files.
  synthetic.write_mp4(str(tmp_path / 'f.mp4'), forward, fps=8)
  synthetic.write_mp4(str(tmp_path / 'b.mp4'), backward, fps=8)
  np.testing.assert_array_equal(
    decode(str(tmp_path / 'b.mp4')), decode(str(tmp_path / 'f.mp4'))[::-1]
  )


def test_forward_classes_move_as_named(monkeypatch):
  """On a black background the object's pixels show the motion each class name promises."""
  monkeypatch.setattr(synthetic, '_background', lambda rng, size: np.zeros((size, size, 3)))
  size, frames = 64, 16
  yy, xx = np.mgrid[:size, :size]

  def track(pair, seed):
    video = synthetic.render_forward(np.random.default_rng(seed), pair, frames, size)
    out = []
    for frame in video:
      mask = frame.any(axis=-1)
      colours = np.unique(frame[mask], axis=0)
      halves = [np.all(frame == c, axis=-1) for c in colours[:2]]
      out.append(
        (
          xx[mask].mean(),
          yy[mask].mean(),
          mask.sum(),
          [(xx[h].mean(), yy[h].mean()) for h in halves],
        )
      )
    return out

  for seed in range(3):
    x = [t[0] for t in track(0, seed)]
    assert x[-1] - x[0] > 0.25 * size  # move_right: x grows
    y = [t[1] for t in track(1, seed)]
    assert y[-1] - y[0] > 0.25 * size  # move_down: y grows
    area = [t[2] for t in track(3, seed)]
    assert area[-1] > 4 * area[0]  # grow
    spin = track(2, seed)  # clockwise on screen (y down)
    angles = [np.arctan2(b[1] - a[1], b[0] - a[0]) for *_, (a, b) in spin]
    steps = np.angle(np.exp(1j * np.diff(angles)))
    assert np.all(steps > 0) and np.all(steps < np.pi / 2), steps


def test_generate_and_convert_writes_both_splits(tmp_path):
  tiny = synthetic.SyntheticConfig(
    num_classes=2, train_per_class=2, val_per_class=1, frames=6, size=16, fps=4
  )
  summaries = synthetic.generate_and_convert(
    str(tmp_path),
    tiny,
    convert.ConvertOptions(short_side=0, num_shards=2, workers=1, progress=False),
  )
  assert [(s['split'], s['num_examples'], s['num_skipped']) for s in summaries] == [
    ('train', 4, 0),
    ('val', 2, 0),
  ]
  manifest = schema.read_manifest(str(tmp_path / 'tfrecords'), 'val')
  assert manifest['label_map'] == ['move_right', 'move_left']
  assert [s['num_examples'] for s in manifest['shards']] == [1, 1]
  builder = tfds.builder_from_directory(str(tmp_path / 'tfrecords'))
  assert builder.info.name == synthetic.DATASET_NAME
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {'train': 4, 'val': 2}
  videos = [e['video'] for e in tfds.as_numpy(builder.as_dataset(split='val'))]
  assert [v.shape for v in videos] == [(6, 16, 16, 3)] * 2


def test_bad_options_are_rejected(tmp_path, capsys):
  with pytest.raises(ValueError, match='num_classes=3'):
    synthetic.SyntheticConfig(num_classes=3)
  assert synthetic.main([f'--output={tmp_path}', '--num_classes=10']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and 'num_classes=10' in err
  assert synthetic.main([f'--output={tmp_path}', '--num-classes=4']) == 2
  assert "Unknown command line flag 'num-classes'" in capsys.readouterr().err
