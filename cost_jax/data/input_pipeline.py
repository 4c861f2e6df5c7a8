"""tf.data input pipelines over a converted dataset (`cost_jax.data.schema`: a TFDS dataset).

* Records are parsed with the dataset's own TFDS feature definition (``features.json``, the
  one data_prep wrote with), frames left encoded; only the sampled frames of a video are
  decoded (JPEG or PNG, as the dataset says).
* Each host reads its part of the split from TFDS's per-process split
  (`tfds.split_for_jax_process`: contiguous, equal within one example), as slices of shards.
* Training is an infinite, deterministic stream: epoch e of host h reads its slices in an order
  drawn from (seed, h, e), interleaved; each record is parsed, its frames sampled and only the
  sampled frames kept (so the shuffle buffer holds a few frames per video, not whole videos),
  with all its randomness from a stateless RNG keyed by (seed, h, e, read position); then
  examples are shuffled with a buffer seeded from (seed, h, e), decoded and augmented.
  `start_step` therefore resumes exactly: whole epochs are skipped for free and, inside the
  epoch, skipped examples are read and parsed but never decoded.
* Evaluation reads each host's slices once in shard order, attaches the global video index
  (position in shard order), and pads with masked examples so every host yields the same
  number of batches.
* A shard that is damaged (truncated, corrupted, unreadable) stops the pipeline with an error
  naming it (`records.shard_records`); iterate with `numpy_batches` to get it as one-line
  `DatasetError`. `get_dataset_info` checks shard sizes before anything is read.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from cost_jax.data import dataset as dataset_lib
from cost_jax.data import integrity, records, sampling, schema, transforms
from cost_jax.training import config_checks

# Shard slices each host reads at once, and each reader's buffer: `data.parallel_reads` and
# `data.read_buffer_mb`. A bucket serves one object at tens of MB/s but many at line rate, and
# every record holds a whole video of which a clip uses a few frames, so reads must overlap.
DEFAULT_PARALLEL_READS = 16
DEFAULT_READ_BUFFER_MB = 8

get_dataset_info = dataset_lib.get_dataset_info
check_shard_sizes = integrity.check_shard_sizes
# The functions below build graphs from plain TF ops (tf.cond where a branch depends on data), so
# their tf.data functions are traced as written: AutoGraph's conversion of every function they
# call cost each process about 2 s of start-up.
_as_written = tf.autograph.experimental.do_not_convert


def numpy_batches(ds: tf.data.Dataset) -> Iterator[Any]:
  """`ds.as_numpy_iterator()`, with a damaged shard reported as a one-line `DatasetError`."""
  return records.named_errors(ds.as_numpy_iterator())


def _host_ids(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= index < count:
    raise ValueError(f'process_index {index} is not in [0, process_count={count})')
  return index, count


def _parse_fn(
  video_features: Any, num_classes: int
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
  """serialized tf.train.Example -> (encoded frames (T,) string, label int32), parsed with the
  parsing spec of the dataset's TFDS features (only the features needed; frames stay encoded:
  TFDS's own decoding would decode every frame, or map over them one by one)."""
  from tensorflow_datasets.core import example_parser

  info = video_features.get_serialized_info()
  parser = example_parser.ExampleParser(
    {key: info[key] for key in (schema.VIDEO, schema.LABEL, schema.VIDEO_ID)}
  )

  def parse(serialized):
    example = parser.parse_example(serialized)
    label, name = example[schema.LABEL], example[schema.VIDEO_ID]
    tf.debugging.Assert(
      tf.logical_and(label >= 0, label < num_classes),
      [f'label outside [0, {num_classes}) in video', name, label],
    )
    frames = example[schema.VIDEO]
    tf.debugging.Assert(tf.size(frames) > 0, ['video has no frames:', name])
    return frames, tf.cast(label, tf.int32)

  return parse


