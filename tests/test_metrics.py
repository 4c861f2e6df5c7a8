"""Metrics as MMAction2 0.24.1 computes them, on hand-checked examples."""

import jax.numpy as jnp
import numpy as np
import pytest

from cost_jax.training import metrics

# 4 videos, 4 classes. Rankings (best first): v0: 2,0,1,3  v1: 1,2,0,3  v2: 3,0,2,1  v3: 0,3,1,2
SCORES = np.array(
  [
    [0.30, 0.10, 0.50, 0.05],
    [0.20, 0.60, 0.40, 0.01],
    [0.25, 0.05, 0.20, 0.90],
    [0.70, 0.20, 0.00, 0.30],
  ]
)
LABELS = np.array([2, 0, 2, 0])


def test_top_k_accuracy_by_hand():
  top1, top2, top3, top4 = metrics.top_k_accuracy(SCORES, LABELS, (1, 2, 3, 4))
  assert top1 == pytest.approx(2 / 4)  # v0 (2), v3 (0)
  assert top2 == pytest.approx(2 / 4)  # v1's label 0 is 3rd, v2's label 2 is 3rd
  assert top3 == pytest.approx(4 / 4)
  assert top4 == 1.0
  assert metrics.top_k_accuracy(SCORES, LABELS, (10,)) == [1.0]  # k above the class count


def test_mean_class_accuracy_counts_predicted_only_classes_as_zero():
  # predictions 2, 1, 3, 0 vs labels 2, 0, 2, 0.
  # class 0: 1 of 2 right; class 2: 1 of 2 right; classes 1 and 3 are only predicted -> 0.
  got = metrics.mean_class_accuracy(SCORES, LABELS)
  assert got == pytest.approx((0.5 + 0.5 + 0.0 + 0.0) / 4)
  # Mean recall over the label classes only would give 0.5: the MMAction2 definition differs.
  assert got != pytest.approx(0.5)


def test_mean_class_accuracy_ignores_absent_classes():
  scores = np.eye(5)[[0, 0, 1, 1, 1]]  # predicts 0, 0, 1, 1, 1 (classes 2-4 unused)
  labels = np.array([0, 0, 1, 1, 0])
  # class 0: 2 of 3; class 1: 2 of 2; classes 2-4 neither labelled nor predicted: not counted.
  assert metrics.mean_class_accuracy(scores, labels) == pytest.approx((2 / 3 + 1) / 2)


def test_classification_metrics_keys_and_values():
  result = metrics.classification_metrics(SCORES, LABELS)
  assert result == pytest.approx({'top1': 0.5, 'top5': 1.0, 'mean_class_accuracy': 0.25})


def test_view_averaging_prob_and_score_differ():
  # One video, three views. Logit average picks class 1, probability average picks class 0.
  logits = jnp.asarray([[[0.0, 9.0], [2.0, 0.0], [2.0, 0.0]]])
  prob = np.asarray(metrics.average_views(logits, 'prob'))
  score = np.asarray(metrics.average_views(logits, 'score'))
  softmax = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
  np.testing.assert_allclose(prob, softmax.mean(axis=1), rtol=1e-6)
  np.testing.assert_allclose(score, [[4 / 3, 3.0]], rtol=1e-6)
  assert prob.argmax() == 0 and score.argmax() == 1
  np.testing.assert_allclose(prob.sum(-1), 1.0, rtol=1e-6)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match='test_average'):
    metrics.average_views(jnp.zeros((1, 2, 3)), 'mean')
  with pytest.raises(ValueError, match='labels'):
    metrics.top_k_accuracy(SCORES, LABELS[:3])
