"""MMAction2 video list file -> TFRecords for one split.

  python -m data_prep.build --list train_list.txt --video-root videos/ --output out/ \\
      --split train [--labels labels.txt]

Each list line is `relative/path.mp4 LABEL` (LABEL an int, as MMAction2's `VideoDataset` reads
it). Class names come from `--labels` (one per line, line i = class i); without it they are the
indices as text, `--num-classes` of them (default: the largest label + 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from data_prep import convert


def read_list_file(list_file: str, video_root: str) -> list[convert.Entry]:
  """Parses an MMAction2 list file; errors name the file, line and value."""
  entries = []
  with open(list_file, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2:
        raise ValueError(f"{list_file}:{number}: expected 'path label', got {line.strip()!r} "
                         "(multi-label lists are not supported)")
      try:
        label = int(fields[1])
      except ValueError:
        raise ValueError(f"{list_file}:{number}: label {fields[1]!r} is not an integer") from None
      entries.append(convert.Entry(os.path.join(video_root, fields[0]), label, fields[0]))
  return entries


def index_label_map(entries: Sequence[convert.Entry], num_classes: int = 0) -> list[str]:
  """Class names "0", "1", ... for lists without a label file (default: largest label + 1).

  Entries whose label is outside the map are listed as skipped by the conversion.
  """
  count = num_classes or max((e.label for e in entries), default=-1) + 1
  return [str(i) for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data_prep.build", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--list", required=True, help="MMAction2 list file: 'path label' lines")
  parser.add_argument("--video-root", default="", help="directory the list's paths are under")
  parser.add_argument("--split", required=True, help="split name, e.g. train or val")
  parser.add_argument("--labels", default="", help="class names, one per line")
  parser.add_argument("--num-classes", type=int, default=0,
                      help="without --labels: number of classes (0 = largest label + 1)")
  convert.add_flags(parser)
  args = parser.parse_args(argv)
  options = convert.options_from_args(args)

  def make_jobs():
    entries = read_list_file(args.list, args.video_root)
    label_map = (convert.read_label_map(args.labels) if args.labels
                 else index_label_map(entries, args.num_classes))
    return {args.split: entries}, label_map

  return convert.run_cli(make_jobs, args.output, options)


if __name__ == "__main__":
  sys.exit(main())
