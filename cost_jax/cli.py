"""What every command line of the project shares: absl flags with underscores, each tool with its
own flag registry, one way of reporting a user's mistake (one line, exit status 2; a short usage
when required flags are missing), and a quiet start.

Quiet start (`quiet_startup`, run by `import cost_jax`: `python -m cost_jax.X` imports the package
before the first line of X, and data_prep imports it before TensorFlow): these stay off the
terminal: the INFO and WARNING lines of TensorFlow's and XLA's C++ code (TF_CPP_MIN_LOG_LEVEL=2:
"All log messages before absl::InitializeLog() ...", oneDNN, CPU features, TF-TRT; their errors
stay), JAX's probing of platforms that are not installed ("Unable to initialize backend 'tpu'",
"An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed") and
TensorFlow Datasets' INFO lines and its warning about its own use of a deprecated field. Our own
logs, and every other warning or error, stay. `COST_JAX_VERBOSE=1` shows everything (with
TF_CPP_MIN_LOG_LEVEL=0); a TF_CPP_MIN_LOG_LEVEL the user set is kept either way.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys
from typing import Callable, Sequence

from absl import flags

USER_ERROR_EXIT = 2
VERBOSE_ENV = 'COST_JAX_VERBOSE'
VERBOSE_HELP = (
  f'{VERBOSE_ENV}=1 shows the start-up logs of TensorFlow, XLA and JAX that are hidden by default.'
)


class UsageError(Exception):
  """A command line that cannot work (unknown flag, missing value, bad combination)."""


class MissingFlagsError(UsageError):
  """Required flags left empty: `run` shows the command's usage above the error."""


def user_errors() -> tuple[type[Exception], ...]:
  """Exceptions that report a user's mistake rather than a bug of ours, or a condition the user
  must fix (a damaged checkpoint, a full disk)."""
  from cost_jax.checkpoints.disk_space import DiskFullError
  from cost_jax.checkpoints.integrity import CheckpointDamagedError, TrainStateMismatchError
  from cost_jax.data.schema import DatasetError
  from cost_jax.storage import UnsupportedLocationError
  from cost_jax.training.config_checks import ConfigError
  from cost_jax.weights.download import WeightsUnavailableError
  from cost_jax.weights.mmaction2 import ArchitectureMismatchError, CheckpointMismatchError
  from cost_jax.weights.torch_pickle import CheckpointFormatError, UnsafeCheckpointError

  return (
    UsageError,
    ConfigError,
    WeightsUnavailableError,
    ArchitectureMismatchError,
    CheckpointMismatchError,
    CheckpointFormatError,
    UnsafeCheckpointError,
    FileNotFoundError,
    DatasetError,
    CheckpointDamagedError,
    TrainStateMismatchError,
    DiskFullError,
    UnsupportedLocationError,
  )


def define_checkpoint_flag(flag_values: flags.FlagValues) -> None:
  """`--checkpoint`, as every tool that loads a trained model takes it."""
  flags.DEFINE_string(
    'checkpoint',
    None,
    'Trainer workdir / checkpoint directory, saved-model directory or MMAction2 .pth/.npz.',
    flag_values=flag_values,
  )


def require(flag_values: flags.FlagValues, *names: str) -> None:
  """Raises MissingFlagsError naming the flags among `names` left empty."""
  missing = [f'--{name}' for name in names if not flag_values[name].value]
  if missing:
    raise MissingFlagsError(required_message(missing))


def required_message(missing: Sequence[str]) -> str:
  """'--a is required', '--a and --b are required'."""
  return f'{" and ".join(missing)} {"is" if len(missing) == 1 else "are"} required'


def usage(doc: str, prog: str) -> str:
  """A short usage from a command's docstring: its first paragraph and the indented command lines
  that follow it, then where the rest is."""
  paragraphs = doc.strip().split('\n\n')
  shown = paragraphs[:1] + [p for p in paragraphs[1:2] if p.startswith('  ')]
  return '\n\n'.join(shown + [f'Every flag: python -m {prog} --help'])


