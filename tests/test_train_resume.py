"""Fault tolerance with real signals: a run killed (SIGKILL) at a random step, resumed, stopped by
SIGTERM (which saves), and resumed again ends with exactly the state of an uninterrupted run."""

import random
import signal
import subprocess
import time

import numpy as np

from tests import train_testlib, trees, zygote

TOTAL_STEPS = 16  # 8 epochs of 2 steps, a checkpoint after every step


def _start(cmd, log_path):
  log = open(log_path, 'w')
  return zygote.Popen(
    cmd, cwd=train_testlib.REPO, env=train_testlib.env(), stdout=log, stderr=subprocess.STDOUT
  ), log


def _wait_for_checkpoint(proc, workdir, step, timeout=240):
  """Waits until a checkpoint >= `step` is complete; returns the newest one."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    steps = train_testlib.checkpoint_steps(workdir)
    if steps and steps[-1] >= step:
      return steps[-1]
    assert proc.poll() is None, f'run ended early with {proc.returncode}'
    time.sleep(0.02)
  raise AssertionError(f'no checkpoint {step} within {timeout}s')


def test_kill_resume_and_sigterm_match_an_uninterrupted_run(tmp_path):
  data_dir = str(tmp_path / 'data')
  train_testlib.write_tiny_dataset(data_dir)
  config = train_testlib.write_config_file(
    str(tmp_path / 'config.py'),
    data_dir,
    num_epochs=TOTAL_STEPS // 2,
    checkpoint_every_steps=1,
    eval_every_epochs=TOTAL_STEPS,
    keep_checkpoints=2,
  )
  straight, interrupted = str(tmp_path / 'straight'), str(tmp_path / 'interrupted')
  # The uninterrupted run goes on beside the first interrupted one.
  reference, reference_log = _start(
    train_testlib.main_command(config, straight), str(tmp_path / 'straight.log')
  )

  cmd = train_testlib.main_command(config, interrupted)
  kill_at = random.Random().randint(1, TOTAL_STEPS // 3)  # a random step, logged on failure
  proc, log = _start(cmd, str(tmp_path / 'run1.log'))
  _wait_for_checkpoint(proc, interrupted, kill_at)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  log.close()
  killed_at = train_testlib.checkpoint_steps(interrupted)[-1]
  assert kill_at <= killed_at < TOTAL_STEPS, (kill_at, killed_at)

  # Resumed; SIGTERM once it has moved on: it saves the step it is at and exits with 143.
  proc, log = _start(cmd, str(tmp_path / 'run2.log'))
  _wait_for_checkpoint(proc, interrupted, killed_at + 1)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 143, open(tmp_path / 'run2.log').read()[-3000:]
  log.close()
  stopped_at = train_testlib.checkpoint_steps(interrupted)[-1]
  assert killed_at < stopped_at < TOTAL_STEPS, (killed_at, stopped_at)
  assert 'SIGTERM' in open(tmp_path / 'run2.log').read()

  train_testlib.run(cmd)
  assert train_testlib.checkpoint_steps(interrupted)[-1] == TOTAL_STEPS
  assert reference.wait(timeout=240) == 0, open(tmp_path / 'straight.log').read()[-3000:]
  reference_log.close()
  assert train_testlib.checkpoint_steps(straight)[-1] == TOTAL_STEPS
  expected = train_testlib.load_state(straight, TOTAL_STEPS)
  got = train_testlib.load_state(interrupted, TOTAL_STEPS)
  for path, a, b in trees.leaf_pairs(got, expected):
    np.testing.assert_array_equal(
      a, b, err_msg=f'{path}: killed at {killed_at}, stopped at {stopped_at}'
    )
