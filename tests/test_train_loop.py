"""The whole loop on tiny TFRecords, in this process: train + val, test protocol, NaN stop."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from cost_jax.checkpoints import saving
from cost_jax.training import bookkeeping, evaluate, loop, metrics
from tests import train_testlib


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp('loop')
  data_dir, workdir = str(root / 'data'), str(root / 'work')
  labels = train_testlib.write_tiny_dataset(data_dir)
  config = train_testlib.tiny_config(data_dir)
  summary = loop.train_and_evaluate(config, workdir)
  return dict(config=config, workdir=workdir, labels=labels, summary=summary)


def test_training_runs_validates_and_saves(trained):
  summary, workdir = trained['summary'], trained['workdir']
  assert summary['step'] == summary['total_steps'] == 4 and not summary['interrupted']
  assert summary['steps_per_epoch'] == 2
  assert set(summary['val']) == {'top1', 'top5', 'mean_class_accuracy'}
  assert train_testlib.checkpoint_steps(workdir)[-1] == 4
  state = train_testlib.load_state(workdir, 4)
  assert int(state['step']) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['batch_size'] == 4
  for split in ('train', 'val'):
    with open(os.path.join(workdir, 'manifests', f'{split}.manifest.json')) as f:
      assert json.load(f)['num_examples'] == {'train': 8, 'val': 6}[split]
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))


def test_test_protocol_scores_every_video_once(trained):
  config, workdir = trained['config'], trained['workdir']
  summary = evaluate.run_test_protocol(config, workdir)
  assert summary['num_videos'] == 6 and summary['num_views'] == 6
  assert summary['manifest']['num_examples'] == 6
  # The official save_best checkpoint: the step with the best val top-1 of the run.
  manager = saving.create_manager(os.path.join(workdir, 'checkpoints'), read_only=True)
  best = saving.read_meta(manager, 4)['best']
  assert summary['step'] == best['step'] and f'step {best["step"]}' in summary['checkpoint']
  assert 'best val top-1' in summary['reason']
  with np.load(os.path.join(workdir, 'test_val_scores.npz')) as f:
    index, label, scores = f['index'], f['label'], f['scores']
  np.testing.assert_array_equal(index, np.arange(6))
  np.testing.assert_array_equal(label, trained['labels']['val'])
  np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)  # averaged probabilities
  assert summary['metrics'] == pytest.approx(metrics.classification_metrics(scores, label))
  with open(os.path.join(workdir, 'test_val_summary.json')) as f:
    assert json.load(f)['metrics'] == pytest.approx(summary['metrics'])
  # The same checkpoint, given explicitly as one step's directory, gives the same scores.
  best_dir = os.path.join(workdir, 'checkpoints', str(best['step']))
  again = evaluate.run_test_protocol(config, workdir, best_dir)
  assert again['metrics'] == pytest.approx(summary['metrics'])
  assert again['reason'] == 'the step given'


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(trained, tmp_path):
  config = train_testlib.tiny_config(trained['config'].data.data_dir)
  config.num_epochs = 3
  config.optimizer.base_lr = 1e38  # the update of step 5 overflows the parameters
  workdir = str(tmp_path / 'work')
  shutil.copytree(
    os.path.join(trained['workdir'], 'checkpoints', '4'), os.path.join(workdir, 'checkpoints', '4')
  )
  with pytest.raises(bookkeeping.NonFiniteLossError, match=r'at step 5 .*checkpoint \(step 4\)'):
    loop.train_and_evaluate(config, workdir)
  assert train_testlib.checkpoint_steps(workdir) == [4]
  state = train_testlib.load_state(workdir, 4)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))
