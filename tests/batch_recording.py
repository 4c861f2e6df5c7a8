"""`python -m cost_jax.main` that records which videos this host feeds to every training step.

  COST_JAX_RECORD_BATCHES=<prefix> python -m tests.batch_recording --config=... --workdir=...

Every train step appends one JSON line to `<prefix><process index>.jsonl`: the video ids of this
host's part of the global batch, decoded from pattern frames (`tfrecord_factory.pattern_video`)
as tests/pod_scale_step.py reads them. Tests only; the package never reads this variable. Like
tests/fault_injection.py, it wraps one function and then runs the real entry point.
"""

from __future__ import annotations

import json
import os
import runpy

RECORD_ENV = 'COST_JAX_RECORD_BATCHES'


def read(prefix: str, process_index: int) -> list[list[int]]:
  """Per train step, the video ids process `process_index` fed."""
  with open(f'{prefix}{process_index}.jsonl') as f:
    return [json.loads(line) for line in f]


def install(prefix: str) -> None:
  """Wraps `loop.device_batch` (called with this host's batch of every train step)."""
  import jax

  from cost_jax.training import loop
  from tests import tfrecord_factory

  device_batch = loop.device_batch

  def recording(host_batch, config, mesh):
    _, videos, _ = tfrecord_factory.read_pattern(host_batch['clips'])
    with open(f'{prefix}{jax.process_index()}.jsonl', 'a') as f:
      f.write(json.dumps([int(v[0]) for v in videos]) + '\n')  # a clip's frames: one video
    return device_batch(host_batch, config, mesh)

  loop.device_batch = recording


if __name__ == '__main__':
  install(os.environ[RECORD_ENV])
  runpy.run_module('cost_jax.main', run_name='__main__', alter_sys=True)
