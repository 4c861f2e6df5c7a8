"""tf.data input pipelines over the TFRecord shards of `cost_jax.data.schema`.

* Each host reads the shard files ``shards[process_index::process_count]``.
* Training is an infinite, deterministic stream: epoch e of host h reads its files in an order
  drawn from (seed, h, e); each record is parsed, its frames sampled and only the sampled JPEGs
  kept (so the shuffle buffer holds a few frames per video, not whole videos), with all its
  randomness from a stateless RNG keyed by (seed, h, e, read position); then examples are
  shuffled with a buffer seeded from (seed, h, e), decoded and augmented. `start_step`
  therefore resumes exactly: whole epochs are skipped for free and, inside the epoch, skipped
  examples are read and parsed but never decoded.
* Only the sampled JPEGs of a video are decoded.
* Evaluation reads each host's files once in shard order, attaches the global video index
  (position in shard order), and pads with masked examples so every host yields the same
  number of batches, computed from the manifest.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from cost_jax.data import sampling
from cost_jax.data import schema
from cost_jax.data import transforms

_INTERLEAVE_CYCLE = 8   # shard files read at once per host


def get_dataset_info(data_dir: str, split: str) -> dict[str, Any]:
  """num_examples, num_classes, label_map and the manifest of `split`; checks the shard files."""
  manifest = schema.read_manifest(data_dir, split)
  path = schema.manifest_path(data_dir, split)
  shards = manifest["shards"]
  if not shards:
    raise ValueError(f"{path}: no shards listed")
  for shard in shards:
    if not {"file", "num_examples"} <= set(shard):
      raise ValueError(f"{path}: shard entry {shard!r} lacks 'file' or 'num_examples'")
    if not os.path.exists(os.path.join(data_dir, shard["file"])):
      raise FileNotFoundError(f"{path}: shard {shard['file']!r} is missing in {data_dir}")
  total = sum(int(s["num_examples"]) for s in shards)
  if total != manifest["num_examples"]:
    raise ValueError(f"{path}: shards hold {total} examples but num_examples is "
                     f"{manifest['num_examples']}")
  if len(manifest["label_map"]) != manifest["num_classes"]:
    raise ValueError(f"{path}: label_map has {len(manifest['label_map'])} names but "
                     f"num_classes is {manifest['num_classes']}")
  return dict(num_examples=int(manifest["num_examples"]),
              num_classes=int(manifest["num_classes"]),
              label_map=list(manifest["label_map"]), manifest=manifest)


def _host_ids(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= index < count:
    raise ValueError(f"process_index {index} is not in [0, process_count={count})")
  return index, count


def host_shards(manifest: dict[str, Any], process_index: int, process_count: int
                ) -> tuple[list[str], list[int], list[int]]:
  """(files, counts, first global index) of the shards read by one host, in shard order."""
  starts = np.cumsum([0] + [int(s["num_examples"]) for s in manifest["shards"]])
  chosen = list(range(len(manifest["shards"])))[process_index::process_count]
  return ([manifest["shards"][i]["file"] for i in chosen],
          [int(manifest["shards"][i]["num_examples"]) for i in chosen],
          [int(starts[i]) for i in chosen])


def _parse(serialized: tf.Tensor, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(encoded frames (T,) string, label int32) of one SequenceExample."""
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          schema.LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
          schema.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
      },
      sequence_features={schema.FRAMES_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
  label = context[schema.LABEL_INDEX_KEY]
  tf.debugging.Assert(
      tf.logical_and(label >= 0, label < num_classes),
      [f"label outside [0, {num_classes}) in video", context[schema.FILENAME_KEY], label])
  frames = sequence[schema.FRAMES_KEY]
  tf.debugging.Assert(tf.size(frames) > 0, ["video has no frames:", context[schema.FILENAME_KEY]])
  return frames, tf.cast(label, tf.int32)


def select_frames(encoded: tf.Tensor, indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The distinct JPEGs at `indices` and, per index, its position among them."""
  unique, inverse = tf.unique(indices)
  return tf.gather(encoded, unique), inverse


def decode_selected(jpegs: tf.Tensor) -> tf.Tensor:
  """Decodes JPEGs to (N, H, W, 3) uint8 frames (all of a video share one size)."""
  return tf.map_fn(
      lambda b: tf.io.decode_jpeg(b, channels=3, dct_method="INTEGER_ACCURATE"), jpegs,
      fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _check_num_clips(cfg: ml_collections.ConfigDict, key: str) -> None:
  if cfg[key] != 1:
    raise ValueError(f"config.data.{key} must be 1 (got {cfg[key]}); only test mode takes "
                     "several clips per video")


def _check_crop(cfg: ml_collections.ConfigDict, crop_key: str, side_key: str, same: bool = False
                ) -> None:
  """The crop must fit the resized short side (ThreeCrop: equal it, as MMAction2 asserts)."""
  crop, side = cfg[crop_key], cfg[side_key]
  side = min(side) if isinstance(side, (tuple, list)) else side
  if crop > side or (same and crop != side):
    relation = "equal" if same else "be at most"
    raise ValueError(f"config.data.{crop_key}={crop} must {relation} config.data.{side_key} "
                     f"({cfg[side_key]})")


def _epoch_key(base_key: tf.Tensor, epoch: tf.Tensor, purpose: int) -> tf.Tensor:
  """Stateless RNG key of (seed, host, epoch); purpose 0 = record order, 1 = examples."""
  fold_in = tf.random.experimental.stateless_fold_in
  return fold_in(fold_in(base_key, epoch), purpose)


def _train_select_fn(cfg: ml_collections.ConfigDict, num_classes: int, base_key: tf.Tensor
                     ) -> Callable[..., dict[str, tf.Tensor]]:
  """Parses a record and keeps only its sampled JPEGs (what the shuffle buffer holds).

  All randomness of the example is drawn here, keyed by (seed, host, epoch, read position).
  """
  num_clips = cfg.train_num_clips
  _check_num_clips(cfg, "train_num_clips")
  _check_crop(cfg, "crop_size", "train_scale_range")

  def fn(epoch, position, serialized):
    key = tf.random.experimental.stateless_fold_in(_epoch_key(base_key, epoch, 1), position)
    draws = tf.random.stateless_uniform([num_clips + transforms.NUM_TRAIN_DRAWS], seed=key,
                                        dtype=tf.float64)
    encoded, label = _parse(serialized, num_classes)
    indices = sampling.sample_frame_indices_tf(
        tf.size(encoded), cfg.clip_len, cfg.frame_interval, num_clips, test_mode=False,
        uniform=draws[:num_clips])
    jpegs, inverse = select_frames(encoded, indices)
    return {"jpegs": jpegs, "inverse": inverse, "draws": draws[num_clips:], "label": label}

  return fn


def _train_augment_fn(cfg: ml_collections.ConfigDict) -> Callable[..., dict[str, tf.Tensor]]:
  def fn(example):
    # Per-frame transforms run once per distinct frame, then frames go to clip order.
    crops = transforms.train_transform(
        decode_selected(example["jpegs"]), scale_range=cfg.train_scale_range,
        crop_size=cfg.crop_size, flip_ratio=cfg.flip_ratio, uniform=example["draws"])
    clip = tf.gather(crops, example["inverse"])
    return {"clips": tf.ensure_shape(clip, [cfg.clip_len, cfg.crop_size, cfg.crop_size, 3]),
            "label": example["label"]}

  return fn


def _eval_example_fn(cfg: ml_collections.ConfigDict, num_classes: int, mode: str
                     ) -> tuple[Callable[..., dict[str, tf.Tensor]], list[int]]:
  """Per-example function and the shape of its 'clips'."""
  if mode == "val":
    _check_num_clips(cfg, "val_num_clips")
    _check_crop(cfg, "crop_size", "val_short_side")
    shape = [cfg.clip_len, cfg.crop_size, cfg.crop_size, 3]
  elif mode == "test":
    if cfg.test_num_crops != 3:
      raise ValueError(f"config.data.test_num_crops must be 3 (ThreeCrop), got "
                       f"{cfg.test_num_crops}")
    _check_crop(cfg, "test_crop_size", "test_short_side", same=True)
    shape = [cfg.test_num_clips * 3, cfg.clip_len, cfg.test_crop_size, cfg.test_crop_size, 3]
  else:
    raise ValueError(f"mode must be 'val' or 'test', got {mode!r}")

  def fn(index, serialized):
    encoded, label = _parse(serialized, num_classes)
    num_clips = 1 if mode == "val" else cfg.test_num_clips
    indices = sampling.sample_frame_indices_tf(tf.size(encoded), cfg.clip_len,
                                               cfg.frame_interval, num_clips, test_mode=True)
    jpegs, inverse = select_frames(encoded, indices)
    frames = decode_selected(jpegs)   # each distinct frame once, transformed once
    if mode == "val":
      clips = tf.gather(transforms.val_transform(frames, short_side=cfg.val_short_side,
                                                 crop_size=cfg.crop_size), inverse)
    else:
      clips = transforms.multi_view_transform(
          frames, short_side=cfg.test_short_side, crop_size=cfg.test_crop_size,
          num_clips=num_clips, clip_len=cfg.clip_len, order=inverse)
    return {"clips": tf.ensure_shape(clips, shape), "label": label,
            "mask": tf.constant(True), "index": index}

  return fn, shape


def _finish(ds: tf.data.Dataset, cfg: ml_collections.ConfigDict, batch_size: int
            ) -> tf.data.Dataset:
  ds = ds.batch(batch_size, drop_remainder=True)
  if not cfg.normalize_on_device:
    def norm(batch):
      return dict(batch, clips=transforms.normalize_tf(batch["clips"], cfg.mean, cfg.std))
    ds = ds.map(norm, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(cfg.prefetch)


def _check_batch_size(batch_size: int) -> None:
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int (per host), got {batch_size!r}")


def create_train_dataset(data_config: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                         start_step: int = 0, process_index: int | None = None,
                         process_count: int | None = None) -> tf.data.Dataset:
  """Infinite training batches {'clips': uint8 (B, T, crop, crop, 3), 'label': int32 (B,)}.

  `batch_size` is per host. The stream is a function of (seed, host, position), so
  `start_step=k` yields exactly batches k, k+1, ... of a fresh run.
  """
  cfg = data_config
  _check_batch_size(batch_size)
  index, count = _host_ids(process_index, process_count)
  info = get_dataset_info(cfg.data_dir, cfg.train_split)
  files, counts, _ = host_shards(info["manifest"], index, count)
  if not files or sum(counts) == 0:
    raise ValueError(
        f"split {cfg.train_split!r} in {cfg.data_dir} has {len(info['manifest']['shards'])} "
        f"shards, which leaves host {index} of {count} no training examples; write more shards")
  per_epoch = sum(counts)
  start_epoch, skip = divmod(int(start_step) * batch_size, per_epoch)
  paths = tf.constant([os.path.join(cfg.data_dir, f) for f in files])
  base_key = tf.constant([seed, index], tf.int64)
  cycle = min(len(files), _INTERLEAVE_CYCLE)

  select = _train_select_fn(cfg, info["num_classes"], base_key)

  def epoch_examples(epoch):
    key = _epoch_key(base_key, epoch, 0)
    order = tf.argsort(tf.random.stateless_uniform([len(files)], seed=key))
    shuffle_seed = tf.random.stateless_uniform([], seed=key, minval=None, maxval=None,
                                               dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(tf.gather(paths, order)).interleave(
        tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=cycle,
        deterministic=True)
    ds = ds.enumerate().map(lambda position, record: select(epoch, position, record),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.shuffle(cfg.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    return ds.skip(tf.where(tf.equal(epoch, start_epoch), tf.constant(skip, tf.int64),
                            tf.constant(0, tf.int64)))

  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_examples)
  ds = ds.map(_train_augment_fn(cfg), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return _finish(ds, cfg, batch_size)


def eval_num_batches(manifest: dict[str, Any], batch_size: int, process_count: int) -> int:
  """Batches every host yields: the largest ceil(host examples / batch_size) over hosts."""
  return max(math.ceil(sum(host_shards(manifest, i, process_count)[1]) / batch_size)
             for i in range(process_count))


def create_eval_dataset(data_config: ml_collections.ConfigDict, *, split: str, batch_size: int,
                        mode: str, process_index: int | None = None,
                        process_count: int | None = None) -> tuple[tf.data.Dataset, int]:
  """Finite, padded evaluation batches and their number (the same on every host).

  val:  {'clips': uint8 (B, T, crop, crop, 3), 'label': int32, 'mask': bool, 'index': int64}
  test: {'clips': uint8 (B, V, T, tc, tc, 3), ...} with V = test_num_clips * 3 views, crop
  outer and clip inner. Padding examples have mask False, label 0 and index -1; 'index' of
  a real example is its position in shard order.
  """
  cfg = data_config
  _check_batch_size(batch_size)
  index, count = _host_ids(process_index, process_count)
  info = get_dataset_info(cfg.data_dir, split)
  files, counts, starts = host_shards(info["manifest"], index, count)
  num_batches = eval_num_batches(info["manifest"], batch_size, count)
  example_fn, shape = _eval_example_fn(cfg, info["num_classes"], mode)
  padding = {"clips": tf.zeros(shape, tf.uint8), "label": tf.constant(0, tf.int32),
             "mask": tf.constant(False), "index": tf.constant(-1, tf.int64)}
  ds = tf.data.Dataset.from_tensors(padding).repeat(num_batches * batch_size - sum(counts))
  if files:
    def read(path, first):
      return tf.data.TFRecordDataset(path).enumerate().map(lambda i, r: (first + i, r))

    paths = [os.path.join(cfg.data_dir, f) for f in files]
    cycle = min(len(files), _INTERLEAVE_CYCLE)
    real = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths), tf.constant(starts, tf.int64))).interleave(
            read, cycle_length=cycle, num_parallel_calls=cycle, deterministic=True)
    real = real.map(example_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = real.concatenate(ds)
  # Fails loudly if the shards hold fewer or more records than the manifest says (which would
  # leave hosts with different batch counts).
  ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches * batch_size))
  return _finish(ds, cfg, batch_size), num_batches
