"""Reading the records of one shard in tf.data, with errors that name the shard.

TensorFlow's TFRecord reader reports a damaged file as ``truncated record at 5739083`` or
``corrupted record at 2046``, without the file's name. `shard_records` reads a shard so that any
such failure stops the input pipeline with an error naming the shard: the file is opened once
first (an unopenable file fails with its path), a read error ends the file, and a file that
ends before the manifest's count of records reaches an element that fails with the shard's
name. `named_errors` turns either error into a one-line `DatasetError` on the Python side.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import tensorflow as tf

from cost_jax.data.schema import DatasetError

DAMAGED_SHARD = 'damaged shard'  # marks the in-graph error raised for a shard that ended early

T = TypeVar('T')


def _probe(path: str | tf.Tensor) -> tf.data.Dataset:
  """The file's first byte (nothing for an empty file). A file that cannot be opened fails
  here, with its path in the error: inside `ignore_errors` it would be retried forever."""
  return tf.data.FixedLengthRecordDataset(path, record_bytes=1, buffer_size=1).take(1)


def shard_records(
  path: str | tf.Tensor,
  stop: int | tf.Tensor,
  skip: int | tf.Tensor = 0,
  verify_hint: str = '',
  buffer_bytes: int | None = None,
) -> tf.data.Dataset:
  """Serialized records [skip, stop) of the TFRecord file `path`, as a tf.data.Dataset.

  Raises (in the pipeline) an `InvalidArgumentError` whose message starts with
  `DAMAGED_SHARD` and names `path` when fewer than `stop` records can be read: a truncated or
  corrupted file, or a read error. `verify_hint` is appended to that message. Records pass
  through no function (each would copy them): the check is a failing element placed after the
  file's records, which `take(stop)` reaches only when the file ends early.
  `buffer_bytes`: the reader's buffer (TensorFlow's default if None); on a bucket each refill
  is one ranged request, so a few MB keep the round trips rare.
  """
  if isinstance(skip, int) and isinstance(stop, int) and not 0 <= skip <= stop:
    raise ValueError(f'{path}: cannot read records [{skip}, {stop})')
  stop = tf.cast(stop, tf.int64)

  def fail(_):
    message = tf.strings.join(
      [
        f'{DAMAGED_SHARD} ',
        path,
        ': it holds fewer than the ',
        tf.strings.as_string(stop),
        f' records expected (truncated, corrupted or unreadable){verify_hint}',
      ]
    )
    with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), [message])]):
      return tf.constant(b'')

  # A read error ends the file (the reader moves on to its next file: there is none).
  reader = tf.data.TFRecordDataset(path, buffer_size=buffer_bytes).ignore_errors(log_warning=True)
  early_end = tf.data.Dataset.from_tensors(tf.constant(0)).map(fail)
  # The probe's byte goes first and is skipped (an empty file has no byte, and no record to
  # lose), so the file is opened once before the reader opens it.
  probed = _probe(path).concatenate(reader).skip(1)
  return probed.concatenate(early_end).take(stop).skip(skip)


def damaged_shard_message(error: tf.errors.OpError) -> str | None:
  """The one-line reason of a `shard_records` failure or of a shard that cannot be opened, or
  None for other errors."""
  text = error.message or ''
  start = text.find(DAMAGED_SHARD)
  if start >= 0:
    return text[start:].splitlines()[0].split(']', 1)[0].strip()
  if isinstance(error, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError)):
    detail = text.split('}} ', 1)[-1].split(' [Op:', 1)[0].strip()
    return f'cannot read a shard: {detail}'
  return None


def until_read_error(iterable: Iterable[T]) -> Iterator[T | tf.errors.OpError]:
  """Yields the items of `iterable` (records, batches), then the TensorFlow error that ended it
  early, if one did."""
  iterator = iter(iterable)
  while True:
    try:
      item = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      yield e
      return
    yield item


def named_errors(iterable: Iterable[T]) -> Iterator[T]:
  """Yields from `iterable` (e.g. `dataset.as_numpy_iterator()`), turning a damaged-shard error
  into a one-line `DatasetError` naming the shard; other errors pass unchanged."""
  for item in until_read_error(iterable):
    if isinstance(item, tf.errors.OpError):
      message = damaged_shard_message(item)
      if message is None:
        raise item
      raise DatasetError(message) from None
    yield item
