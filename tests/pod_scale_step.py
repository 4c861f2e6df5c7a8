"""One process of tests/test_pod_scale.py's step check, run as a subprocess.

  python -m tests.pod_scale_step --data_dir=D --out=O [--coordinator_address=A
      --num_processes=N --process_id=I]

1. One update of the project's jitted train step (`loop.jit_train_step`, `loop.device_batch`,
   `sharding.create_mesh`) on a fixed global batch of 16 clips in 2 micro-batches: each process
   feeds its part of every micro-batch, as the input pipeline does. Process 0 writes the new
   state (parameters, BatchNorm statistics, momentum trace = the first step's gradient plus
   weight decay) and the step's metrics to O/step.npz, keys 'step...'; on one process also for
   the batch with two clips exchanged between BatchNorm groups ('swapped...') and from
   parameters one float32 step up ('ulp...').
2. Two epochs of the real training input pipeline at a global batch of 8 clips: every
   process writes the video ids it read (decoded from the pattern frames) to O/epochs_<I>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from cost_jax.runtime import distributed

GLOBAL_BATCH, MICRO_BATCHES = 16, 2
GROUP = 4  # BatchNorm groups of 4 clips: on 4 processes x 2 devices each spans 2 processes


def global_batch(config) -> dict[str, np.ndarray]:
  """The fixed global batch, (micro-batches, clips per micro-batch, ...), from a fixed seed."""
  rng = np.random.default_rng(1)
  size = config.data.crop_size
  shape = (MICRO_BATCHES, GLOBAL_BATCH // MICRO_BATCHES, config.data.clip_len, size, size, 3)
  return {
    'clips': rng.integers(0, 256, shape, dtype=np.uint8),
    'label': rng.integers(0, config.model.num_classes, shape[:2]).astype(np.int32),
  }


def host_part(batch: dict[str, np.ndarray], index: int, count: int) -> dict[str, np.ndarray]:
  """Process `index`'s rows of every micro-batch, flattened as its input pipeline yields them."""
  out = {}
  for key, value in batch.items():
    rows = value.shape[1] // count
    part = value[:, index * rows : (index + 1) * rows]
    out[key] = part.reshape((-1,) + part.shape[2:])
  return out


def swap_across_groups(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The same clips with two of them exchanged between BatchNorm groups (the control: a mix-up
  of rows that the comparison between topologies must be able to see)."""
  out = {k: v.copy() for k, v in batch.items()}
  for value in out.values():
    value[0, [0, GROUP]] = value[0, [GROUP, 0]]
  return out


def one_step(config, out: str) -> None:
  import jax
  import jax.numpy as jnp
  from jax.experimental import multihost_utils

  from cost_jax.models import create_model
  from cost_jax.training import loop, optim, sharding

  config.batch_size, config.grad_accum_steps = GLOBAL_BATCH, MICRO_BATCHES
  config.model.bn_group_size = GROUP
  mesh = sharding.create_mesh()
  model = create_model(config.model)
  schedule = optim.create_learning_rate_schedule(
    config.optimizer, global_batch_size=config.batch_size, steps_per_epoch=1
  )
  tx = optim.create_optimizer(config.optimizer, schedule, config.model.frozen_stages)
  step = loop.jit_train_step(config, model, tx, schedule, mesh)
  results, compiled = {}, None
  variants = ['step'] + (['swapped', 'ulp'] if jax.process_count() == 1 else [])
  for name in variants:
    batch = swap_across_groups(global_batch(config)) if name == 'swapped' else global_batch(config)
    host = host_part(batch, jax.process_index(), jax.process_count())
    state = loop.initial_state(config, model, tx, mesh, None)
    if name == 'ulp':  # every parameter one float32 step up: the model's float32 noise
      state = state.replace(params=jax.tree.map(lambda p: jnp.nextafter(p, jnp.inf), state.params))
    args = (state, loop.device_batch(host, config, mesh))
    if compiled is None:  # the variants share shapes and shardings: one compile
      compiled = step.lower(*args).compile()
      # Gloo gives processes 30 s to meet at a new group's first collective: meet after compiling.
      multihost_utils.sync_global_devices('pod_scale_step: compiled')
    state, metrics = sharding.to_host(compiled(*args))
    leaves = jax.tree_util.tree_leaves_with_path({'state': state, 'metrics': metrics})
    results.update({f'{name}{jax.tree_util.keystr(k)}': v for k, v in leaves})
  if jax.process_index() == 0:
    np.savez(os.path.join(out, 'step.npz'), **results)


def read_epochs(config, out: str, num_epochs: int = 2) -> None:
  import jax

  from cost_jax.data import input_pipeline
  from cost_jax.training import loop
  from tests import tfrecord_factory

  info = input_pipeline.get_dataset_info(config.data.data_dir, config.data.train_split)
  epoch_steps = loop.steps_per_epoch(config, info)
  batches = input_pipeline.numpy_batches(
    input_pipeline.create_train_dataset(
      config.data, batch_size=config.batch_size // jax.process_count(), seed=config.seed
    )
  )
  epochs = []
  for _ in range(num_epochs):
    ids = []
    for _, batch in zip(range(epoch_steps), batches):
      _, videos, _ = tfrecord_factory.read_pattern(batch['clips'])
      ids.extend(int(v[0]) for v in videos)  # every frame of a clip carries its video's code
    epochs.append(ids)
  with open(os.path.join(out, f'epochs_{jax.process_index()}.json'), 'w') as f:
    json.dump({'epochs': epochs, 'steps_per_epoch': epoch_steps}, f)


def _log(message: str) -> None:
  print(f'{time.monotonic():.1f} {message}', file=sys.stderr, flush=True)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--coordinator_address')
  parser.add_argument('--num_processes', type=int)
  parser.add_argument('--process_id', type=int)
  args = parser.parse_args()
  import tensorflow as tf

  tf.config.set_visible_devices([], 'GPU')
  if distributed.initialize(args.coordinator_address, args.num_processes, args.process_id, {}):
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices('pod_scale_step: started')  # sets up its communicator
  from tests import train_testlib

  _log('initialized')
  one_step(train_testlib.tiny_config(args.data_dir), args.out)
  config = train_testlib.tiny_config(args.data_dir)
  config.batch_size = 8
  _log('stepped')
  read_epochs(config, args.out)
  _log('read')


if __name__ == '__main__':
  main()
