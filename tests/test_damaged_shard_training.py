"""A shard damaged while a run is under way: training stops with the shard's name and the
checkpoint from before stays as it was."""

import os

import pytest
import tensorflow as tf

from cost_jax.data import schema
from cost_jax.training import loop
from tests import train_testlib


def _files(directory: str) -> dict[str, tuple[int, int]]:
  return {
    os.path.join(root, name): (
      os.path.getsize(os.path.join(root, name)),
      os.stat(os.path.join(root, name)).st_mtime_ns,
    )
    for root, _, names in os.walk(directory)
    for name in names
  }


def test_a_shard_damaged_during_training_stops_it_with_the_shard_name(tmp_path):
  data_dir, workdir = str(tmp_path / 'data'), str(tmp_path / 'work')
  train_testlib.write_tiny_dataset(data_dir)
  config = train_testlib.tiny_config(data_dir)
  config.num_epochs = 1
  assert loop.train_and_evaluate(config, workdir)['step'] == 2
  steps = train_testlib.checkpoint_steps(workdir)
  checkpoints = _files(os.path.join(workdir, 'checkpoints'))
  # A disk error in the middle of a shard: same size, so the check before compiling passes.
  shard = os.path.join(data_dir, schema.shard_name('train', 1, 2))
  with open(shard, 'r+b') as f:
    f.seek(os.path.getsize(shard) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  config.num_epochs = 2  # resume for a second epoch
  with pytest.raises((tf.errors.OpError, schema.DatasetError)) as error:
    loop.train_and_evaluate(config, workdir)
  assert shard in str(error.value) and 'damaged shard' in str(error.value)
  assert train_testlib.checkpoint_steps(workdir) == steps == [2]
  assert _files(os.path.join(workdir, 'checkpoints')) == checkpoints
  assert int(train_testlib.load_state(workdir, 2)['step']) == 2