def report(error: BaseException) -> int:
  """Prints `error: ...` on stderr; returns the exit status of a user's mistake."""
  print(f'error: {error}', file=sys.stderr)
  return USER_ERROR_EXIT


def parse(flag_values: flags.FlagValues, prog: str, argv: Sequence[str]) -> list[str]:
  """Parses `argv` (without the program name) into `flag_values`, from their defaults; returns
  the positional arguments. Bad flags raise UsageError."""
  flag_values.unparse_flags()
  try:
    return flag_values([prog] + argv)[1:]
  except flags.Error as e:
    raise UsageError(f'{e} (see python -m {prog} --help)') from None


def run(
  main: Callable[[list[str]], int],
  flag_values: flags.FlagValues,
  prog: str,
  argv: Sequence[str] | None = None,
  *,
  doc: str = '',
  errors: tuple[type[Exception], ...] | None = None,
) -> int:
  """Parses the flags and calls `main(positional)`; `--help` prints `doc` and the flags; a
  user's mistake (`errors`, default `user_errors()`) becomes one line on stderr, exit status 2,
  below the short usage of `doc` when required flags are missing (`require`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if {'--help', '-h', '--helpfull'} & set(argv):
    print(f'{doc.strip()}\n\n{VERBOSE_HELP}\n\nflags:\n{flag_values.get_help()}')
    return 0
  caught = errors or user_errors()
  try:
    return main(parse(flag_values, prog, argv))
  except MissingFlagsError as e:
    if doc:
      print(f'{usage(doc, prog)}\n', file=sys.stderr)
    return report(e)
  except caught as e:
    return report(e)


def start_runtime() -> None:
  """Before any computation: TensorFlow sees no accelerator (it only reads and resizes data),
  and JAX's persistent compilation cache is on (`compilation_cache`)."""
  import tensorflow as tf

  from cost_jax.runtime import compilation_cache

  tf.config.set_visible_devices([], 'GPU')
  compilation_cache.enable()


# Log lines of JAX's platform probing (jax._src.xla_bridge): a platform that is not installed.
# "CUDA backend failed to initialize" (installed but broken) is not among them.
_PROBING = (
  "Unable to initialize backend '",
  'An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed',
  'A Google TPU may be present on this machine, but either a TPU-enabled jaxlib or libtpu',
)
# TensorFlow Datasets' warning about a deprecated field that it reads itself (video features).
_TFDS_OWN_DEPRECATION = '.dtype` is deprecated. Please change your code to use NumPy'


class _ProbingFilter(py_logging.Filter):
  """Drops JAX's lines about probing platforms that are not installed."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_PROBING)


class _TfdsFilter(py_logging.Filter):
  """Drops TensorFlow Datasets' INFO lines ("Load dataset info from ...") and its warning about
  its own use of a deprecated field; its other warnings and errors, and other modules' lines
  through the absl logger, pass."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if f'{os.sep}tensorflow_datasets{os.sep}' not in record.pathname:
      return True
    if record.levelno < py_logging.WARNING:
      return False
    return _TFDS_OWN_DEPRECATION not in record.getMessage()


def verbose() -> bool:
  """Whether COST_JAX_VERBOSE asks for the libraries' start-up logs (set, and not 0/false/no)."""
  return os.environ.get(VERBOSE_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


def quiet_startup() -> None:
  """Keeps the libraries' start-up logs off the terminal (see the module docstring), unless
  COST_JAX_VERBOSE is set. Environment variables only take effect before TensorFlow and jaxlib
  are loaded: `cost_jax/__init__.py` calls this first thing."""
  if verbose():
    # jax sets 1 (no INFO) when it is imported first; verbose means all of TF's and XLA's lines.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0')
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from absl import logging as absl_logging

  py_logging.getLogger('jax._src.xla_bridge').addFilter(_ProbingFilter())
  absl_logging.get_absl_logger().addFilter(_TfdsFilter())
