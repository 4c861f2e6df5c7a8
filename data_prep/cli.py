"""Command lines of data_prep, on `cost_jax.cli`: absl flags with underscores, each tool with its
own flag registry, one way of reporting a user's mistake (one line on stderr, exit status 2).

`define_conversion_flags` adds the flags every converting front-end shares, and
`run_conversion` runs such a front-end: locations checked first (local paths or gs:// URLs;
another scheme is one line and exit status 2 before anything is read or written), then the
options, then the conversion of what the front-end lists.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from absl import flags

from cost_jax import cli as cost_jax_cli
from cost_jax import storage
from data_prep import convert, dataset_writer

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
    'Output directory of the TFDS dataset (shards, manifests, dataset_info.json): a local path '
    'or gs://bucket/path. For tfds.load(NAME, data_dir=D), use D/NAME/VERSION.',
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
  flags.DEFINE_integer(
    'num_tasks',
    defaults.num_tasks,
    'Hosts sharing this conversion: run the same command on each, with the same --output '
    '(e.g. a gs:// bucket) and its own --task. Each converts the shards whose index modulo '
    'num_tasks is its task (which videos go to which shard does not change); the run that finds '
    'every shard of a split done writes its CSVs, manifest and the TFDS metadata. Shards done '
    'by any task are reused by any later run, whatever its --num_tasks.',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'task', defaults.task, "This host's task, in 0..num_tasks-1 (see --num_tasks).", flag_values=fv
  )
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
      task=fv.task,
      num_tasks=fv.num_tasks,
    )
  except ValueError as e:
    raise UsageError(f'--{e}') from None


def check_locations(fv: flags.FlagValues, names: Sequence[str]) -> None:
  """Raises `storage.UnsupportedLocationError` (a ValueError) for a flag among `names` whose
  value has a scheme other than gs:// (e.g. --output=s3://...)."""
  for name in names:
    if fv[name].value:
      storage.check(fv[name].value, f'--{name}')


def define_layout_flags(
  fv: flags.FlagValues,
  example_root: str,
  annotations: str,
  splits: Sequence[str],
  videos_help: Callable[[str], str],
) -> list[str]:
  """--root, --annotations, --splits and --videos_{split} of a dataset in its official layout
  (what `find_annotation` and `chosen_splits` read); returns the names of those that are
  locations."""
  flags.DEFINE_string(
    'root', None, f'Dataset root, e.g. {example_root}.', flag_values=fv, required=True
  )
  flags.DEFINE_string(
    'annotations',
    '',
    f'Directory of {annotations} (default {{root}}/annotations, else {{root}}).',
    flag_values=fv,
  )
  flags.DEFINE_list(
    'splits', ['train', 'val'], f'Splits to convert, among {tuple(splits)}.', flag_values=fv
  )
  for split in splits:
    flags.DEFINE_string(f'videos_{split}', '', videos_help(split), flag_values=fv)
  return ['root', 'annotations', *(f'videos_{split}' for split in splits)]


def chosen_splits(fv: flags.FlagValues, allowed: Sequence[str]) -> list[str]:
  """--splits, each one of `allowed` (UsageError naming the flag otherwise)."""
  splits = list(fv.splits)
  if not splits or any(s not in allowed for s in splits):
    raise UsageError(f'--splits={",".join(splits)}: each split must be one of {tuple(allowed)}')
  return splits


def find_first(candidates: Sequence[str], what: str, isdir: bool = False) -> str:
  """The first of `candidates` that is a directory (`isdir`) or a file, local or gs://;
  FileNotFoundError naming `what` and where it looked."""
  for path in candidates:
    if (storage.isdir if isdir else storage.isfile)(path):
      return path
  raise FileNotFoundError(f'{what} not found; looked at {list(candidates)}')


def find_annotation(fv: flags.FlagValues, name: str) -> str:
  """The annotation file `name` in --annotations, else {--root}/annotations, else --root."""
  folders = [fv.annotations, storage.join(fv.root, 'annotations'), fv.root]
  return find_first([storage.join(d, name) for d in folders if d], name)


Plan = Callable[[], tuple[Mapping[str, Sequence[convert.Entry]], Sequence[str]]]


def run_conversion(
  fv: flags.FlagValues,
  prog: str,
  argv: Sequence[str] | None,
  doc: str,
  default_name: str,
  plan: Plan,
  locations: Sequence[str] = (),
) -> int:
  """Runs a converting front-end (flags of `define_conversion_flags`): checks --output and the
  flags named in `locations`, the options, then converts `plan()`'s splits (split -> entries)
  with its label map. Returns the exit status (`convert.report`)."""

  def main(positional: list[str]) -> int:
    no_arguments(positional)
    check_locations(fv, ['output', *locations])
    options = conversion_options(fv)
    jobs, label_map = plan()
    name = fv.name or dataset_writer.default_dataset_name(fv.output, default_name)
    return convert.report(convert.convert_splits(jobs, fv.output, label_map, options, name))

  return run(main, fv, prog, argv, doc)


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
