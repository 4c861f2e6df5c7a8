r"""Command line entry: train (resuming from the workdir) or run the test protocol.

  python -m cost_jax.main --config=configs/costb_k400.py --workdir=runs/costb \
      [--config.batch_size=16] [--mode=train|test] [--checkpoint=PATH]

Multi-process runs call `jax.distributed.initialize()` when the environment is a cluster that JAX
detects (SLURM with several tasks, Open MPI, TPU pods), or with the explicit flags
--coordinator_address, --num_processes and --process_id. A run stopped by SIGTERM saves a
checkpoint and exits with status 143; starting the same command again resumes it.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

from absl import app, flags, logging
from ml_collections import config_flags

from cost_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
flags.DEFINE_string(
  'workdir', None, 'Directory for checkpoints, logs and results: a local path or gs://bucket/path.'
)
flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'test'],
  'train: train and validate (resumes from the workdir); test: the multi-view test protocol.',
)
flags.DEFINE_string(
  'checkpoint',
  None,
  'For --mode=test: a checkpoint directory, one step of it, or an MMAction2 .pth, local or '
  'gs:// (default: the best or latest checkpoint in the workdir).',
)
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
flags.DEFINE_integer('process_id', None, 'Index of this process (multi-process).')
flags.mark_flags_as_required(['config', 'workdir'])

INTERRUPTED_EXIT_CODE = 143


def cluster_detected(environ: Mapping[str, str]) -> bool:
  """Whether the environment describes a multi-process job that JAX can set up by itself."""

  def count(key):
    try:
      return int(environ.get(key, '1'))
    except ValueError:
      return 1

  if 'SLURM_JOB_ID' in environ and count('SLURM_NTASKS') > 1:
    return True
  if count('OMPI_COMM_WORLD_SIZE') > 1:
    return True
  return ',' in environ.get('TPU_WORKER_HOSTNAMES', '')


def initialize_distributed(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  environ: Mapping[str, str],
) -> bool:
  """Calls `jax.distributed.initialize` when asked to or when on a cluster; True if it did."""
  import jax

  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise cli.UsageError(
        '--coordinator_address, --num_processes and --process_id go together; give all three'
      )
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True
  if cluster_detected(environ):
    jax.distributed.initialize()
    return True
  return False


def main(argv):
  try:
    _run(argv)
  except cli.user_errors() as e:
    sys.exit(cli.report(e))


def _run(argv) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.mode == 'train' and FLAGS.checkpoint:
    raise cli.UsageError(
      '--checkpoint is for --mode=test; training resumes from --workdir '
      '(use config.init.mmaction2 or config.init.checkpoint to start from '
      'other weights)'
    )
  from cost_jax import checkpointing, storage

  storage.check(FLAGS.workdir, '--workdir')  # an unsupported scheme stops before any write
  if FLAGS.checkpoint:
    storage.check(FLAGS.checkpoint, '--checkpoint')
  checkpointing.quiet_orbax_logs()
  import tensorflow as tf

  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep accelerators for JAX
  initialize_distributed(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, os.environ
  )
  import jax

  from cost_jax import evaluate, train

  logging.info(
    'JAX process %d/%d, %d local / %d global devices (%s)',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  if FLAGS.mode == 'train':
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if summary['interrupted']:
      sys.exit(INTERRUPTED_EXIT_CODE)
  else:
    evaluate.run_test_protocol(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override reported in one line."""
  try:
    remaining = FLAGS(argv)
    FLAGS.config.get('model')  # the config file loads lazily: fail here, not mid-run
    return remaining
  except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    # An unknown config field comes as AttributeError/KeyError, a missing file as OSError.
    text = str(e).replace('\\n', ' ').replace("\\'", "'")
    if len(text) > 1 and text[0] == text[-1] == "'":
      text = text[1:-1]
    sys.exit(cli.report(cli.UsageError('bad flag: ' + ' '.join(text.split()))))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
