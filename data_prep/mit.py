"""Moments in Time v1 -> a TFDS dataset directory (splits train, val).

  python -m data_prep.mit --root=data/mit --output=data/mit/tfrecords \
      [--splits=train,val]

Annotations (from `--annotations`, default `{root}/annotations`, else `{root}`):
`moments_categories.txt` (lines `name,index`), `trainingSet.csv` and `validationSet.csv` (rows
`class/file.mp4,class,...`). Videos: `--videos_{split}`, default `{root}/videos/training` and
`{root}/videos/validation` (MMAction2's layout), else `{root}/training`, `{root}/validation` (the
released archive). As in MMAction2, a video's class is the folder of its path. Every location
(--root, --annotations, --videos_*, --output) is a local path or a gs:// URL.
"""

from __future__ import annotations

import csv
import io
import posixpath
import sys
from typing import Sequence

from absl import flags

from cost_jax import storage
from data_prep import cli, convert

SPLITS = {'train': ('trainingSet.csv', 'training'), 'val': ('validationSet.csv', 'validation')}
CATEGORIES = 'moments_categories.txt'
DEFAULT_NAME = 'moments_in_time'


def read_categories(path: str) -> list[str]:
  """Class names ordered by their index; errors name the file, line and value."""
  by_index = {}
  for number, line in enumerate(storage.read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    name, _, index = line.strip().rpartition(',')
    if not name or not index.strip().isdigit():
      raise ValueError(f"{path}:{number}: expected 'name,index', got {line.strip()!r}")
    if int(index) in by_index:
      raise ValueError(f'{path}:{number}: index {index} is used twice')
    by_index[int(index)] = name
  if sorted(by_index) != list(range(len(by_index))):
    raise ValueError(f'{path}: class indices must be 0..{len(by_index) - 1} without gaps')
  return [by_index[i] for i in range(len(by_index))]


def split_entries(csv_path: str, video_dir: str, label_map: Sequence[str]) -> list[convert.Entry]:
  """One entry per csv row; the class is the folder of the row's path (else its 2nd column)."""
  class_index = {name: i for i, name in enumerate(label_map)}
  entries = []
  rows = csv.reader(io.StringIO(storage.read_text(csv_path), newline=''))
  for number, row in enumerate(rows, 1):
    if not row or not row[0].strip():
      continue
    relative = row[0].strip()
    name = posixpath.dirname(relative)
    if name not in class_index and len(row) > 1:
      name = row[1].strip()
    if name not in class_index:
      raise ValueError(
        f'{csv_path}:{number}: class {name!r} of {relative!r} is not in {CATEGORIES}'
      )
    entries.append(convert.Entry(storage.join(video_dir, relative), class_index[name], relative))
  return entries


def _define_flags() -> tuple[flags.FlagValues, list[str]]:
  fv = flags.FlagValues()
  locations = cli.define_layout_flags(
    fv, 'data/mit', 'the csv/txt annotations', list(SPLITS), lambda split: f'Videos of {split}.'
  )
  cli.define_conversion_flags(fv, DEFAULT_NAME)
  return fv, locations


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line `argv` (without the program name); returns the exit status."""
  fv, locations = _define_flags()

  def plan() -> tuple[dict[str, list[convert.Entry]], list[str]]:
    splits = cli.chosen_splits(fv, list(SPLITS))
    label_map = read_categories(cli.find_annotation(fv, CATEGORIES))
    jobs = {}
    for split in splits:
      csv_name, folder = SPLITS[split]
      given = fv[f'videos_{split}'].value
      video_dir = cli.find_first(
        [given]
        if given
        else [storage.join(fv.root, 'videos', folder), storage.join(fv.root, folder)],
        f'video directory of split {split!r}',
        isdir=True,
      )
      jobs[split] = split_entries(cli.find_annotation(fv, csv_name), video_dir, label_map)
    return jobs, label_map

  return cli.run_conversion(fv, 'data_prep.mit', argv, __doc__, DEFAULT_NAME, plan, locations)


if __name__ == '__main__':
  sys.exit(main())
