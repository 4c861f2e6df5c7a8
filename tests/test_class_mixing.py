"""Shard order + the training pipeline's shuffling mix classes about as well as the official
full permutation, whatever the order of the input list (benchmarks/class_mixing.py measures it
at Kinetics-400 size)."""

import numpy as np
import tensorflow as tf

from cost_jax.data import input_pipeline
from data_prep import convert

NUM_CLASSES, PER_CLASS, WINDOW = 40, 20, 16


def _window_classes(labels: np.ndarray) -> float:
  """Mean distinct classes per non-overlapping window of WINDOW consecutive labels."""
  usable = len(labels) // WINDOW * WINDOW
  return float(np.mean([len(np.unique(w)) for w in labels[:usable].reshape(-1, WINDOW)]))


def _stream(entries, num_shards, seed) -> np.ndarray:
  """One epoch of labels in the order the training pipeline reads them."""
  shards = [[e.label for _, e in s] for s in convert.shard_entries(entries, num_shards, seed)]
  pieces = tf.ragged.constant(shards, dtype=tf.int32)
  ds = input_pipeline.training_order(
    lambda i: tf.data.Dataset.from_tensor_slices(pieces[i]),
    num_shards,
    base_key=tf.constant([0, 0], tf.int64),
    shuffle_buffer=32,
  )
  labels = np.fromiter(ds.take(len(entries)).as_numpy_iterator(), np.int32)
  assert sorted(labels) == sorted(e.label for e in entries)  # one epoch = every video once
  return labels


def test_a_class_sorted_or_cyclic_list_is_mixed_like_a_full_permutation():
  sorted_list = [convert.Entry(str(i), i // PER_CLASS) for i in range(NUM_CLASSES * PER_CLASS)]
  cyclic_list = [convert.Entry(str(i), i % NUM_CLASSES) for i in range(NUM_CLASSES * PER_CLASS)]
  rng = np.random.default_rng(0)
  permuted = [_window_classes(rng.permutation([e.label for e in sorted_list])) for _ in range(5)]
  official = float(np.mean(permuted))
  # E[distinct] of WINDOW draws from 40 equal classes, without replacement: about 13.4.
  assert 12.5 < official < 14.5
  for entries, num_shards in ((sorted_list, 32), (cyclic_list, 2 * NUM_CLASSES)):
    now = _window_classes(_stream(entries, num_shards, seed=0))
    assert now > 0.95 * official, (now, official)
    # Dealt round-robin in input order (data_prep before), both lists gave fewer classes.
    before = _window_classes(_stream(entries, num_shards, seed=None))
    assert before < 0.85 * official, (before, official)
  # A cyclic list dealt round-robin to 80 shards put one class in each shard; now each mixes.
  assert all(
    len({e.label for _, e in s}) == 1
    for s in convert.shard_entries(cyclic_list, 2 * NUM_CLASSES, None)
  )
  assert (
    np.mean(
      [len({e.label for _, e in s}) for s in convert.shard_entries(cyclic_list, 2 * NUM_CLASSES, 0)]
    )
    > 8
  )
