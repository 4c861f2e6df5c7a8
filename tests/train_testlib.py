"""Shared by tests/test_train_*.py: a tiny TFRecord dataset, a tiny config, subprocess runs.

Subprocess runs share a persistent XLA compilation cache and compile with the tests' flags
(tests/xla_cache.py), so that each tiny ResNet-50 program is compiled once per machine, not once
per run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from configs import base
from tests import tfrecord_factory, zygote
from tests.xla_cache import XLA_CACHE, XLA_TEST_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('a', 'b', 'c', 'd')
NUM_TRAIN, NUM_VAL = 8, 6


def write_tiny_dataset(data_dir: str) -> dict[str, list[int]]:
  """8 train and 6 val videos (8 frames of 32x40, 2 shards each); returns the labels."""
  rng = np.random.default_rng(0)
  labels = {}
  for split, count, offset in (('train', NUM_TRAIN, 0), ('val', NUM_VAL, 1)):
    labels[split] = [(i + offset) % len(CLASSES) for i in range(count)]
    videos = [
      (rng.integers(0, 256, (8, 32, 40, 3), dtype=np.uint8), label) for label in labels[split]
    ]
    tfrecord_factory.write_split(data_dir, split, videos, CLASSES, num_shards=2)
  return labels


def tiny_config(data_dir: str, arch: str = 'c2d', r50: bool = False) -> ml_collections.ConfigDict:
  """The official recipe at toy size: 4 frames of 48x48, width 4, one bottleneck block per stage
  (`stage_blocks`; every block of a CoST or I3D model inflated), batch 4, 2 epochs of 2 steps,
  from random weights (the tests' own; independent of configs/demo_*.py). One block per stage
  compiles about 2-4x faster than R50's (3, 4, 6, 3); `r50` keeps R50's blocks and the official
  inflate pattern (the MMAction2 fixtures' architecture).

  (At 32x32, layer4's BatchNorm groups hold 4 values per channel and gradients become noise.)
  """
  config = base.get_config()
  config.model = base.get_model_config(arch)
  config.model.update(base_channels=4, num_classes=len(CLASSES), bn_group_size=2, dropout_ratio=0.2)
  if not r50:
    config.model.update(stage_blocks=(1, 1, 1, 1), inflate=((int(arch != 'c2d'),),) * 4)
  config.init.resnet2d = ''  # no ImageNet ResNet at width 4
  config.data.update(
    data_dir=data_dir,
    clip_len=4,
    frame_interval=1,
    train_scale_range=(48, 52),
    crop_size=48,
    val_short_side=48,
    test_short_side=48,
    test_crop_size=48,
    test_num_clips=2,
    flip_ratio=0.0,
    shuffle_buffer=16,
    prefetch=1,
    # The tests run two workers and their subprocesses on two cores; there, tf.data's
    # autotuning thread held up the deletion of iterators for seconds at a time (docs/data.md).
    autotune=False,
  )
  config.update(
    batch_size=4,
    eval_batch_size=4,
    test_batch_size=2,
    test_views_per_chunk=3,
    num_epochs=2,
    eval_every_epochs=1,
    log_every_steps=1,
    keep_checkpoints=2,
  )
  config.optimizer.update(base_lr=0.05, base_batch_size=4, warmup_epochs=0, lr_decay_epochs=(1,))
  return config


def write_config_file(path: str, data_dir: str, **overrides) -> str:
  """A config file for `python -m cost_jax.main --config=path` wrapping `tiny_config`."""
  lines = [f'config.{k} = {v!r}' for k, v in overrides.items()]
  body = textwrap.indent('\n'.join(lines), '  ')
  with open(path, 'w') as f:
    f.write(
      f'from tests import train_testlib\n\n\ndef get_config():\n'
      f'  config = train_testlib.tiny_config({data_dir!r})\n{body}\n  return config\n'
    )
  return path


def env(num_devices: int = 1) -> dict[str, str]:
  """Environment of a CPU-only subprocess with `num_devices` XLA devices."""
  result = dict(os.environ)
  flags = list(XLA_TEST_FLAGS)
  if num_devices > 1:
    flags.append(f'--xla_force_host_platform_device_count={num_devices}')
  result.update(
    XLA_FLAGS=' '.join(flags),
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=XLA_CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    TF_CPP_MIN_LOG_LEVEL='2',
    PYTHONPATH=REPO + os.pathsep + result.get('PYTHONPATH', ''),
  )
  return result


def main_command(config_path: str, workdir: str, *flags: str) -> list[str]:
  return [
    sys.executable,
    '-m',
    'cost_jax.main',
    f'--config={config_path}',
    f'--workdir={workdir}',
    *flags,
  ]


def run(cmd: list[str], num_devices: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs `cmd` to completion; the error shows the end of its log."""
  proc = zygote.run(cmd, cwd=REPO, env=env(num_devices), timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f'{cmd} exited with {proc.returncode}:\n{proc.stderr[-4000:]}')
  return proc


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def checkpoint_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def load_state(workdir: str, step: int) -> dict:
  """The saved TrainState of `step` as a tree of numpy arrays."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  checkpointer = ocp.StandardCheckpointer()
  # Saved on other devices/processes: restore onto this process's first device.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
    checkpointer.metadata(path).item_metadata.tree,
  )
  return jax.tree.map(np.asarray, checkpointer.restore(path, target))
