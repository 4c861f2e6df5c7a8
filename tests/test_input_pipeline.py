"""The tf.data pipeline end to end on tiny TFRecords: content, sharding, padding, resume."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from configs import base
from cost_jax.data import input_pipeline
from cost_jax.data import sampling
from cost_jax.data import schema
from cost_jax.data import transforms
from tests import tfrecord_factory as factory

NUM_CLASSES = 4
SHARD_SIZES = (3, 2, 2, 3, 1)   # 11 videos in 5 shards
CLIP_LEN, INTERVAL, TEST_CLIPS = 4, 2, 2


def _video(i):
  num_frames = 6 + (7 * i) % 24            # 6..29 frames: short (looping) and long videos
  height, width = (52, 40) if i % 3 == 0 else (40, 52)
  return factory.pattern_video(num_frames, height, width, video_id=i), i % NUM_CLASSES


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfrecords"))
  videos = [_video(i) for i in range(sum(SHARD_SIZES))]
  factory.write_split(path, "train", videos, [f"class_{c}" for c in range(NUM_CLASSES)],
                      shard_sizes=SHARD_SIZES)
  return path


def _config(data_dir, **overrides):
  cfg = base.get_config().data
  cfg.update(dict(data_dir=data_dir, val_split="train", test_split="train", clip_len=CLIP_LEN,
                  frame_interval=INTERVAL, train_scale_range=(32, 40), crop_size=28,
                  val_short_side=32, test_short_side=32, test_crop_size=32,
                  test_num_clips=TEST_CLIPS, shuffle_buffer=4, prefetch=1))
  cfg.update(overrides)
  return cfg


def _num_frames(video_id):
  return _video(video_id)[0].shape[0]


def _batches(ds, n=None):
  return list((ds.take(n) if n else ds).as_numpy_iterator())


def test_dataset_info(data_dir, tmp_path):
  info = input_pipeline.get_dataset_info(data_dir, "train")
  assert (info["num_examples"], info["num_classes"]) == (11, NUM_CLASSES)
  assert info["label_map"][3] == "class_3" and len(info["manifest"]["shards"]) == 5
  with pytest.raises(FileNotFoundError, match="val.manifest.json"):
    input_pipeline.get_dataset_info(data_dir, "val")
  manifest = dict(info["manifest"], num_examples=12)
  schema.write_json_atomic(schema.manifest_path(str(tmp_path), "bad"), manifest)
  with pytest.raises(FileNotFoundError, match="train-00000-of-00005"):
    input_pipeline.get_dataset_info(str(tmp_path), "bad")
  for shard in manifest["shards"]:
    os.symlink(os.path.join(data_dir, shard["file"]), tmp_path / shard["file"])
  with pytest.raises(ValueError, match="num_examples is 12"):
    input_pipeline.get_dataset_info(str(tmp_path), "bad")


def test_val_batches_hold_the_sampled_frames(data_dir):
  ds, num_batches = input_pipeline.create_eval_dataset(
      _config(data_dir), split="train", batch_size=4, mode="val", process_count=1,
      process_index=0)
  batches = _batches(ds)
  assert num_batches == len(batches) == 3
  seen = []
  for batch in batches:
    assert batch["clips"].dtype == np.uint8 and batch["clips"].shape == (4, CLIP_LEN, 28, 28, 3)
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
    assert batch["index"].dtype == np.int64
    for clip, label, mask, index in zip(batch["clips"], batch["label"], batch["mask"],
                                        batch["index"]):
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
      _config(data_dir), split="train", batch_size=3, mode="test", process_count=1,
      process_index=0)
  batches = _batches(ds)
  assert num_batches == len(batches) == 4
  views = 3 * TEST_CLIPS
  for batch in batches:
    assert batch["clips"].shape == (3, views, CLIP_LEN, 32, 32, 3)
    for clips, index, mask in zip(batch["clips"], batch["index"], batch["mask"]):
      if not mask:
        continue
      want = sampling.sample_frame_indices(_num_frames(index), CLIP_LEN, INTERVAL, TEST_CLIPS,
                                           True).reshape(TEST_CLIPS, CLIP_LEN)
      for view in range(views):
        np.testing.assert_array_equal(factory.read_pattern(clips[view])[0],
                                      want[view % TEST_CLIPS])
      if index % 3:   # landscape: crops run left, right, middle along the blue ramp
        blue = [clips[c * TEST_CLIPS][..., 2].mean() for c in range(3)]
        assert blue[0] < blue[2] < blue[1]


def test_train_batches_content_and_flips(data_dir):
  cfg = _config(data_dir)
  batches = _batches(input_pipeline.create_train_dataset(
      cfg, batch_size=4, seed=1, process_index=0, process_count=1), 6)
  slopes = []
  for batch in batches:
    assert batch["clips"].dtype == np.uint8 and batch["clips"].shape == (4, CLIP_LEN, 28, 28, 3)
    assert batch["label"].dtype == np.int32
    for clip, label in zip(batch["clips"], batch["label"]):
      frames, videos, slope = factory.read_pattern(clip)
      video = videos[0]
      assert (videos == video).all() and label == video % NUM_CLASSES
      t = _num_frames(video)
      np.testing.assert_array_equal(frames, (frames[0] + INTERVAL * np.arange(CLIP_LEN)) % t)
      assert frames[0] <= max(t - CLIP_LEN * INTERVAL, 0)
      slopes.extend(slope)
  assert set(slopes) == {-1, 1}      # flip_ratio 0.5 over 24 clips
  cfg.flip_ratio = 0.0
  unflipped = _batches(input_pipeline.create_train_dataset(
      cfg, batch_size=4, seed=1, process_index=0, process_count=1), 2)
  assert all((factory.read_pattern(b["clips"])[2] > 0).all() for b in unflipped)


def test_train_hosts_read_their_own_shards_once_per_epoch(data_dir):
  cfg = _config(data_dir)
  for count in (1, 3):
    seen = []
    for index in range(count):
      files, counts, starts = input_pipeline.host_shards(
          input_pipeline.get_dataset_info(data_dir, "train")["manifest"], index, count)
      own = sorted(s + k for s, n in zip(starts, counts) for k in range(n))
      ds = input_pipeline.create_train_dataset(cfg, batch_size=1, seed=0, process_index=index,
                                               process_count=count)
      videos = [factory.read_pattern(b["clips"][0])[1][0] for b in _batches(ds, len(own))]
      assert sorted(videos) == own, (count, index)
      seen += videos
    assert sorted(seen) == list(range(11))


@pytest.mark.parametrize("mode", ["val", "test"])
def test_eval_counts_every_video_once_on_1_to_4_hosts(data_dir, mode):
  cfg = _config(data_dir)
  for count in range(1, 5):
    indices, lengths = [], set()
    for index in range(count):
      ds, num_batches = input_pipeline.create_eval_dataset(
          cfg, split="train", batch_size=2, mode=mode, process_index=index,
          process_count=count)
      batches = _batches(ds)
      lengths.add((num_batches, len(batches)))
      for batch in batches:
        indices += list(batch["index"][batch["mask"]])
        assert (batch["index"][~batch["mask"]] == -1).all()
        np.testing.assert_array_equal(batch["label"][batch["mask"]],
                                      batch["index"][batch["mask"]] % NUM_CLASSES)
    assert len(lengths) == 1, (count, lengths)          # same batch count on every host
    num_batches, _ = lengths.pop()
    per_host = [sum(SHARD_SIZES[i::count]) for i in range(count)]
    assert num_batches == -(-max(per_host) // 2)
    assert sorted(indices) == list(range(11)), (count, indices)


def test_train_is_deterministic_and_resumes_at_any_step(data_dir):
  cfg = _config(data_dir)

  def run(seed, start_step, n):
    return _batches(input_pipeline.create_train_dataset(
        cfg, batch_size=3, seed=seed, start_step=start_step, process_index=0, process_count=1),
        n)

  fresh = run(0, 0, 9)     # 27 examples: crosses two epochs of 11
  again = run(0, 0, 9)
  for a, b in zip(fresh, again):
    np.testing.assert_array_equal(a["clips"], b["clips"])
  for start in (2, 4, 7):  # examples 6, 12, 21: inside epoch 0, just past its end, end of 1
    for a, b in zip(run(0, start, 9 - start), fresh[start:]):
      np.testing.assert_array_equal(a["clips"], b["clips"])
      np.testing.assert_array_equal(a["label"], b["label"])
  other = run(5, 0, 4)
  assert any((a["clips"] != b["clips"]).any() for a, b in zip(other, fresh))
  # Each epoch holds every video once, in a new order.
  videos = factory.read_pattern(np.concatenate([b["clips"] for b in fresh]))[1][:, 0]
  assert sorted(videos[:11]) == sorted(videos[11:22]) == list(range(11))
  assert list(videos[:11]) != list(videos[11:22])


def test_host_normalisation(data_dir):
  kwargs = dict(split="train", batch_size=4, mode="val", process_index=0, process_count=1)
  raw = _batches(input_pipeline.create_eval_dataset(_config(data_dir), **kwargs)[0], 1)[0]
  cfg = _config(data_dir, normalize_on_device=False)
  normed = _batches(input_pipeline.create_eval_dataset(cfg, **kwargs)[0], 1)[0]
  assert normed["clips"].dtype == np.float32
  np.testing.assert_allclose(normed["clips"],
                             np.asarray(transforms.normalize(raw["clips"], cfg.mean, cfg.std)),
                             atol=1e-6)


def test_bad_input_fails_clearly(data_dir, tmp_path):
  cfg = _config(data_dir)
  with pytest.raises(ValueError, match="no training examples"):
    input_pipeline.create_train_dataset(cfg, batch_size=1, seed=0, process_index=5,
                                        process_count=6)
  with pytest.raises(ValueError, match="mode"):
    input_pipeline.create_eval_dataset(cfg, split="train", batch_size=1, mode="train",
                                       process_index=0, process_count=1)
  with pytest.raises(ValueError, match="val_num_clips"):
    input_pipeline.create_eval_dataset(_config(data_dir, val_num_clips=2), split="train",
                                       batch_size=1, mode="val", process_index=0,
                                       process_count=1)
  with pytest.raises(ValueError, match="test_crop_size=30 must equal"):
    input_pipeline.create_eval_dataset(_config(data_dir, test_crop_size=30), split="train",
                                       batch_size=1, mode="test", process_index=0,
                                       process_count=1)
  with pytest.raises(ValueError, match="crop_size=36 must be at most"):
    input_pipeline.create_train_dataset(_config(data_dir, crop_size=36), batch_size=1, seed=0,
                                        process_index=0, process_count=1)
  with pytest.raises(ValueError, match="process_index"):
    input_pipeline.create_train_dataset(cfg, batch_size=1, seed=0, process_index=2,
                                        process_count=2)
  # A shard holding fewer records than its manifest entry, and a label outside the label map.
  bad = str(tmp_path)
  videos = [(_video(0)[0], 0), (_video(5)[0], 5)]
  manifest = factory.write_split(bad, "x", videos, ["a", "b", "c", "d", "e", "f"])
  manifest["shards"][0]["num_examples"] = manifest["num_examples"] = 3
  schema.write_json_atomic(schema.manifest_path(bad, "x"), manifest)
  ds, _ = input_pipeline.create_eval_dataset(_config(bad), split="x", batch_size=1, mode="val",
                                             process_index=0, process_count=1)
  with pytest.raises(tf.errors.OpError, match="expected to contain 3"):
    _batches(ds)
  manifest.update(num_examples=2, label_map=["a", "b", "c"], num_classes=3,
                  label_map_sha256=schema.label_map_sha256(["a", "b", "c"]))
  manifest["shards"][0]["num_examples"] = 2
  schema.write_json_atomic(schema.manifest_path(bad, "x"), manifest)
  ds, _ = input_pipeline.create_eval_dataset(_config(bad), split="x", batch_size=1, mode="val",
                                             process_index=0, process_count=1)
  with pytest.raises(tf.errors.InvalidArgumentError, match="video_0001.mp4"):
    _batches(ds)


def test_only_the_sampled_frames_are_decoded(tmp_path):
  frames, label = _video(3)
  wanted = set(sampling.sample_frame_indices(len(frames), CLIP_LEN, INTERVAL, 1, True).tolist())
  example = tf.train.SequenceExample.FromString(factory.encode_video(frames, label, "v.mp4"))
  for i, feature in enumerate(example.feature_lists.feature_list[schema.FRAMES_KEY].feature):
    if i not in wanted:
      feature.bytes_list.value[0] = b"not a jpeg"
  manifest = factory.write_split(str(tmp_path), "x", [], ["a", "b", "c", "d"], shard_sizes=[0])
  with tf.io.TFRecordWriter(str(tmp_path / manifest["shards"][0]["file"])) as writer:
    writer.write(example.SerializeToString())
  manifest["shards"][0]["num_examples"] = manifest["num_examples"] = 1
  schema.write_json_atomic(schema.manifest_path(str(tmp_path), "x"), manifest)
  ds, _ = input_pipeline.create_eval_dataset(_config(str(tmp_path)), split="x", batch_size=1,
                                             mode="val", process_index=0, process_count=1)
  clip = _batches(ds)[0]["clips"][0]
  assert len(wanted) < len(frames) - 5
  np.testing.assert_array_equal(factory.read_pattern(clip)[0], sorted(wanted))
