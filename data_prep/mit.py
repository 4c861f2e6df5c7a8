"""Moments in Time v1 -> a TFDS dataset directory (splits train, val).

  python -m data_prep.mit --root=data/mit --output=data/tfds/moments_in_time/2.0.0 \
      [--splits=train,val]

Annotations (from `--annotations`, default `{root}/annotations`, else `{root}`):
`moments_categories.txt` (lines `name,index`), `trainingSet.csv` and `validationSet.csv` (rows
`class/file.mp4,class,...`). Videos: `--videos_{split}`, default `{root}/videos/training` and
`{root}/videos/validation` (MMAction2's layout), else `{root}/training`, `{root}/validation` (the
released archive). As in MMAction2, a video's class is the folder of its path.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import Sequence

from absl import flags

from data_prep import cli, convert, dataset_writer

SPLITS = {'train': ('trainingSet.csv', 'training'), 'val': ('validationSet.csv', 'validation')}
CATEGORIES = 'moments_categories.txt'
DEFAULT_NAME = 'moments_in_time'


def read_categories(path: str) -> list[str]:
  """Class names ordered by their index; errors name the file, line and value."""
  by_index = {}
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
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
  with open(csv_path, newline='', encoding='utf-8') as f:
    for number, row in enumerate(csv.reader(f), 1):
      if not row or not row[0].strip():
        continue
      relative = row[0].strip()
      name = os.path.dirname(relative)
      if name not in class_index and len(row) > 1:
        name = row[1].strip()
      if name not in class_index:
        raise ValueError(
          f'{csv_path}:{number}: class {name!r} of {relative!r} is not in {CATEGORIES}'
        )
      entries.append(convert.Entry(os.path.join(video_dir, relative), class_index[name], relative))
  return entries


def _find(candidates: Sequence[str], what: str, isdir: bool = False) -> str:
  for path in candidates:
    if (os.path.isdir if isdir else os.path.isfile)(path):
      return path
  raise FileNotFoundError(f'{what} not found; looked at {list(candidates)}')


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('root', None, 'Dataset root, e.g. data/mit.', flag_values=fv, required=True)
  flags.DEFINE_string(
    'annotations',
    '',
    'Directory of the csv/txt annotations (default {root}/annotations, else {root}).',
    flag_values=fv,
  )
  flags.DEFINE_list(
    'splits', ['train', 'val'], f'Splits to convert, among {tuple(SPLITS)}.', flag_values=fv
  )
  for split in SPLITS:
    flags.DEFINE_string(f'videos_{split}', '', f'Videos of {split}.', flag_values=fv)
  cli.define_conversion_flags(fv, DEFAULT_NAME)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line `argv` (without the program name); returns the exit status."""
  fv = _define_flags()

  def run(positional: list[str]) -> int:
    cli.no_arguments(positional)
    splits = list(fv.splits)
    if not splits or any(s not in SPLITS for s in splits):
      raise cli.UsageError(
        f'--splits={",".join(splits)}: each split must be one of {tuple(SPLITS)}'
      )
    options = cli.conversion_options(fv)
    ann_dirs = [d for d in (fv.annotations, os.path.join(fv.root, 'annotations'), fv.root) if d]
    label_map = read_categories(_find([os.path.join(d, CATEGORIES) for d in ann_dirs], CATEGORIES))
    jobs = {}
    for split in splits:
      csv_name, folder = SPLITS[split]
      csv_path = _find([os.path.join(d, csv_name) for d in ann_dirs], csv_name)
      given = fv[f'videos_{split}'].value
      video_dir = _find(
        [given]
        if given
        else [os.path.join(fv.root, 'videos', folder), os.path.join(fv.root, folder)],
        f'video directory of split {split!r}',
        isdir=True,
      )
      jobs[split] = split_entries(csv_path, video_dir, label_map)
    name = fv.name or dataset_writer.default_dataset_name(fv.output, DEFAULT_NAME)
    return convert.report(convert.convert_splits(jobs, fv.output, label_map, options, name))

  return cli.run(run, fv, 'data_prep.mit', argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
