"""Classification metrics as MMAction2 0.24.1 reports them, and multi-view score averaging.

The host-side functions take the scores of a whole split (one row per video) as numpy arrays.
`view_scores` gives what the test protocol averages over a video's views (inside `test_step`);
`average_views` does the whole average at once (a reference for tests and small inputs).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

VIEW_AVERAGES = ('prob', 'score')
# ThreeCrop: the test takes three crops of every clip (start, end, middle); not configurable.
NUM_TEST_CROPS = 3


def num_test_views(data: Mapping[str, Any]) -> int:
  """Views per video in the test protocol: `test_num_clips` x the three crops."""
  return int(data['test_num_clips']) * NUM_TEST_CROPS


def view_scores(logits: jax.Array, average: str) -> jax.Array:
  """Per-view scores to be averaged: softmax probabilities ('prob') or raw logits ('score')."""
  if average == 'prob':
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  if average == 'score':
    return logits.astype(jnp.float32)
  raise ValueError(f'test_average must be one of {VIEW_AVERAGES}, got {average!r}')


def average_views(logits: jax.Array, average: str = 'prob') -> jax.Array:
  """Averages (..., V, K) per-view logits over the view axis V, as Recognizer3D's test path."""
  return jnp.mean(view_scores(logits, average), axis=-2)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores)
  labels = np.asarray(labels).astype(np.int64)
  if scores.ndim != 2 or labels.shape != (scores.shape[0],):
    raise ValueError(
      f'scores must be (N, K) and labels (N,), got {scores.shape} and {labels.shape}'
    )
  if scores.shape[0] == 0:
    raise ValueError('no examples to score')
  return scores, labels


def top_k_accuracy(
  scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
) -> list[float]:
  """Fraction of rows whose label is among the k highest scores, for each k."""
  scores, labels = _check(scores, labels)
  order = np.argsort(-scores, axis=1, kind='stable')  # best first; ties keep class order
  result = []
  for k in ks:
    hits = np.any(order[:, :k] == labels[:, None], axis=1)
    result.append(float(hits.mean()))
  return result


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  """MMAction2's mean class accuracy: the mean recall over the classes present in the labels
  or the predictions; a class that is only ever predicted contributes 0."""
  scores, labels = _check(scores, labels)
  preds = np.argmax(scores, axis=1)
  classes = np.union1d(preds, labels)
  recalls = []
  for c in classes:
    is_c = labels == c
    count = int(is_c.sum())
    recalls.append(float(np.sum(preds[is_c] == c)) / count if count else 0.0)
  return float(np.mean(recalls))


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """top1, top5 and mean class accuracy, as fractions in [0, 1]."""
  top1, top5 = top_k_accuracy(scores, labels, (1, 5))
  return {'top1': top1, 'top5': top5, 'mean_class_accuracy': mean_class_accuracy(scores, labels)}
