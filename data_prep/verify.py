"""Checks every shard of a converted dataset and names the damaged ones and their videos.

  python -m data_prep.verify DIR [--splits=train,val] [--decode_frames] [--workers=N]

For each split (default: every `*.manifest.json` in DIR) and each of its shards: the file
exists, has the manifest's size and SHA-256, and every record reads (TFRecord checksums), parses
with the dataset's TFDS features and holds as many frames as it says; the record count is the
manifest's. `--decode_frames` also decodes every frame (slow). Each damaged shard is printed
with its problems and the videos it held (from `{split}.index.csv`), and its `.done` record is
removed (unless `--nomark_for_redo`), so that re-running the same data_prep command rewrites
those shards and only those. DIR is a local path or a gs:// URL (sizes from the objects'
metadata, checksums and records read through the bucket). Exit status: 0 when everything is
intact, 1 when a shard is damaged, 2 for a usage mistake.
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import io
import multiprocessing
import os
import sys
from typing import Any, Mapping, Sequence

from absl import flags

from cost_jax import storage
from cost_jax.data import dataset as dataset_lib
from cost_jax.data import integrity, schema
from data_prep import cli, convert
from data_prep import progress as progress_lib


@functools.lru_cache(maxsize=4)
def _features(data_dir: str) -> Any:
  return dataset_lib.load_builder(data_dir).info.features


def read_records(
  data_dir: str, shard: Mapping[str, Any], num_classes: int, decode_frames: bool = False
) -> tuple[int, list[str]]:
  """(records read, problems) of one shard file, reading and parsing every record."""
  import tensorflow as tf
  from tensorflow_datasets.core import example_parser

  from cost_jax.data import records  # TensorFlow, which `--help` does not need

  video_features = _features(data_dir)
  image_format = schema.image_format_of(video_features)
  # Every feature of the schema must parse; frames stay encoded unless --decode_frames.
  parse = tf.function(
    example_parser.ExampleParser(video_features.get_serialized_info()).parse_example
  )

  path = storage.join(data_dir, shard['file'])
  count, problems = 0, []
  for serialized in records.until_read_error(tf.data.TFRecordDataset(path, buffer_size=1 << 22)):
    if isinstance(serialized, tf.errors.OpError):
      problems.append(f'record {count} cannot be read ({serialized.message.splitlines()[0]})')
      break
    try:
      example = parse(serialized)
      video_id = example[schema.VIDEO_ID].numpy().decode('utf-8', 'replace')
      frames = example[schema.VIDEO].numpy()
      if len(frames) != int(example[schema.NUM_FRAMES]) or not frames.size:
        problems.append(
          f'record {count} ({video_id}) holds {len(frames)} frames but says '
          f'{int(example[schema.NUM_FRAMES])}'
        )
      if not 0 <= int(example[schema.LABEL]) < num_classes:
        problems.append(f'record {count} ({video_id}) has label {int(example[schema.LABEL])}')
      if decode_frames:
        size = (int(example[schema.HEIGHT]), int(example[schema.WIDTH]), 3)
        for i, image in enumerate(frames):
          decoded = (
            tf.io.decode_png(image, channels=3)
            if image_format == 'png'
            else tf.io.decode_jpeg(image, channels=3)
          )
          if tuple(decoded.shape) != size:
            problems.append(
              f'record {count} ({video_id}) frame {i} is {tuple(decoded.shape)}, not {size}'
            )
            break
    except (tf.errors.OpError, ValueError) as e:
      message = e.message if isinstance(e, tf.errors.OpError) else str(e)
      problems.append(f'record {count} does not parse ({message.splitlines()[0]})')
    count += 1
  return count, problems


def verify_shard(
  data_dir: str, shard: Mapping[str, Any], num_classes: int, decode_frames: bool = False
) -> list[str]:
  """Every problem of one shard (empty when intact)."""
  path = storage.join(data_dir, shard['file'])
  try:
    size = storage.size(path)
  except FileNotFoundError:
    return ['the file is missing']
  problems = []
  if size != int(shard['num_bytes']):
    problems.append(f'{size} bytes, the manifest says {shard["num_bytes"]}')
  try:
    digest = integrity.sha256_file(path)
  except OSError as e:
    return problems + [f'cannot be read ({e.strerror or e})']
  if digest != shard['sha256']:
    problems.append("its SHA-256 is not the manifest's")
  count, record_problems = read_records(data_dir, shard, num_classes, decode_frames)
  problems += record_problems
  if count != int(shard['num_examples']):
    problems.append(f'{count} records read, the manifest says {shard["num_examples"]}')
  return problems


def shard_videos(data_dir: str, split: str) -> dict[str, list[str]]:
  """Shard file -> the videos it held (their paths), from `{split}.index.csv`."""
  videos: dict[str, list[str]] = {}
  try:
    text = storage.read_text(schema.index_path(data_dir, split))
  except OSError:
    return videos
  for row in csv.DictReader(io.StringIO(text, newline='')):
    videos.setdefault(row['file'], []).append(row['path'] or row['video_id'])
  return videos


def _verify_in_worker(args: tuple[str, dict[str, Any], int, bool]) -> list[str]:
  return verify_shard(*args)


def verify_split(
  data_dir: str,
  split: str,
  workers: int = 1,
  decode_frames: bool = False,
  show_progress: bool = True,
) -> dict[str, Any]:
  """{'split', 'num_shards', 'damaged': [{'file', 'problems', 'videos'}], 'problems': [...]}.

  `problems` lists split-level problems (manifest, TFDS metadata) that stop the shard checks.
  """
  result: dict[str, Any] = {'split': split, 'num_shards': 0, 'damaged': [], 'problems': []}
  try:
    manifest = schema.read_manifest(data_dir, split)
    builder = dataset_lib.load_builder(data_dir)
    if split not in builder.info.splits:
      raise schema.DatasetError(f'dataset_info.json has no split {split!r}')
  except (OSError, schema.DatasetError) as e:
    result['problems'].append(str(e))
    return result
  shards = manifest['shards']
  result['num_shards'] = len(shards)
  jobs = [(data_dir, dict(s), int(manifest['num_classes']), decode_frames) for s in shards]
  with progress_lib.Progress(
    len(jobs), desc=f'verify {split}', unit='shards', enabled=show_progress
  ) as progress:
    if workers <= 1:
      outcomes = []
      for job in jobs:
        outcomes.append(verify_shard(*job))
        progress.update()
    else:
      ctx = multiprocessing.get_context('spawn')
      with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=convert.exit_with_parent
      ) as pool:
        outcomes = []
        for outcome in pool.map(_verify_in_worker, jobs):
          outcomes.append(outcome)
          progress.update()
  videos = shard_videos(data_dir, split)
  for shard, problems in zip(shards, outcomes):
    if problems:
      result['damaged'].append(
        {'file': shard['file'], 'problems': problems, 'videos': videos.get(shard['file'], [])}
      )
  return result


def mark_for_redo(data_dir: str, shard_file: str) -> bool:
  """Removes a shard's `.done` record so the next data_prep run rewrites it; True if removed."""
  path = convert.done_record_path(data_dir, shard_file)
  if not storage.exists(path):
    return False
  storage.remove(path)
  return True


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_list(
    'splits', [], 'Splits to check (default: every manifest in DIR).', flag_values=fv
  )
  flags.DEFINE_boolean('decode_frames', False, 'Also decode every frame (slow).', flag_values=fv)
  flags.DEFINE_boolean(
    'mark_for_redo',
    True,
    'Remove the .done record of each damaged shard, so that re-running data_prep rewrites it.',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'workers', 1, 'Processes checking shards in parallel (0 = all cores).', flag_values=fv
  )
  flags.DEFINE_boolean('progress', True, 'Show progress on stderr.', flag_values=fv)
  return fv


