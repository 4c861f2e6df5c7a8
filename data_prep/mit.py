"""Moments in Time v1 -> TFRecords.

  python -m data_prep.mit --root data/mit --output DIR [--splits train,val]

Annotations (from `--annotations`, default `{root}/annotations`, else `{root}`):
`moments_categories.txt` (lines `name,index`), `trainingSet.csv` and `validationSet.csv` (rows
`class/file.mp4,class,...`). Videos: `--videos-{split}`, default `{root}/videos/training` and
`{root}/videos/validation` (MMAction2's layout), else `{root}/training`, `{root}/validation` (the
released archive). As in MMAction2, a video's class is the folder of its path.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Sequence

from data_prep import convert

SPLITS = {"train": ("trainingSet.csv", "training"), "val": ("validationSet.csv", "validation")}
CATEGORIES = "moments_categories.txt"


def read_categories(path: str) -> list[str]:
  """Class names ordered by their index; errors name the file, line and value."""
  by_index = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      name, _, index = line.strip().rpartition(",")
      if not name or not index.strip().isdigit():
        raise ValueError(f"{path}:{number}: expected 'name,index', got {line.strip()!r}")
      if int(index) in by_index:
        raise ValueError(f"{path}:{number}: index {index} is used twice")
      by_index[int(index)] = name
  if sorted(by_index) != list(range(len(by_index))):
    raise ValueError(f"{path}: class indices must be 0..{len(by_index) - 1} without gaps")
  return [by_index[i] for i in range(len(by_index))]


def split_entries(csv_path: str, video_dir: str,
                  label_map: Sequence[str]) -> list[convert.Entry]:
  """One entry per csv row; the class is the folder of the row's path (else its 2nd column)."""
  class_index = {name: i for i, name in enumerate(label_map)}
  entries = []
  with open(csv_path, newline="", encoding="utf-8") as f:
    for number, row in enumerate(csv.reader(f), 1):
      if not row or not row[0].strip():
        continue
      relative = row[0].strip()
      name = os.path.dirname(relative)
      if name not in class_index and len(row) > 1:
        name = row[1].strip()
      if name not in class_index:
        raise ValueError(f"{csv_path}:{number}: class {name!r} of {relative!r} is not in "
                         f"{CATEGORIES}")
      entries.append(convert.Entry(os.path.join(video_dir, relative), class_index[name],
                                   relative))
  return entries


def _find(candidates: Sequence[str], what: str, isdir: bool = False) -> str:
  for path in candidates:
    if (os.path.isdir if isdir else os.path.isfile)(path):
      return path
  raise FileNotFoundError(f"{what} not found; looked at {list(candidates)}")


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data_prep.mit", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", required=True, help="dataset root, e.g. data/mit")
  parser.add_argument("--annotations", default="", help="directory of the csv/txt annotations")
  parser.add_argument("--splits", default="train,val", help="comma-separated: train,val")
  for split in SPLITS:
    parser.add_argument(f"--videos-{split}", default="", help=f"videos of {split}")
  convert.add_flags(parser)
  args = parser.parse_args(argv)
  options = convert.options_from_args(args)
  splits = [s for s in args.splits.split(",") if s]
  if not splits or any(s not in SPLITS for s in splits):
    parser.error(f"--splits {args.splits!r}: each split must be one of {tuple(SPLITS)}")
  ann_dirs = [d for d in (args.annotations, os.path.join(args.root, "annotations"), args.root)
              if d]

  def make_jobs():
    label_map = read_categories(_find([os.path.join(d, CATEGORIES) for d in ann_dirs],
                                      CATEGORIES))
    jobs = {}
    for split in splits:
      csv_name, folder = SPLITS[split]
      csv_path = _find([os.path.join(d, csv_name) for d in ann_dirs], csv_name)
      video_dir = _find([getattr(args, f"videos_{split}")] if getattr(args, f"videos_{split}")
                        else [os.path.join(args.root, "videos", folder),
                              os.path.join(args.root, folder)],
                        f"video directory of split {split!r}", isdir=True)
      jobs[split] = split_entries(csv_path, video_dir, label_map)
    return jobs, label_map

  return convert.run_cli(make_jobs, args.output, options)


if __name__ == "__main__":
  sys.exit(main())
