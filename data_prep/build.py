"""MMAction2 video list file -> one split of a TFDS dataset directory.

  python -m data_prep.build --list=train_list.txt --video_root=videos/ --output=out/ \\
      --split=train [--labels=labels.txt] [--image_format=png --short_side=0]

Each list line is `relative/path.mp4 LABEL` (LABEL an int, as MMAction2's `VideoDataset` reads
it). Class names come from `--labels` (one per line, line i = class i); without it they are the
indices as text, `--num_classes` of them (default: the largest label + 1). Convert the other
splits into the same --output with the same class names. The list, --labels, --video_root and
--output are local paths or gs:// URLs; --num_tasks/--task share a split among hosts.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from cost_jax import storage
from cost_jax.data import labels
from data_prep import cli, convert

DEFAULT_NAME = 'videos'


def read_list_file(list_file: str, video_root: str) -> list[convert.Entry]:
  """Parses an MMAction2 list file; errors name the file, line and value. A path of the list
  that is a URL (gs://...) is kept as it is, others are joined to `video_root`."""
  if not storage.isfile(storage.check(list_file, 'list file')):
    raise FileNotFoundError(f'list file {list_file!r} does not exist')
  entries = []
  for number, line in enumerate(storage.read_text(list_file).splitlines(), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2:
      raise ValueError(
        f"{list_file}:{number}: expected 'path label', got {line.strip()!r} "
        '(multi-label lists are not supported)'
      )
    try:
      label = int(fields[1])
    except ValueError:
      raise ValueError(f'{list_file}:{number}: label {fields[1]!r} is not an integer') from None
    path = fields[0] if storage.scheme(fields[0]) else storage.join(video_root, fields[0])
    entries.append(convert.Entry(path, label, fields[0]))
  return entries


def index_label_map(entries: Sequence[convert.Entry], num_classes: int = 0) -> list[str]:
  """Class names "0", "1", ... for lists without a label file (default: largest label + 1).

  Entries whose label is outside the map are listed as skipped by the conversion.
  """
  count = num_classes or max((e.label for e in entries), default=-1) + 1
  return [str(i) for i in range(count)]


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string(
    'list', None, "MMAction2 list file: 'path label' lines.", flag_values=fv, required=True
  )
  flags.DEFINE_string(
    'video_root', '', "Directory the list's paths are relative to.", flag_values=fv
  )
  flags.DEFINE_string(
    'split',
    None,
    "Split name, e.g. train or val (letters, digits, '_').",
    flag_values=fv,
    required=True,
  )
  flags.DEFINE_string('labels', '', 'Class names, one per line (line i = class i).', flag_values=fv)
  flags.DEFINE_integer(
    'num_classes', 0, 'Without --labels: number of classes (0 = largest label + 1).', flag_values=fv
  )
  cli.define_conversion_flags(fv, DEFAULT_NAME)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line `argv` (without the program name); returns the exit status."""
  fv = _define_flags()

  def plan() -> tuple[dict[str, list[convert.Entry]], list[str]]:
    entries = read_list_file(fv.list, fv.video_root)
    label_map = (
      labels.read_label_names(fv.labels) if fv.labels else index_label_map(entries, fv.num_classes)
    )
    return {fv.split: entries}, label_map

  return cli.run_conversion(
    fv, 'data_prep.build', argv, __doc__, DEFAULT_NAME, plan, ['list', 'video_root', 'labels']
  )


if __name__ == '__main__':
  sys.exit(main())
