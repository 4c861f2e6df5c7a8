r"""Command line entry: train (resuming from the workdir) or run the test protocol.

  python -m cost_jax.main --config=configs/costb_k400.py --workdir=runs/costb \
      [--config.batch_size=16] [--mode=train|test] [--checkpoint=PATH]

Multi-process runs call `jax.distributed.initialize()` when the environment is a cluster that JAX
detects (SLURM with several tasks, Open MPI, TPU pods), or with the explicit flags
--coordinator_address, --num_processes and --process_id. A run stopped by SIGTERM saves a
checkpoint and exits with status 143; starting the same command again resumes it. If a process
of a multi-process run dies, the others stop within about --heartbeat_timeout seconds, with an
error naming it (`cost_jax.runtime.distributed`).

Without --config or --workdir, or with a --mode other than train or test, it prints a short usage
and exits with status 2 (every flag: --helpfull). The start-up logs of TensorFlow, XLA and JAX
are hidden (`cost_jax.cli.quiet_startup`); COST_JAX_VERBOSE=1 shows them.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cost_jax import cli
from cost_jax.runtime import distributed

# Their former home: tests call main.cluster_detected and main.initialize_distributed.
from cost_jax.runtime.distributed import cluster_detected  # noqa: F401
from cost_jax.runtime.distributed import initialize as initialize_distributed  # noqa: F401

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
flags.DEFINE_integer(
  'heartbeat_timeout',
  distributed.DEFAULT_HEARTBEAT_TIMEOUT_S,
  'Seconds without a heartbeat after which a process counts as dead and every process stops '
  '(multi-process).',
)
flags.DEFINE_integer(
  'shutdown_timeout',
  distributed.DEFAULT_SHUTDOWN_TIMEOUT_S,
  'Seconds a finished process waits at exit for the others (multi-process).',
)
flags.mark_flags_as_required(['config', 'workdir'])

INTERRUPTED_EXIT_CODE = 143

USAGE = f"""\
usage: python -m cost_jax.main --config=FILE --workdir=DIR [--mode=train|test] [--FLAG=VALUE ...]

  train:   python -m cost_jax.main --config=configs/costb_k400.py --workdir=runs/costb
  resume:  the same command again (training resumes from the latest checkpoint in --workdir)
  test:    python -m cost_jax.main --config=configs/costb_k400.py --workdir=runs/costb --mode=test
           [--checkpoint=PATH]  (default: the best or latest checkpoint in --workdir)
  a config field:  --config.batch_size=16 (any field of the config file)

Every flag: python -m cost_jax.main --helpfull
{cli.VERBOSE_HELP}"""


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
  from cost_jax import storage
  from cost_jax.checkpoints import saving

  storage.check(FLAGS.workdir, '--workdir')  # an unsupported scheme stops before any write
  if FLAGS.checkpoint:
    storage.check(FLAGS.checkpoint, '--checkpoint')
  saving.quiet_orbax_logs()
  cli.start_runtime()  # tf.data only, no accelerator for TF; JAX's compilation cache on
  distributed.initialize(
    FLAGS.coordinator_address,
    FLAGS.num_processes,
    FLAGS.process_id,
    os.environ,
    heartbeat_timeout_s=FLAGS.heartbeat_timeout,
    shutdown_timeout_s=FLAGS.shutdown_timeout,
  )
  import jax

  from cost_jax.training import evaluate, loop

  logging.info(
    'JAX process %d/%d, %d local / %d global devices (%s)',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  if FLAGS.mode == 'train':
    summary = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if summary['interrupted']:
      sys.exit(INTERRUPTED_EXIT_CODE)
  else:
    evaluate.run_test_protocol(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)


def _usage_mistake(error: flags.Error) -> str | None:
  """The error line for the mistakes that show the usage (--config or --workdir missing, a bad
  --mode), else None."""
  text = str(error)
  missing = [f'--{name}' for name in ('config', 'workdir') if f'flag --{name}=None:' in text]
  if missing:
    return cli.required_message(missing)
  if text.startswith('flag --mode='):
    return f'{text.split(":", 1)[0][len("flag ") :]}: must be train or test'
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing: a missing --config/--workdir or a bad --mode shows the usage, another bad
  flag or config override is reported in one line; both exit with status 2."""
  try:
    remaining = FLAGS(argv)
    FLAGS.config.get('model')  # the config file loads lazily: fail here, not mid-run
    return remaining
  except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    mistake = _usage_mistake(e) if isinstance(e, flags.IllegalFlagValueError) else None
    if mistake:
      print(USAGE + '\n', file=sys.stderr)
      sys.exit(cli.report(cli.UsageError(mistake)))
    # An unknown config field comes as AttributeError/KeyError, a missing file as OSError.
    text = str(e).replace('\\n', ' ').replace("\\'", "'")
    if len(text) > 1 and text[0] == text[-1] == "'":
      text = text[1:-1]
    sys.exit(cli.report(cli.UsageError('bad flag: ' + ' '.join(text.split()))))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
