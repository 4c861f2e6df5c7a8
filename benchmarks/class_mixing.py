"""How many classes a window of consecutive training clips holds: data_prep's shard order plus
the input pipeline's shuffling, against the official sampler's full permutation per epoch.

  python benchmarks/class_mixing.py [--num_classes=400 --window=64 --hosts=1,8]

No video is needed: a Kinetics-400-sized list (400 classes of 250-1000 videos, ~250k videos,
1024 shards, `data_prep.convert.default_num_shards`) is dealt to shards by
`data_prep.convert.shard_entries`, and each host's stream of labels comes out of
`cost_jax.data.input_pipeline.training_order` (the training pipeline's own ordering: slices of
shards in a per-epoch random order, 8 read at once, a 1024-example shuffle buffer), with the
host's part of the split as TFDS's per-process split gives it. Input lists:

* class-sorted (as `data_prep.kinetics400` walks class folders), dealt round-robin in input order
  (data_prep before this change) and in a seeded random order (now);
* cycling through the classes with a period that divides the shard count (here 400 classes,
  800 shards), which put a single class in each shard before.

Prints a table and writes `benchmarks/results/class_mixing.json`.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags

from cost_jax import storage
from cost_jax.data import input_pipeline
from data_prep import convert

_NUM_CLASSES = flags.DEFINE_integer('num_classes', 400, 'classes (Kinetics-400: 400)')
_WINDOW = flags.DEFINE_integer('window', 64, 'consecutive clips per window (the batch size)')
_HOSTS = flags.DEFINE_list('hosts', ['1', '8'], 'process counts to simulate (host 0 measured)')
_SHUFFLE_BUFFER = flags.DEFINE_integer('shuffle_buffer', 1024, 'config.data.shuffle_buffer')
_EPOCHS = flags.DEFINE_integer('epochs', 1, 'epochs of host 0 measured')
_OUTPUT = flags.DEFINE_string(
  'output', os.path.join(os.path.dirname(__file__), 'results', 'class_mixing.json'), 'JSON results'
)


def distinct_per_window(labels: np.ndarray, window: int) -> np.ndarray:
  """Distinct classes in each non-overlapping window of `window` consecutive labels."""
  usable = len(labels) // window * window
  return np.array([len(np.unique(w)) for w in labels[:usable].reshape(-1, window)])


def expected_distinct(class_sizes: np.ndarray, window: int) -> float:
  """E[distinct classes] in `window` clips drawn without replacement from the whole split."""
  total = class_sizes.sum()
  # P(class c absent from the window) = C(total - n_c, w) / C(total, w), as a product.
  absent = np.ones(len(class_sizes))
  for k in range(window):
    absent *= (total - class_sizes - k) / (total - k)
  return float(np.sum(1 - absent))


def host_ranges(
  shard_sizes: Sequence[int], process_index: int, process_count: int
) -> list[tuple[int, int, int]]:
  """(shard, skip, stop) of one host under TFDS's even split (contiguous, first hosts +1)."""
  total = int(sum(shard_sizes))
  begin = process_index * (total // process_count) + min(process_index, total % process_count)
  end = begin + total // process_count + (process_index < total % process_count)
  ranges, start = [], 0
  for shard, size in enumerate(shard_sizes):
    lo, hi = max(begin, start), min(end, start + size)
    if lo < hi:
      ranges.append((shard, lo - start, hi - start))
    start += size
  return ranges


def pipeline_labels(
  shard_labels: Sequence[np.ndarray],
  process_count: int,
  epochs: int,
  shuffle_buffer: int,
  seed: int = 0,
) -> np.ndarray:
  """Host 0's training stream of labels through `input_pipeline.training_order`."""
  ranges = host_ranges([len(s) for s in shard_labels], 0, process_count)
  pieces = tf.ragged.constant(
    [shard_labels[shard][skip:stop] for shard, skip, stop in ranges], dtype=tf.int32
  )
  per_epoch = sum(stop - skip for _, skip, stop in ranges)
  ds = input_pipeline.training_order(
    lambda i: tf.data.Dataset.from_tensor_slices(pieces[i]),
    len(ranges),
    base_key=tf.constant([seed, 0], tf.int64),
    shuffle_buffer=shuffle_buffer,
  )
  return np.fromiter(ds.take(epochs * per_epoch).as_numpy_iterator(), np.int32)


def permutation_labels(
  labels: np.ndarray, process_count: int, epochs: int, seed: int = 0
) -> np.ndarray:
  """The official sampler: a full random permutation per epoch (DistributedSampler: host 0
  takes every process_count-th index of it)."""
  rng = np.random.default_rng(seed)
  return np.concatenate(
    [labels[rng.permutation(len(labels))[::process_count]] for _ in range(epochs)]
  )


def _summary(counts: np.ndarray) -> dict[str, float]:
  return {
    'mean': float(counts.mean()),
    'p5': float(np.percentile(counts, 5)),
    'min': int(counts.min()),
  }


def main(argv: list[str]) -> None:
  del argv
  rng = np.random.default_rng(0)
  num_classes, window = _NUM_CLASSES.value, _WINDOW.value
  class_sizes = rng.integers(250, 1001, num_classes)
  sorted_labels = np.repeat(np.arange(num_classes), class_sizes)
  entries = [convert.Entry(str(i), int(label)) for i, label in enumerate(sorted_labels)]
  num_shards = convert.default_num_shards(len(entries))
  cyclic_count = num_classes * (sum(class_sizes) // num_classes // 2)
  cyclic = [convert.Entry(str(i), i % num_classes) for i in range(cyclic_count)]
  cases = [
    ('class-sorted, round-robin (before)', entries, num_shards, None),
    ('class-sorted, seeded random order (now)', entries, num_shards, 0),
    (
      f'cycling classes, {2 * num_classes} shards, round-robin (before)',
      cyclic,
      2 * num_classes,
      None,
    ),
    (
      f'cycling classes, {2 * num_classes} shards, seeded random order (now)',
      cyclic,
      2 * num_classes,
      0,
    ),
  ]
  expected = expected_distinct(class_sizes, window)
  rows: list[dict[str, Any]] = []
  for hosts in (int(h) for h in _HOSTS.value):
    for name, case_entries, shards, seed in cases:
      start = time.perf_counter()
      shard_labels = [
        np.array([e.label for _, e in s], np.int32)
        for s in convert.shard_entries(case_entries, shards, seed)
      ]
      labels = pipeline_labels(shard_labels, hosts, _EPOCHS.value, _SHUFFLE_BUFFER.value)
      classes_per_shard = np.mean([len(np.unique(s)) for s in shard_labels])
      rows.append(
        {
          'hosts': hosts,
          'order': name,
          'num_videos': len(case_entries),
          'num_shards': shards,
          'classes_per_shard': float(classes_per_shard),
          **_summary(distinct_per_window(labels, window)),
          'seconds': time.perf_counter() - start,
        }
      )
    official = permutation_labels(sorted_labels, hosts, _EPOCHS.value)
    rows.append(
      {
        'hosts': hosts,
        'order': 'full permutation per epoch (official sampler)',
        'num_videos': len(entries),
        'num_shards': None,
        'classes_per_shard': None,
        **_summary(distinct_per_window(official, window)),
        'seconds': 0.0,
      }
    )

  print(
    f'\nDistinct classes per window of {window} consecutive training clips (host 0), '
    f'{num_classes} classes, ~{len(entries)} videos, shuffle buffer '
    f'{_SHUFFLE_BUFFER.value}; expected under a full permutation: {expected:.1f}'
  )
  print(
    f'{"hosts":>5}  {"order":58} {"shards":>6} {"cls/shard":>9} {"mean":>6} {"p5":>6} {"min":>4}'
  )
  for r in rows:
    shards = '' if r['num_shards'] is None else r['num_shards']
    per_shard = '' if r['classes_per_shard'] is None else f'{r["classes_per_shard"]:.1f}'
    print(
      f'{r["hosts"]:>5}  {r["order"]:58} {shards:>6} {per_shard:>9} {r["mean"]:6.1f} '
      f'{r["p5"]:6.1f} {r["min"]:>4}'
    )
  result = {
    'benchmark': 'class_mixing',
    'num_classes': num_classes,
    'window': window,
    'shuffle_buffer': _SHUFFLE_BUFFER.value,
    'epochs': _EPOCHS.value,
    'expected_full_permutation': expected,
    'class_sizes': 'uniform 250..1000, seed 0',
    'rows': rows,
    'machine': platform.machine(),
    'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
  }
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  storage.write_json(_OUTPUT.value, result)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
