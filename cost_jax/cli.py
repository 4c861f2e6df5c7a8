"""What every command line of the project shares: absl flags with underscores, each tool with its
own flag registry, and one way of reporting a user's mistake (one line, exit status 2)."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import flags

USER_ERROR_EXIT = 2


class UsageError(Exception):
  """A command line that cannot work (unknown flag, missing value, bad combination)."""


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
  """Raises UsageError naming the first of the flags `names` left empty."""
  for name in names:
    if not flag_values[name].value:
      raise UsageError(f'--{name} is required')


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
  user's mistake (`errors`, default `user_errors()`) becomes one line on stderr, exit status 2."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if {'--help', '-h', '--helpfull'} & set(argv):
    print(f'{doc.strip()}\n\nflags:\n{flag_values.get_help()}')
    return 0
  caught = errors or user_errors()
  try:
    return main(parse(flag_values, prog, argv))
  except caught as e:
    return report(e)


def start_runtime() -> None:
  """Before any computation: TensorFlow sees no accelerator (it only reads and resizes data),
  and JAX's persistent compilation cache is on (`compilation_cache`)."""
  import tensorflow as tf

  from cost_jax.runtime import compilation_cache

  tf.config.set_visible_devices([], 'GPU')
  compilation_cache.enable()
