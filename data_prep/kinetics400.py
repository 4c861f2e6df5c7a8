"""Kinetics-400 in its official layout -> a TFDS dataset directory (splits train, val[, test]).

  python -m data_prep.kinetics400 --root=data/kinetics400 \
      --output=data/tfds/kinetics400/2.0.0 [--splits=train,val]

Annotations `kinetics_{split}.csv` (columns label, youtube_id, time_start, time_end, split) are
read from `--annotations` (default `{root}/annotations`, else `{root}`). Videos are
`{youtube_id}_{start:06d}_{end:06d}.<ext>` (or `{youtube_id}.<ext>`), flat or in per-class folders,
under `--videos_{split}` (default `{root}/videos_{split}`). Videos not found are listed in
`{split}.skipped.csv` as missing files.

Class indices follow MMAction2 (`tools/data/parse_file_list.py`): the class names of the train
csv with quotes removed, sorted after spaces are replaced by '_'. `label_map.txt` keeps the
names with their spaces.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import Sequence

from absl import flags

from data_prep import cli, convert, dataset_writer

SPLITS = ('train', 'val', 'test')
DEFAULT_NAME = 'kinetics400'
_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end')


def clean_label(name: str) -> str:
  """A class name as in MMAction2's label map: quotes removed, spaces kept."""
  return name.replace('"', '').strip()


def mmaction2_sort_key(name: str) -> str:
  """MMAction2's class key: quotes removed and spaces replaced by underscores."""
  return clean_label(name).replace(' ', '_')


def read_annotations(csv_path: str) -> list[dict[str, str]]:
  """Rows of a Kinetics csv; errors name the file and the missing column or bad row."""
  with open(csv_path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f'{csv_path}: missing column(s) {missing}; header is {reader.fieldnames}')
    rows = list(reader)
  for number, row in enumerate(rows, 2):
    try:
      float(row['time_start']), float(row['time_end'])
    except (TypeError, ValueError):
      raise ValueError(
        f'{csv_path}:{number}: bad time_start/time_end {row["time_start"]!r}/{row["time_end"]!r}'
      ) from None
  return rows


def label_map_from_rows(rows: Sequence[dict[str, str]]) -> list[str]:
  """Class names ordered as MMAction2 numbers them."""
  names = {clean_label(r['label']) for r in rows}
  return sorted(names, key=mmaction2_sort_key)


def video_stem(row: dict[str, str]) -> str:
  return (
    f'{row["youtube_id"]}_{int(float(row["time_start"])):06d}_{int(float(row["time_end"])):06d}'
  )


def index_videos(video_dir: str) -> dict[str, str]:
  """File stem -> path for every file under `video_dir` (flat or per-class folders)."""
  index = {}
  for directory, _, files in sorted(os.walk(video_dir, followlinks=True)):
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      if stem not in index or ext == '.mp4':
        index[stem] = os.path.join(directory, name)
  return index


def split_entries(
  rows: Sequence[dict[str, str]], video_dir: str, label_map: Sequence[str], csv_path: str
) -> list[convert.Entry]:
  """One entry per csv row; a video that is not found gets its expected (missing) path."""
  index = index_videos(video_dir)
  class_index = {name: i for i, name in enumerate(label_map)}
  entries = []
  for number, row in enumerate(rows, 2):
    name = clean_label(row['label'])
    if name not in class_index:
      raise ValueError(f'{csv_path}:{number}: class {name!r} is not in the train classes')
    stem = video_stem(row)
    path = index.get(stem) or index.get(row['youtube_id']) or os.path.join(video_dir, stem + '.mp4')
    entries.append(convert.Entry(path, class_index[name], os.path.relpath(path, video_dir)))
  return entries


def find_annotation(annotations_dir: str, root: str, split: str) -> str:
  name = f'kinetics_{split}.csv'
  for directory in (annotations_dir, os.path.join(root, 'annotations'), root):
    if directory and os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise FileNotFoundError(
    f'{name} not found in {annotations_dir or root + "/annotations"} or {root}'
  )


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string(
    'root', None, 'Dataset root, e.g. data/kinetics400.', flag_values=fv, required=True
  )
  flags.DEFINE_string(
    'annotations',
    '',
    'Directory of kinetics_*.csv (default {root}/annotations, else {root}).',
    flag_values=fv,
  )
  flags.DEFINE_list(
    'splits', ['train', 'val'], f'Splits to convert, among {SPLITS}.', flag_values=fv
  )
  for split in SPLITS:
    flags.DEFINE_string(
      f'videos_{split}', '', f'Videos of {split} (default {{root}}/videos_{split}).', flag_values=fv
    )
  cli.define_conversion_flags(fv, DEFAULT_NAME)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line `argv` (without the program name); returns the exit status."""
  fv = _define_flags()

  def run(positional: list[str]) -> int:
    cli.no_arguments(positional)
    splits = list(fv.splits)
    if not splits or any(s not in SPLITS for s in splits):
      raise cli.UsageError(f'--splits={",".join(splits)}: each split must be one of {SPLITS}')
    options = cli.conversion_options(fv)
    train_csv = find_annotation(fv.annotations, fv.root, 'train')
    label_map = label_map_from_rows(read_annotations(train_csv))
    jobs = {}
    for split in splits:
      csv_path = find_annotation(fv.annotations, fv.root, split)
      video_dir = fv[f'videos_{split}'].value or os.path.join(fv.root, f'videos_{split}')
      if not os.path.isdir(video_dir):
        raise FileNotFoundError(f'video directory {video_dir!r} of split {split!r} not found')
      jobs[split] = split_entries(read_annotations(csv_path), video_dir, label_map, csv_path)
    name = fv.name or dataset_writer.default_dataset_name(fv.output, DEFAULT_NAME)
    return convert.report(convert.convert_splits(jobs, fv.output, label_map, options, name))

  return cli.run(run, fv, 'data_prep.kinetics400', argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
