"""Two processes on localhost train and test together through `jax.distributed`."""

import json
import os
import subprocess

import numpy as np

from tests import batch_recording, tfrecord_factory, train_testlib, zygote


def _run_two(cmd, tmp_path, name, env=None):
  logs = []
  for pid, (code, log) in enumerate(_start_two([cmd, cmd], tmp_path, name, env)):
    assert code == 0, log[-3000:]
    assert f'JAX process {pid}/2, 1 local / 2 global devices' in log
    logs.append(log)
  return logs


def _final_line(log):
  return [line.split('] ', 1)[-1] for line in log.splitlines() if 'Training stopped' in line][-1]


def _write_pattern_dataset(data_dir):
  """train_testlib.write_tiny_dataset's splits (sizes, labels, shards) with pattern frames, which
  carry their video's id through decoding and augmentation; returns the labels."""
  labels = {}
  for split, count, offset in (
    ('train', train_testlib.NUM_TRAIN, 0),
    ('val', train_testlib.NUM_VAL, 1),
  ):
    labels[split] = [(i + offset) % len(train_testlib.CLASSES) for i in range(count)]
    videos = [
      (tfrecord_factory.pattern_video(8, 32, 40, i), y) for i, y in enumerate(labels[split])
    ]
    tfrecord_factory.write_split(data_dir, split, videos, train_testlib.CLASSES, num_shards=2)
  return labels


def test_two_processes_train_then_test(tmp_path):
  data_dir = str(tmp_path / 'data')
  labels = _write_pattern_dataset(data_dir)
  config = train_testlib.write_config_file(str(tmp_path / 'config.py'), data_dir)
  workdir = str(tmp_path / 'work')
  cmd = train_testlib.main_command(config, workdir)
  # Training runs under tests/batch_recording.py: each host records the videos of its batches.
  prefix = str(tmp_path / 'batches')
  recording = dict(train_testlib.env(), **{batch_recording.RECORD_ENV: prefix})
  assert cmd[1:3] == ['-m', 'cost_jax.main'], cmd
  train_cmd = [cmd[0], '-m', 'tests.batch_recording', *cmd[3:]]
  logs = _run_two(train_cmd, tmp_path, 'train', recording)
  # Each host fed its own half of every global batch (batch 4: 2 clips per host), from its own
  # half of the 8 training videos (TFDS's per-process split), each video once per epoch.
  hosts = [batch_recording.read(prefix, pid) for pid in range(2)]
  halves = [list(range(4)), list(range(4, 8))]
  assert [len(steps) for steps in hosts] == [4, 4], hosts  # 2 epochs of 2 steps
  for step in range(4):
    for pid in range(2):
      assert len(hosts[pid][step]) == 2 and set(hosts[pid][step]) <= set(halves[pid]), hosts
  for epoch in (0, 1):
    for pid in range(2):
      assert sorted(hosts[pid][2 * epoch] + hosts[pid][2 * epoch + 1]) == halves[pid], hosts
  # Both saw the same global val result.
  assert _final_line(logs[0]) == _final_line(logs[1])
  assert '"top1"' in _final_line(logs[0])
  assert train_testlib.checkpoint_steps(workdir)[-1] == 4
  state = train_testlib.load_state(workdir, 4)
  assert int(state['step']) == 4

  _run_two(cmd + ['--mode=test'], tmp_path, 'test')
  with open(os.path.join(workdir, 'test_val_summary.json')) as f:
    summary = json.load(f)
  assert summary['num_videos'] == 6  # 3 per host, padded, each counted once
  with np.load(os.path.join(workdir, 'test_val_scores.npz')) as f:
    np.testing.assert_array_equal(f['index'], np.arange(6))
    np.testing.assert_array_equal(f['label'], labels['val'])


def _start_two(cmds, tmp_path, name, env=None):
  """Process i runs cmds[i] (in `env`, train_testlib's by default); returns (exit code, log) per
  process."""
  port = train_testlib.free_port()
  procs = []
  for pid, cmd in enumerate(cmds):
    flags = [f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={pid}']
    log = open(tmp_path / f'{name}{pid}.log', 'w')
    procs.append(
      (
        zygote.Popen(
          cmd + flags,
          cwd=train_testlib.REPO,
          env=env or train_testlib.env(),
          stdout=log,
          stderr=subprocess.STDOUT,
        ),
        log,
      )
    )
  results = []
  for pid, (proc, log) in enumerate(procs):
    code = proc.wait(timeout=300)
    log.close()
    results.append((code, open(tmp_path / f'{name}{pid}.log').read()))
  return results


def test_hosts_that_do_not_share_the_workdir_or_the_data_stop_with_one_line(tmp_path):
  data_dir = str(tmp_path / 'data')
  train_testlib.write_tiny_dataset(data_dir)
  config = train_testlib.write_config_file(str(tmp_path / 'config.py'), data_dir)
  # Two "VMs" with a local --workdir each (the same path on real hosts, a different disk).
  cmds = [train_testlib.main_command(config, str(tmp_path / f'local{pid}')) for pid in range(2)]
  for code, log in _start_two(cmds, tmp_path, 'workdir'):
    errors = [line for line in log.splitlines() if line.startswith('error:')]
    assert code == 2 and len(errors) == 1, log[-3000:]
    assert 'is not one directory for all 2 processes: process 1 cannot read' in errors[0]
    assert 'gs://' in errors[0]
  assert not os.path.exists(tmp_path / 'local0' / 'checkpoints')

  # One shared workdir, but process 1 sees another dataset (one val video fewer).
  other = str(tmp_path / 'other_data')
  train_testlib.write_tiny_dataset(other)
  tfrecord_factory.write_split(
    other, 'val', [(np.zeros((8, 32, 40, 3), np.uint8), 0)] * 5, train_testlib.CLASSES, 2
  )
  other_config = train_testlib.write_config_file(str(tmp_path / 'other.py'), other)
  workdir = str(tmp_path / 'shared')
  cmds = [train_testlib.main_command(c, workdir) for c in (config, other_config)]
  for code, log in _start_two(cmds, tmp_path, 'data'):
    errors = [line for line in log.splitlines() if line.startswith('error:')]
    assert code == 2 and len(errors) == 1, log[-3000:]
    assert 'differs between processes: process 1 sees other split manifests' in errors[0]
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