def select_frames(encoded: tf.Tensor, indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The distinct encoded frames at `indices` and, per index, its position among them."""
  unique, inverse = tf.unique(indices)
  return tf.gather(encoded, unique), inverse


def decode_selected(images: tf.Tensor, image_format: str = 'jpeg') -> tf.Tensor:
  """Decodes JPEG or PNG frames to (N, H, W, 3) uint8 (all of a video share one size)."""
  if image_format == 'png':

    def decode(b):
      return tf.io.decode_png(b, channels=3)
  elif image_format == 'jpeg':

    def decode(b):
      return tf.io.decode_jpeg(b, channels=3, dct_method='INTEGER_ACCURATE')
  else:
    raise ValueError(f'image_format must be one of {schema.IMAGE_FORMATS}, got {image_format!r}')
  return tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _epoch_key(base_key: tf.Tensor, epoch: tf.Tensor, purpose: int) -> tf.Tensor:
  """Stateless RNG key of (seed, host, epoch); purpose 0 = record order, 1 = examples."""
  fold_in = tf.random.experimental.stateless_fold_in
  return fold_in(fold_in(base_key, epoch), purpose)


def _train_select_fn(
  cfg: ml_collections.ConfigDict, parse: Callable[..., Any], base_key: tf.Tensor
) -> Callable[..., dict[str, tf.Tensor]]:
  """Parses a record and keeps only its sampled frames (what the shuffle buffer holds).

  All randomness of the example is drawn here, keyed by (seed, host, epoch, read position).
  """
  num_clips = 1  # one clip per video and step, as the official train pipeline
  config_checks.check_crops(cfg, 'train')

  def fn(epoch, position, serialized):
    key = tf.random.experimental.stateless_fold_in(_epoch_key(base_key, epoch, 1), position)
    draws = tf.random.stateless_uniform(
      [num_clips + transforms.NUM_TRAIN_DRAWS], seed=key, dtype=tf.float64
    )
    encoded, label = parse(serialized)
    indices = sampling.sample_frame_indices_tf(
      tf.size(encoded),
      cfg.clip_len,
      cfg.frame_interval,
      num_clips,
      test_mode=False,
      uniform=draws[:num_clips],
    )
    images, inverse = select_frames(encoded, indices)
    return {'images': images, 'inverse': inverse, 'draws': draws[num_clips:], 'label': label}

  return fn


def _train_augment_fn(
  cfg: ml_collections.ConfigDict, image_format: str
) -> Callable[..., dict[str, tf.Tensor]]:
  def fn(example):
    # Per-frame transforms run once per distinct frame, then frames go to clip order.
    crops = transforms.train_transform(
      decode_selected(example['images'], image_format),
      scale_range=cfg.train_scale_range,
      crop_size=cfg.crop_size,
      flip_ratio=cfg.flip_ratio,
      uniform=example['draws'],
    )
    clip = tf.gather(crops, example['inverse'])
    return {
      'clips': tf.ensure_shape(clip, [cfg.clip_len, cfg.crop_size, cfg.crop_size, 3]),
      'label': example['label'],
    }

  return fn


def _eval_example_fn(
  cfg: ml_collections.ConfigDict, parse: Callable[..., Any], mode: str, image_format: str
) -> tuple[Callable[..., dict[str, tf.Tensor]], list[int]]:
  """Per-example function and the shape of its 'clips'."""
  if mode == 'val':
    config_checks.check_crops(cfg, 'val')
    shape = [cfg.clip_len, cfg.crop_size, cfg.crop_size, 3]
  elif mode == 'test':
    config_checks.check_crops(cfg, 'test')
    shape = [cfg.test_num_clips * 3, cfg.clip_len, cfg.test_crop_size, cfg.test_crop_size, 3]
  else:
    raise ValueError(f"mode must be 'val' or 'test', got {mode!r}")

  def fn(index, serialized):
    encoded, label = parse(serialized)
    num_clips = 1 if mode == 'val' else cfg.test_num_clips
    indices = sampling.sample_frame_indices_tf(
      tf.size(encoded), cfg.clip_len, cfg.frame_interval, num_clips, test_mode=True
    )
    images, inverse = select_frames(encoded, indices)
    frames = decode_selected(images, image_format)  # each distinct frame once, transformed once
    if mode == 'val':
      clips = tf.gather(
        transforms.val_transform(frames, short_side=cfg.val_short_side, crop_size=cfg.crop_size),
        inverse,
      )
    else:
      clips = transforms.multi_view_transform(
        frames,
        short_side=cfg.test_short_side,
        crop_size=cfg.test_crop_size,
        num_clips=num_clips,
        clip_len=cfg.clip_len,
        order=inverse,
      )
    return {
      'clips': tf.ensure_shape(clips, shape),
      'label': label,
      'mask': tf.constant(True),
      'index': index,
    }

  return fn, shape


def _finish(
  ds: tf.data.Dataset, cfg: ml_collections.ConfigDict, batch_size: int
) -> tf.data.Dataset:
  ds = ds.batch(batch_size, drop_remainder=True)
  if not cfg.normalize_on_device:

    def norm(batch):
      return dict(batch, clips=transforms.normalize_tf(batch['clips'], cfg.mean, cfg.std))

    ds = ds.map(norm, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = bool(cfg.get('autotune', True))
  return ds.with_options(options).prefetch(cfg.prefetch)


def _check_batch_size(batch_size: int) -> None:
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f'batch_size must be a positive int (per host), got {batch_size!r}')


def _slice_tensors(slices: Sequence[dataset_lib.ShardSlice]) -> dict[str, tf.Tensor]:
  return {
    'path': tf.constant([s.path for s in slices]),
    'skip': tf.constant([s.skip for s in slices], tf.int64),
    'stop': tf.constant([s.stop for s in slices], tf.int64),
    'first': tf.constant([s.first_index for s in slices], tf.int64),
  }


def parallel_reads(data_config: ml_collections.ConfigDict) -> int:
  """Shard slices a host reads at once (`data.parallel_reads`, >= 1)."""
  value = int(data_config.get('parallel_reads', DEFAULT_PARALLEL_READS))
  if value < 1:
    raise config_checks.ConfigError(f'data.parallel_reads={value} must be >= 1')
  return value


def _parallel_calls(reads: int) -> int | None:
  """Threads of an interleave reading `reads` slices at once. One read is the sequential
  interleave: tf.data's parallel one also opens the next slices ahead of time."""
  return reads if reads > 1 else None


def _reader(data_config: ml_collections.ConfigDict) -> Callable[..., tf.data.Dataset]:
  """(path, skip, stop) -> the records of that shard slice, damaged shards named."""
  hint = integrity.verify_hint(data_config.data_dir)
  buffer_mb = float(data_config.get('read_buffer_mb', DEFAULT_READ_BUFFER_MB))
  if buffer_mb <= 0:
    raise config_checks.ConfigError(f'data.read_buffer_mb={buffer_mb} must be > 0')
  buffer_bytes = int(buffer_mb * (1 << 20))

  def read(path, skip, stop):
    return records.shard_records(path, stop, skip, verify_hint=hint, buffer_bytes=buffer_bytes)

  return read


@_as_written
def training_order(
  read_slice: Callable[[tf.Tensor], tf.data.Dataset],
  num_slices: int,
  *,
  base_key: tf.Tensor,
  shuffle_buffer: int,
  start_epoch: int = 0,
  skip: int = 0,
  select: Callable[..., Any] | None = None,
  reads: int = DEFAULT_PARALLEL_READS,
) -> tf.data.Dataset:
  """The infinite training stream of one host: per epoch, its slices in an order drawn from
  (base_key, epoch), `reads` of them read at once (interleaved), then a shuffle buffer seeded from
  (base_key, epoch). `select(epoch, position, record)` runs before the buffer (default: keep
  the record); the first `skip` examples of `start_epoch` are dropped.

  `read_slice(i)` gives the records of slice i; `benchmarks/class_mixing.py` feeds it labels
  to measure how well classes mix.
  """
  cycle = min(num_slices, reads)

  def epoch_examples(epoch):
    key = _epoch_key(base_key, epoch, 0)
    order = tf.argsort(tf.random.stateless_uniform([num_slices], seed=key))
    shuffle_seed = tf.random.stateless_uniform(
      [], seed=key, minval=None, maxval=None, dtype=tf.int64
    )
    ds = tf.data.Dataset.from_tensor_slices(order).interleave(
      read_slice, cycle_length=cycle, num_parallel_calls=_parallel_calls(cycle), deterministic=True
    )
    if select is not None:
      ds = ds.enumerate().map(
        lambda position, record: select(epoch, position, record),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
      )
    ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    return ds.skip(
      tf.where(tf.equal(epoch, start_epoch), tf.constant(skip, tf.int64), tf.constant(0, tf.int64))
    )

  return tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_examples)


