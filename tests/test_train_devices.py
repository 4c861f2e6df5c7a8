"""Data parallelism: 1 and 4 simulated CPU devices train to the same state at the same global
batch and BatchNorm groups."""

import re
import subprocess

import numpy as np

from tests import train_testlib, trees, zygote


def _logged_losses(log: str) -> dict[int, float]:
  """{step: loss} from the '[step] train/...train/loss=x, ...' log lines."""
  found = re.findall(r'\[(\d+)\] train/.*train/loss=([-+.e\d]+)', log)
  return {int(step): float(loss) for step, loss in found}


def test_one_and_four_devices_train_identically(tmp_path):
  data_dir = str(tmp_path / 'data')
  train_testlib.write_tiny_dataset(data_dir)
  # Batch 4 in BatchNorm groups of 2: on 4 devices each group spans two devices. The toy model
  # is chaotic (a 1e-6 relative change of its parameters moves some gradients by 10%), so the
  # whole state (parameters, BN statistics and the momentum trace, i.e. the gradients) is
  # compared after the first step and the loss after two; a small learning rate keeps the float
  # noise of step 1 from being amplified into step 2's loss.
  config = train_testlib.write_config_file(
    str(tmp_path / 'config.py'),
    data_dir,
    num_epochs=1,
    checkpoint_every_steps=1,
    **{'optimizer.base_lr': 0.005},
  )
  runs = {}
  for devices in (1, 4):
    workdir = str(tmp_path / f'devices{devices}')
    log = open(tmp_path / f'devices{devices}.log', 'w')
    proc = zygote.Popen(
      train_testlib.main_command(config, workdir),
      cwd=train_testlib.REPO,
      env=train_testlib.env(devices),
      stdout=log,
      stderr=subprocess.STDOUT,
    )
    runs[devices] = (proc, log, workdir)
  for devices, (proc, log, _) in runs.items():
    code = proc.wait(timeout=300)
    log.close()
    text = open(tmp_path / f'devices{devices}.log').read()
    assert code == 0, text[-3000:]
    assert f'{devices} local / {devices} global devices' in text

  losses = {d: _logged_losses(open(tmp_path / f'devices{d}.log').read()) for d in (1, 4)}
  assert sorted(losses[1]) == [1, 2]
  np.testing.assert_allclose(
    [losses[4][k] for k in (1, 2)], [losses[1][k] for k in (1, 2)], rtol=1e-4
  )  # as logged, 6 significant digits
  one = train_testlib.load_state(runs[1][2], 1)
  four = train_testlib.load_state(runs[4][2], 1)
  for path, a, b in trees.leaf_pairs(four, one):
    # The devices sum gradients in another order: float32 noise scales with each tensor's size.
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=path)