def _run(fv: flags.FlagValues, positional: list[str]) -> int:
  if len(positional) != 1:
    raise cli.UsageError(f'expected one dataset directory, got {positional or "none"}')
  data_dir = storage.check(positional[0], 'dataset directory')
  if not storage.isdir(data_dir):
    raise cli.UsageError(f'{data_dir!r} is not a directory')
  splits = list(fv.splits) or [
    storage.basename(p)[: -len('.manifest.json')] for p in storage.glob(data_dir, '*.manifest.json')
  ]
  if not splits:
    raise cli.UsageError(f'{data_dir} holds no *.manifest.json: not a data_prep output')
  workers = fv.workers or os.cpu_count() or 1
  damaged_total = 0
  for split in splits:
    result = verify_split(data_dir, split, workers, fv.decode_frames, fv.progress)
    for problem in result['problems']:
      print(f'{split}: {problem}')
    for shard in result['damaged']:
      redo = (
        ' (marked for redo)' if fv.mark_for_redo and mark_for_redo(data_dir, shard['file']) else ''
      )
      print(f'{split}: DAMAGED {shard["file"]}{redo}: {"; ".join(shard["problems"])}')
      print(f'  {len(shard["videos"])} video(s): {", ".join(shard["videos"])}')
    damaged_total += len(result['damaged']) + len(result['problems'])
    state = (
      'intact'
      if not result['damaged'] and not result['problems']
      else (f'{len(result["damaged"])} damaged')
    )
    print(f'{split}: {result["num_shards"]} shard(s) checked, {state}')
  if damaged_total:
    print(
      're-run the same data_prep command to rewrite the damaged shards (only those)',
      file=sys.stderr,
    )
    return 1
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Runs `python -m data_prep.verify DIR [flags]` (argv without the program name)."""
  fv = _define_flags()
  return cli.run(lambda positional: _run(fv, positional), fv, 'data_prep.verify', argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