@_as_written
def create_train_dataset(
  data_config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
) -> tf.data.Dataset:
  """Infinite training batches {'clips': uint8 (B, T, crop, crop, 3), 'label': int32 (B,)}.

  `batch_size` is per host. The stream is a function of (seed, host, position), so
  `start_step=k` yields exactly batches k, k+1, ... of a fresh run.
  """
  cfg = data_config
  _check_batch_size(batch_size)
  index, count = _host_ids(process_index, process_count)
  info = get_dataset_info(cfg.data_dir, cfg.train_split)  # checks shard sizes first
  builder = dataset_lib.load_builder(cfg.data_dir)
  slices = dataset_lib.host_slices(
    cfg.data_dir, cfg.train_split, info['manifest'], index, count, builder
  )
  per_epoch = sum(s.num_examples for s in slices)
  if per_epoch == 0:
    raise ValueError(
      f'split {cfg.train_split!r} in {cfg.data_dir} has {info["num_examples"]} videos, which '
      f'leaves host {index} of {count} no training examples'
    )
  start_epoch, skip = divmod(int(start_step) * batch_size, per_epoch)
  base_key = tf.constant([seed, index], tf.int64)
  parse = _parse_fn(builder.info.features, info['num_classes'])
  tensors = _slice_tensors(slices)
  read = _reader(cfg)

  def read_slice(i):
    return read(tensors['path'][i], tensors['skip'][i], tensors['stop'][i])

  ds = training_order(
    read_slice,
    len(slices),
    base_key=base_key,
    shuffle_buffer=cfg.shuffle_buffer,
    start_epoch=start_epoch,
    skip=skip,
    select=_train_select_fn(cfg, parse, base_key),
    reads=parallel_reads(cfg),
  )
  ds = ds.map(
    _train_augment_fn(cfg, info['image_format']),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  return _finish(ds, cfg, batch_size)


def eval_num_batches(manifest: dict[str, Any], batch_size: int, process_count: int) -> int:
  """Batches every host yields: the largest ceil(host examples / batch_size) over hosts."""
  return max(
    math.ceil(dataset_lib.num_host_examples(manifest, i, process_count) / batch_size)
    for i in range(process_count)
  )


@_as_written
def create_eval_dataset(
  data_config: ml_collections.ConfigDict,
  *,
  split: str,
  batch_size: int,
  mode: str,
  process_index: int | None = None,
  process_count: int | None = None,
) -> tuple[tf.data.Dataset, int]:
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
  builder = dataset_lib.load_builder(cfg.data_dir)
  slices = dataset_lib.host_slices(cfg.data_dir, split, info['manifest'], index, count, builder)
  num_real = sum(s.num_examples for s in slices)
  num_batches = eval_num_batches(info['manifest'], batch_size, count)
  example_fn, shape = _eval_example_fn(
    cfg, _parse_fn(builder.info.features, info['num_classes']), mode, info['image_format']
  )
  padding = {
    'clips': tf.zeros(shape, tf.uint8),
    'label': tf.constant(0, tf.int32),
    'mask': tf.constant(False),
    'index': tf.constant(-1, tf.int64),
  }
  ds = tf.data.Dataset.from_tensors(padding).repeat(num_batches * batch_size - num_real)
  if slices:
    read = _reader(cfg)

    def read_slice(piece):
      return (
        read(piece['path'], piece['skip'], piece['stop'])
        .enumerate()
        .map(lambda i, record: (piece['first'] + i, record))
      )

    cycle = min(len(slices), parallel_reads(cfg))
    real = tf.data.Dataset.from_tensor_slices(_slice_tensors(slices)).interleave(
      read_slice, cycle_length=cycle, num_parallel_calls=_parallel_calls(cycle), deterministic=True
    )
    real = real.map(example_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = real.concatenate(ds)
  # Fails loudly if the shards hold more records than the manifest says (which would leave
  # hosts with different batch counts); fewer records stop in `records.shard_records`.
  ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches * batch_size))
  return _finish(ds, cfg, batch_size), num_batches
