"""Kinetics-400 in its official layout -> a TFDS dataset directory (splits train, val[, test]).

  python -m data_prep.kinetics400 --root=data/kinetics400 \
      --output=data/kinetics400/tfrecords [--splits=train,val]

Annotations `kinetics_{split}.csv` (columns label, youtube_id, time_start, time_end, split) are
read from `--annotations` (default `{root}/annotations`, else `{root}`). Videos are
`{youtube_id}_{start:06d}_{end:06d}.<ext>` (or `{youtube_id}.<ext>`), flat or in per-class folders,
under `--videos_{split}` (default `{root}/videos_{split}`). Videos not found are listed in
`{split}.skipped.csv` as missing files. Every location (--root, --annotations, --videos_*,
--output) is a local path or a gs:// URL.

Class indices follow MMAction2 (`tools/data/parse_file_list.py`): the class names of the train
csv with quotes removed, sorted after spaces are replaced by '_'. `label_map.txt` keeps the
names with their spaces.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import Sequence

from absl import flags

from cost_jax import storage
from data_prep import cli, convert

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
  reader = csv.DictReader(io.StringIO(storage.read_text(csv_path), newline=''))
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


def files_under(directory: str) -> list[str]:
  """Every file under `directory` (flat or in class folders, any depth), as sorted '/'-joined
  paths relative to it. On a local disk, linked folders are followed."""
  if storage.is_remote(directory):
    return storage.walk_files(directory)  # one listing per folder
  found = []
  for name in storage.listdir(directory):
    path = storage.join(directory, name)
    if storage.isdir(path):
      found += [f'{name}/{rel}' for rel in files_under(path)]
    else:
      found.append(name)
  return found


def index_videos(video_dir: str) -> dict[str, str]:
  """File stem -> path for every file under `video_dir` (flat or per-class folders)."""
  index = {}
  for rel in files_under(video_dir):
    stem, ext = os.path.splitext(rel.rpartition('/')[2])
    if stem not in index or ext == '.mp4':
      index[stem] = storage.join(video_dir, rel)
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
    path = index.get(stem) or index.get(row['youtube_id']) or storage.join(video_dir, f'{stem}.mp4')
    entries.append(convert.Entry(path, class_index[name], storage.relpath(path, video_dir)))
  return entries


def _define_flags() -> tuple[flags.FlagValues, list[str]]:
  fv = flags.FlagValues()
  locations = cli.define_layout_flags(
    fv,
    'data/kinetics400',
    'kinetics_*.csv',
    SPLITS,
    lambda split: f'Videos of {split} (default {{root}}/videos_{split}).',
  )
  cli.define_conversion_flags(fv, DEFAULT_NAME)
  return fv, locations


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line `argv` (without the program name); returns the exit status."""
  fv, locations = _define_flags()

  def plan() -> tuple[dict[str, list[convert.Entry]], list[str]]:
    splits = cli.chosen_splits(fv, SPLITS)
    label_map = label_map_from_rows(read_annotations(cli.find_annotation(fv, 'kinetics_train.csv')))
    jobs = {}
    for split in splits:
      csv_path = cli.find_annotation(fv, f'kinetics_{split}.csv')
      video_dir = fv[f'videos_{split}'].value or storage.join(fv.root, f'videos_{split}')
      if not storage.isdir(video_dir):
        raise FileNotFoundError(f'video directory {video_dir!r} of split {split!r} not found')
      jobs[split] = split_entries(read_annotations(csv_path), video_dir, label_map, csv_path)
    return jobs, label_map

  return cli.run_conversion(
    fv, 'data_prep.kinetics400', argv, __doc__, DEFAULT_NAME, plan, locations
  )


if __name__ == '__main__':
  sys.exit(main())
