"""Command lines of data_prep, on `cost_jax.cli`: absl flags with underscores, each tool with its
own flag registry, one way of reporting a user's mistake (one line on stderr, exit status 2).

`define_conversion_flags` adds the flags every converting front-end shares.
"""

from __future__ import annotations

from typing import Callable, Sequence

from absl import flags

from cost_jax import cli as cost_jax_cli
from data_prep import convert

UsageError = cost_jax_cli.UsageError
# A user's mistake in data_prep: bad flags, missing or malformed lists, annotations, label maps,
# an output directory that holds another dataset (DatasetError is a ValueError).
USER_ERRORS = (UsageError, OSError, ValueError, RuntimeError)


def define_conversion_flags(fv: flags.FlagValues, default_name: str) -> None:
  """--output, --name and the conversion options shared by every converting front-end."""
  defaults = convert.ConvertOptions()
  flags.DEFINE_string(
    'output',
    None,
    'Output directory of the TFDS dataset (shards, manifests, '
    'dataset_info.json). For tfds.load(NAME, data_dir=D), use D/NAME/VERSION.',
    flag_values=fv,
    required=True,
  )
  flags.DEFINE_string(
    'name',
    '',
    f'TFDS dataset name (default: NAME when --output is .../NAME/VERSION, else {default_name!r}).',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'short_side',
    defaults.short_side,
    'Short side of the stored frames in px (0 = the decoded size, as the official decode).',
    flag_values=fv,
  )
  flags.DEFINE_enum(
    'image_format',
    defaults.image_format,
    ['jpeg', 'png'],
    'Frame format: jpeg, or png (lossless; with --short_side=0 the stored frames '
    'are the decoded frames exactly).',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'jpeg_quality', defaults.jpeg_quality, 'JPEG quality (1..100).', flag_values=fv
  )
  flags.DEFINE_enum(
    'truncated',
    defaults.truncated,
    ['drop', 'keep'],
    'Videos with fewer decodable frames than their container states: drop them '
    '(as the official loader, which cannot read them) or keep their decodable '
    'frames. Listed in {split}.skipped.csv either way.',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'shuffle_seed',
    defaults.shuffle_seed,
    'Seed of the random order in which videos are dealt to shards.',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'num_shards', 0, 'Shards per split (0 = max(1, min(1024, videos // 8))).', flag_values=fv
  )
  flags.DEFINE_integer('workers', 0, 'Worker processes (0 = os.cpu_count()).', flag_values=fv)
  flags.DEFINE_boolean(
    'progress',
    True,
    'Show progress on stderr: a bar on a terminal, else a log line every minute.',
    flag_values=fv,
  )


def conversion_options(fv: flags.FlagValues) -> convert.ConvertOptions:
  """ConvertOptions from the flags of `define_conversion_flags` (UsageError naming a bad one)."""
  try:
    return convert.ConvertOptions(
      short_side=fv.short_side,
      image_format=fv.image_format,
      jpeg_quality=fv.jpeg_quality,
      truncated=fv.truncated,
      shuffle_seed=fv.shuffle_seed,
      num_shards=fv.num_shards,
      workers=fv.workers,
      progress=fv.progress,
    )
  except ValueError as e:
    raise UsageError(f'--{e}') from None


def no_arguments(positional: Sequence[str]) -> None:
  """Raises UsageError for positional arguments of a command that takes flags only."""
  if positional:
    raise UsageError(f'unexpected argument(s) {list(positional)}: every option is a --flag=value')


def run(
  main: Callable[[list[str]], int],
  fv: flags.FlagValues,
  prog: str,
  argv: Sequence[str] | None,
  doc: str,
) -> int:
  """`cost_jax.cli.run` with data_prep's user errors: --help prints `doc` and the flags."""
  return cost_jax_cli.run(main, fv, prog, argv, doc=doc, errors=USER_ERRORS)
