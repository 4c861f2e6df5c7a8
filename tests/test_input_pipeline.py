"""The tf.data pipeline end to end on tiny TFDS datasets: content, per-host splits, padding,
resume, damaged shards named, lossless frames exact."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from configs import base
from cost_jax import storage
from cost_jax.data import dataset as dataset_lib
from cost_jax.data import input_pipeline, sampling, schema, transforms
from tests import fixtures
from tests import tfrecord_factory as factory

NUM_CLASSES = 4
SHARD_SIZES = (3, 2, 2, 3, 1)  # 11 videos in 5 shards
CLIP_LEN, INTERVAL, TEST_CLIPS = 4, 2, 2


def _video(i):
  num_frames = 6 + (7 * i) % 24  # 6..29 frames: short (looping) and long videos
  height, width = (52, 40) if i % 3 == 0 else (40, 52)
  return factory.pattern_video(num_frames, height, width, video_id=i), i % NUM_CLASSES


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfrecords'))
  videos = [_video(i) for i in range(sum(SHARD_SIZES))]
  factory.write_split(
    path, 'train', videos, [f'class_{c}' for c in range(NUM_CLASSES)], shard_sizes=SHARD_SIZES
  )
  return path


def _config(data_dir, **overrides):
  cfg = base.get_config().data
  cfg.update(
    dict(
      data_dir=data_dir,
      val_split='train',
      test_split='train',
      clip_len=CLIP_LEN,
      frame_interval=INTERVAL,
      train_scale_range=(32, 40),
      crop_size=28,
      val_short_side=32,
      test_short_side=32,
      test_crop_size=32,
      test_num_clips=TEST_CLIPS,
      shuffle_buffer=4,
      prefetch=1,
    )
  )
  cfg.update(overrides)
  return cfg


def _num_frames(video_id):
  return _video(video_id)[0].shape[0]


def _batches(ds, n=None):
  return list((ds.take(n) if n else ds).as_numpy_iterator())


def test_dataset_info(data_dir, tmp_path):
  info = input_pipeline.get_dataset_info(data_dir, 'train')
  assert (info['num_examples'], info['num_classes']) == (11, NUM_CLASSES)
  assert info['label_map'][3] == 'class_3' and len(info['manifest']['shards']) == 5
  assert info['image_format'] == 'jpeg'
  with pytest.raises(FileNotFoundError, match='val.manifest.json'):
    input_pipeline.get_dataset_info(data_dir, 'val')
  manifest = dict(info['manifest'], num_examples=12)
  storage.write_json(schema.manifest_path(str(tmp_path), 'bad'), manifest)
  with pytest.raises(schema.DatasetError, match='num_examples is 12'):
    input_pipeline.get_dataset_info(str(tmp_path), 'bad')


def _copy(data_dir, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(data_dir, copy)
  return copy


def test_missing_or_truncated_shards_stop_before_anything_is_read(data_dir, tmp_path):
  copy = _copy(data_dir, tmp_path)
  shard = os.path.join(copy, schema.shard_name('train', 3, 5))
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) - 100)
  os.remove(os.path.join(copy, schema.shard_name('train', 1, 5)))
  with pytest.raises(schema.DatasetError) as error:
    input_pipeline.check_shard_sizes(copy, 'train')
  message = str(error.value)
  assert '\n' not in message and '2 damaged shard(s)' in message
  assert 'train-00001-of-00005.tfrecord cannot be read' in message
  assert 'train-00003-of-00005.tfrecord is' in message and '(truncated)' in message
  assert f'python -m data_prep.verify {copy}' in message
  for create in (
    lambda: input_pipeline.create_train_dataset(
      _config(copy), batch_size=1, seed=0, process_index=0, process_count=1
    ),
    lambda: input_pipeline.create_eval_dataset(
      _config(copy), split='train', batch_size=1, mode='val', process_index=0, process_count=1
    ),
  ):
    with pytest.raises(schema.DatasetError, match='train-00001-of-00005'):
      create()


def test_old_datasets_fail_with_one_line_saying_to_rerun_data_prep(data_dir, tmp_path):
  copy = _copy(data_dir, tmp_path)
  path = schema.manifest_path(copy, 'train')
  with open(path) as f:
    manifest = json.load(f)
  storage.write_json(path, dict(manifest, schema_version=1))
  with pytest.raises(schema.DatasetError) as error:
    input_pipeline.get_dataset_info(copy, 'train')
  assert '\n' not in str(error.value) and 'schema version 1' in str(error.value)
  assert 're-run data_prep' in str(error.value)
  storage.write_json(path, manifest)
  os.remove(os.path.join(copy, 'dataset_info.json'))
  with pytest.raises(schema.DatasetError, match='dataset_info.json is missing.*re-run data_prep'):
    input_pipeline.get_dataset_info(copy, 'train')


def test_the_split_is_a_tfds_dataset(data_dir):
  import tensorflow_datasets as tfds

  builder = tfds.builder_from_directory(data_dir)
  assert builder.info.splits['train'].num_examples == 11
  assert builder.info.splits['train'].shard_lengths == list(SHARD_SIZES)
  assert builder.info.features['label'].names == [f'class_{c}' for c in range(NUM_CLASSES)]
  examples = list(tfds.as_numpy(builder.as_dataset(split='train', shuffle_files=False)))
  for i, example in enumerate(examples):  # shard order = the order written
    frames, label = _video(i)
    assert example['label'] == label and example['video_id'] == f'video_{i:04d}.mp4'.encode()
    assert (
      example['video'].shape
      == frames.shape
      == (example['num_frames'], example['height'], example['width'], 3)
    )
    np.testing.assert_array_equal(factory.read_pattern(example['video'])[0], np.arange(len(frames)))
    np.testing.assert_array_equal(example['middle_frame'], example['video'][len(frames) // 2])


def test_val_batches_hold_the_sampled_frames(data_dir):
  ds, num_batches = input_pipeline.create_eval_dataset(
    _config(data_dir), split='train', batch_size=4, mode='val', process_count=1, process_index=0
  )
  batches = _batches(ds)
  assert num_batches == len(batches) == 3
  seen = []
  for batch in batches:
    assert batch['clips'].dtype == np.uint8 and batch['clips'].shape == (4, CLIP_LEN, 28, 28, 3)
    assert batch['label'].dtype == np.int32 and batch['mask'].dtype == bool
    assert batch['index'].dtype == np.int64
    for clip, label, mask, index in zip(
      batch['clips'], batch['label'], batch['mask'], batch['index']
    ):
      if not mask:
        assert index == -1 and label == 0 and not clip.any()
        continue
      frames, videos, slope = factory.read_pattern(clip)
      want = sampling.sample_frame_indices(_num_frames(index), CLIP_LEN, INTERVAL, 1, True)
      np.testing.assert_array_equal(frames, want)
      assert (videos == index).all() and label == index % NUM_CLASSES and (slope > 0).all()
      seen.append(index)
  assert sorted(seen) == list(range(11))


def test_test_batches_carry_all_views_crop_outer_clip_inner(data_dir):
  ds, num_batches = input_pipeline.create_eval_dataset(
    _config(data_dir), split='train', batch_size=3, mode='test', process_count=1, process_index=0
  )
  batches = _batches(ds)
  assert num_batches == len(batches) == 4
  views = 3 * TEST_CLIPS
  for batch in batches:
    assert batch['clips'].shape == (3, views, CLIP_LEN, 32, 32, 3)
    for clips, index, mask in zip(batch['clips'], batch['index'], batch['mask']):
      if not mask:
        continue
      want = sampling.sample_frame_indices(
        _num_frames(index), CLIP_LEN, INTERVAL, TEST_CLIPS, True
      ).reshape(TEST_CLIPS, CLIP_LEN)
      for view in range(views):
        np.testing.assert_array_equal(factory.read_pattern(clips[view])[0], want[view % TEST_CLIPS])
      if index % 3:  # landscape: crops run left, right, middle along the blue ramp
        blue = [clips[c * TEST_CLIPS][..., 2].mean() for c in range(3)]
        assert blue[0] < blue[2] < blue[1]


def test_train_batches_content_and_flips(data_dir):
  cfg = _config(data_dir)
  batches = _batches(
    input_pipeline.create_train_dataset(
      cfg, batch_size=4, seed=1, process_index=0, process_count=1
    ),
    6,
  )
  slopes = []
  for batch in batches:
    assert batch['clips'].dtype == np.uint8 and batch['clips'].shape == (4, CLIP_LEN, 28, 28, 3)
    assert batch['label'].dtype == np.int32
    for clip, label in zip(batch['clips'], batch['label']):
      frames, videos, slope = factory.read_pattern(clip)
      video = videos[0]
      assert (videos == video).all() and label == video % NUM_CLASSES
      t = _num_frames(video)
      np.testing.assert_array_equal(frames, (frames[0] + INTERVAL * np.arange(CLIP_LEN)) % t)
      assert frames[0] <= max(t - CLIP_LEN * INTERVAL, 0)
      slopes.extend(slope)
  assert set(slopes) == {-1, 1}  # flip_ratio 0.5 over 24 clips
  cfg.flip_ratio = 0.0
  unflipped = _batches(
    input_pipeline.create_train_dataset(
      cfg, batch_size=4, seed=1, process_index=0, process_count=1
    ),
    2,
  )
  assert all((factory.read_pattern(b['clips'])[2] > 0).all() for b in unflipped)


def test_train_hosts_read_their_own_part_once_per_epoch(data_dir):
  """TFDS's per-process split: host i of n reads a contiguous range of the split, of equal size
  within one video, even with more hosts than shards."""
  cfg = _config(data_dir)
  manifest = input_pipeline.get_dataset_info(data_dir, 'train')['manifest']
  for count in (2, 7):
    seen, start = [], 0
    for index in range(count):
      slices = dataset_lib.host_slices(data_dir, 'train', manifest, index, count)
      size = dataset_lib.num_host_examples(manifest, index, count)
      assert sum(s.num_examples for s in slices) == size and size in (11 // count, 11 // count + 1)
      own = list(range(start, start + size))
      start += size
      ds = input_pipeline.create_train_dataset(
        cfg, batch_size=1, seed=0, process_index=index, process_count=count
      )
      videos = [factory.read_pattern(b['clips'][0])[1][0] for b in _batches(ds, len(own))]
      assert sorted(videos) == own, (count, index)
      seen += videos
    assert sorted(seen) == list(range(11))


@pytest.mark.parametrize('mode', ['val', 'test'])
def test_eval_counts_every_video_once_on_1_2_or_7_hosts(data_dir, mode):
  cfg = _config(data_dir)
  for count in (1, 2, 7):
    indices, lengths = [], set()
    for index in range(count):
      ds, num_batches = input_pipeline.create_eval_dataset(
        cfg, split='train', batch_size=2, mode=mode, process_index=index, process_count=count
      )
      batches = _batches(ds)
      lengths.add((num_batches, len(batches)))
      for batch in batches:
        indices += list(batch['index'][batch['mask']])
        assert (batch['index'][~batch['mask']] == -1).all()
        np.testing.assert_array_equal(
          batch['label'][batch['mask']], batch['index'][batch['mask']] % NUM_CLASSES
        )
        # The index is the video's position in shard order: its pattern says which it is.
        for clips, index in zip(batch['clips'][batch['mask']], batch['index'][batch['mask']]):
          assert (factory.read_pattern(clips)[1] == index).all()
    assert len(lengths) == 1, (count, lengths)  # same batch count on every host
    num_batches, _ = lengths.pop()
    assert num_batches == -(-(11 // count + (11 % count > 0)) // 2)
    assert sorted(indices) == list(range(11)), (count, indices)


def test_train_is_deterministic_and_resumes_at_any_step(data_dir):
  cfg = _config(data_dir)

  def run(seed, start_step, n):
    return _batches(
      input_pipeline.create_train_dataset(
        cfg, batch_size=3, seed=seed, start_step=start_step, process_index=0, process_count=1
      ),
      n,
    )

  fresh = run(0, 0, 9)  # 27 examples: crosses two epochs of 11
  again = run(0, 0, 9)
  for a, b in zip(fresh, again):
    np.testing.assert_array_equal(a['clips'], b['clips'])
  for start in (2, 4, 7):  # examples 6, 12, 21: inside epoch 0, just past its end, end of 1
    for a, b in zip(run(0, start, 9 - start), fresh[start:]):
      np.testing.assert_array_equal(a['clips'], b['clips'])
      np.testing.assert_array_equal(a['label'], b['label'])
  other = run(5, 0, 4)
  assert any((a['clips'] != b['clips']).any() for a, b in zip(other, fresh))
  # Each epoch holds every video once, in a new order.
  videos = factory.read_pattern(np.concatenate([b['clips'] for b in fresh]))[1][:, 0]
  assert sorted(videos[:11]) == sorted(videos[11:22]) == list(range(11))
  assert list(videos[:11]) != list(videos[11:22])


def test_host_normalisation(data_dir):
  kwargs = dict(split='train', batch_size=4, mode='val', process_index=0, process_count=1)
  raw = _batches(input_pipeline.create_eval_dataset(_config(data_dir), **kwargs)[0], 1)[0]
  cfg = _config(data_dir, normalize_on_device=False)
  normed = _batches(input_pipeline.create_eval_dataset(cfg, **kwargs)[0], 1)[0]
  assert normed['clips'].dtype == np.float32
  np.testing.assert_allclose(
    normed['clips'], np.asarray(transforms.normalize(raw['clips'], cfg.mean, cfg.std)), atol=1e-6
  )


def test_autotune_reaches_the_datasets_and_changes_no_batch(data_dir):
  kwargs = dict(split='train', batch_size=4, mode='val', process_index=0, process_count=1)
  batches = {}
  for autotune in (True, False):
    cfg = _config(data_dir, autotune=autotune)
    ds = input_pipeline.create_eval_dataset(cfg, **kwargs)[0]
    train = input_pipeline.create_train_dataset(cfg, batch_size=4, seed=0)
    assert ds.options().autotune.enabled is train.options().autotune.enabled is autotune
    batches[autotune] = _batches(ds)
  for on, off in zip(batches[True], batches[False], strict=True):
    assert on.keys() == off.keys()
    for key in on:
      np.testing.assert_array_equal(on[key], off[key], err_msg=key)


def test_bad_input_fails_clearly(data_dir, tmp_path):
  cfg = _config(data_dir)
  with pytest.raises(ValueError, match='no training examples'):
    input_pipeline.create_train_dataset(
      cfg, batch_size=1, seed=0, process_index=11, process_count=12
    )
  with pytest.raises(ValueError, match='mode'):
    input_pipeline.create_eval_dataset(
      cfg, split='train', batch_size=1, mode='train', process_index=0, process_count=1
    )
  with pytest.raises(ValueError, match='test_crop_size=30 must equal'):
    input_pipeline.create_eval_dataset(
      _config(data_dir, test_crop_size=30),
      split='train',
      batch_size=1,
      mode='test',
      process_index=0,
      process_count=1,
    )
  with pytest.raises(ValueError, match='crop_size=36 must be at most'):
    input_pipeline.create_train_dataset(
      _config(data_dir, crop_size=36), batch_size=1, seed=0, process_index=0, process_count=1
    )
  with pytest.raises(ValueError, match='process_index'):
    input_pipeline.create_train_dataset(cfg, batch_size=1, seed=0, process_index=2, process_count=2)
  # A label outside the label map (written with 6 classes, described with 3).
  bad = str(tmp_path)
  videos = [(_video(0)[0], 0), (_video(5)[0], 5)]
  factory.write_split(bad, 'x', videos, ['a', 'b', 'c', 'd', 'e', 'f'])
  factory.write_manifest(bad, 'x', [(schema.shard_name('x', 0, 1), 2)], ['a', 'b', 'c'])
  ds, _ = input_pipeline.create_eval_dataset(
    _config(bad), split='x', batch_size=1, mode='val', process_index=0, process_count=1
  )
  with pytest.raises(tf.errors.InvalidArgumentError, match='video_0001.mp4'):
    _batches(ds)


def _flip_a_byte(path):
  """Damages a shard in place (same size: the fast check cannot see it)."""
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize('damage', ['corrupted', 'fewer records', 'deleted'])
def test_a_shard_damaged_after_the_check_stops_reading_with_its_name(data_dir, tmp_path, damage):
  copy = _copy(data_dir, tmp_path)
  shard = schema.shard_name('train', 2, 5)
  path = os.path.join(copy, shard)
  if damage == 'fewer records':  # the manifest promises one record more than the file has
    counts = list(SHARD_SIZES)
    counts[2] += 1
    factory.write_manifest(
      copy,
      'train',
      [(schema.shard_name('train', i, 5), n) for i, n in enumerate(counts)],
      [f'class_{c}' for c in range(NUM_CLASSES)],
    )
  train = input_pipeline.create_train_dataset(
    _config(copy), batch_size=2, seed=0, process_index=0, process_count=1
  )
  val, _ = input_pipeline.create_eval_dataset(
    _config(copy), split='train', batch_size=2, mode='val', process_index=0, process_count=1
  )
  if damage == 'corrupted':
    _flip_a_byte(path)
  elif damage == 'deleted':
    os.remove(path)
  for ds, count in ((train, 12), (val, None)):
    with pytest.raises(schema.DatasetError) as error:
      batches = input_pipeline.numpy_batches(ds)
      for _ in range(count or 10**6):
        next(batches)
    message = str(error.value)
    assert path in message and '\n' not in message, message
    if damage != 'deleted':
      assert 'damaged shard' in message and 'data_prep.verify' in message


LOSSLESS_VIDEOS = 3


def lossless_inputs():
  """The frames the lossless test writes as PNG, keyed as regenerate_mmaction2.py's
  `--lossless-inputs` reads them (`NAME:frames`)."""
  return {f'input_pipeline/video{i}:frames': _video(i)[0] for i in range(LOSSLESS_VIDEOS)}


def test_lossless_frames_give_the_reference_crops_exactly(tmp_path):
  """PNG frames: val and test crops equal MMAction2's own pipelines (SampleFrames, RawFrameDecode,
  Resize, CenterCrop / ThreeCrop, FormatShape) on the same frames, recorded in
  lossless_crops.npz by tests/testdata/regenerate_mmaction2.py."""
  recorded = fixtures.load('lossless_crops.npz')
  for key, frames in lossless_inputs().items():
    np.testing.assert_array_equal(
      frames, recorded[key], err_msg=f'{key}: not the recorded input (regenerate_mmaction2.py)'
    )
  videos = [_video(i) for i in range(LOSSLESS_VIDEOS)]
  factory.write_split(
    str(tmp_path), 'train', videos, [f'c{c}' for c in range(NUM_CLASSES)], image_format='png'
  )
  cfg = _config(str(tmp_path))
  for mode in ('val', 'test'):
    ds, _ = input_pipeline.create_eval_dataset(
      cfg, split='train', batch_size=1, mode=mode, process_index=0, process_count=1
    )
    seen = []
    for batch in _batches(ds):
      seen.append(int(batch['index'][0]))
      want = fixtures.ncthw_to_nthwc(recorded[f'input_pipeline/video{seen[-1]}:{mode}'])
      np.testing.assert_array_equal(batch['clips'][0], want[0] if mode == 'val' else want)
    assert sorted(seen) == list(range(LOSSLESS_VIDEOS))


def test_only_the_sampled_frames_are_decoded(tmp_path):
  frames, label = _video(3)
  wanted = set(sampling.sample_frame_indices(len(frames), CLIP_LEN, INTERVAL, 1, True).tolist())
  labels = ['a', 'b', 'c', 'd']
  example = tf.train.Example.FromString(factory.encode_video(frames, label, 'v.mp4', labels))
  images = example.features.feature[schema.VIDEO].bytes_list.value
  for i in range(len(images)):
    if i not in wanted:
      images[i] = b'not a jpeg'
  shard = schema.shard_name('x', 0, 1)
  with tf.io.TFRecordWriter(str(tmp_path / shard)) as writer:
    writer.write(example.SerializeToString())
  factory.write_manifest(str(tmp_path), 'x', [(shard, 1)], labels)
  ds, _ = input_pipeline.create_eval_dataset(
    _config(str(tmp_path)), split='x', batch_size=1, mode='val', process_index=0, process_count=1
  )
  clip = _batches(ds)[0]['clips'][0]
  assert len(wanted) < len(frames) - 5
  np.testing.assert_array_equal(factory.read_pattern(clip)[0], sorted(wanted))
