"""The shared core of data_prep: a list of videos -> one split of a TFDS dataset directory.

Importable API (used by the source front-ends, the synthetic demo and benchmarks)::

  from data_prep import convert
  summary = convert.convert_split(
      entries=[convert.Entry("/data/a.mp4", 3, "a.mp4"), ("gs://bucket/b.mp4", 0)],
      output_dir="gs://bucket/tfds/videos/2.0.0", split="train",
      label_map=["cls0", "cls1", "cls2", "cls3"],
      options=convert.ConvertOptions(short_side=320, workers=8))

Paths (the output directory, the videos) are local or `gs://` URLs (`cost_jax.storage`; other
schemes are refused before anything is written). It writes, under `output_dir` (file names and
format from `cost_jax.data.schema`):

* `{split}-{i:05d}-of-{n:05d}.tfrecord`: one `tf.train.Example` per video. Videos go to shards in
  a random order drawn from `options.shuffle_seed` (then round-robin, so shard sizes differ by at
  most one): however the input is sorted, every shard holds a random mix of classes;
* `dataset_info.json`, `features.json`, `label.labels.txt`: TFDS's metadata for every split in
  the directory, so that `tfds.builder_from_directory(output_dir)` loads it;
* `{split}.manifest.json` (`schema.MANIFEST_KEYS`: options, and per shard its size and SHA-256),
  `{split}.skipped.csv` (path, reason, kept: videos left out, and every truncated video),
  `{split}.index.csv` (where each converted video is), `label_map.txt`;
* `.done/{shard}.json`: a record per finished shard, written after the shard. Re-running the
  same call keeps shards whose record matches their inputs, options and size, and redoes the
  others, so an interrupted run resumes without duplicating anything. A shard appears whole: on
  a local disk it is written to a temporary file then renamed; on a bucket it is written to its
  own object name, which exists only once its upload completes at close.

Several hosts can share one split (`options.num_tasks`, `options.task`): each converts the
shards whose index % num_tasks == task (the videos of each shard do not depend on the tasks);
the run that finds every shard of the split done writes the split's CSVs, manifest and TFDS
metadata. Conversions of other splits into the same directory may run at the same time: the
metadata is settled without a lock (`dataset_writer.settle_tfds_metadata`).

`convert_splits({"train": ..., "val": ...}, output_dir, label_map, options)` does several splits
with one pool of workers. Bad videos never stop the run: each one is listed in skipped.csv with
its reason.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import queue as queue_lib
import re
import struct
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence, TextIO

import numpy as np

from cost_jax import storage
from cost_jax.data import labels, schema, video_decode
from data_prep import dataset_writer, encode_video
from data_prep import progress as progress_lib

DONE_DIR = '.done'
TRUNCATED_POLICIES = ('drop', 'keep')


class Entry(NamedTuple):
  """One video to convert. `name` is stored as its `video_id` (default: the path's basename)."""

  path: str
  label: int
  name: str = ''


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
  """How videos are converted. Fields that change the output are recorded in the manifest."""

  short_side: int = 320  # stored frames' short side in px; 0 keeps the decoded size
  image_format: str = 'jpeg'  # "jpeg", or "png" (lossless)
  jpeg_quality: int = 90
  truncated: str = 'drop'  # videos with missing frames: "drop" (as the official loader) or
  # "keep" (their decodable frames); listed in skipped.csv either way
  shuffle_seed: int = 0  # seed of the order in which videos are dealt to shards
  num_shards: int = 0  # 0: default_num_shards(len(entries))
  workers: int = 0  # parallel processes (one shard per task); 0: os.cpu_count()
  min_side: int = video_decode.MIN_SIDE
  max_side: int = video_decode.MAX_SIDE
  progress: bool = True  # a bar on a terminal, else a log line every minute (stderr)
  # Hosts sharing the conversion of one split: this run converts the shards whose index %
  # num_tasks == task. Not part of the output: any task reuses shards done by any other.
  task: int = 0
  num_tasks: int = 1

  def __post_init__(self):
    checks = {
      'short_side': (self.short_side >= 0, '>= 0'),
      'image_format': (self.image_format in schema.IMAGE_FORMATS, f'one of {schema.IMAGE_FORMATS}'),
      'jpeg_quality': (1 <= self.jpeg_quality <= 100, 'in 1..100'),
      'truncated': (self.truncated in TRUNCATED_POLICIES, f'one of {TRUNCATED_POLICIES}'),
      'num_shards': (self.num_shards >= 0, '>= 0'),
      'workers': (self.workers >= 0, '>= 0'),
      'min_side': (1 <= self.min_side <= self.max_side, 'in 1..max_side'),
      'num_tasks': (self.num_tasks >= 1, '>= 1'),
      'task': (0 <= self.task < self.num_tasks, f'in 0..{self.num_tasks - 1} (num_tasks - 1)'),
    }
    for key, (ok, allowed) in checks.items():
      if not ok:
        raise ValueError(f'{key}={getattr(self, key)!r} is invalid: must be {allowed}')

  def output_options(self) -> dict[str, Any]:
    """The options that change what is written (kept in the manifest and shard records)."""
    return {
      'short_side': self.short_side,
      'image_format': self.image_format,
      'jpeg_quality': self.jpeg_quality,
      'truncated': self.truncated,
      'shuffle_seed': self.shuffle_seed,
      'min_side': self.min_side,
      'max_side': self.max_side,
    }

  def owns(self, shard_index: int) -> bool:
    """Whether this task converts shard `shard_index`."""
    return shard_index % self.num_tasks == self.task


def default_num_shards(num_videos: int) -> int:
  """About 8 videos per shard, at most 1024 shards: many more shards than hosts."""
  return max(1, min(1024, num_videos // 8))


def shuffled_order(num_entries: int, seed: int) -> list[int]:
  """The order in which entries are dealt to shards: a permutation drawn from `seed`."""
  return np.random.default_rng(seed).permutation(num_entries).tolist()


def shard_entries(
  entries: Sequence[Entry], num_shards: int, seed: int | None = 0
) -> list[list[tuple[int, Entry]]]:
  """(input position, entry) per shard: the entries in `shuffled_order(seed)` (input order when
  `seed` is None), dealt round-robin, so shard sizes differ by at most one."""
  order = list(range(len(entries))) if seed is None else shuffled_order(len(entries), seed)
  return [[(k, entries[k]) for k in order[i::num_shards]] for i in range(num_shards)]


def write_label_map(output_dir: str, label_map: Sequence[str]) -> str:
  """Writes `label_map.txt`, or checks that the one already there is the same."""
  labels.check_label_names(label_map, 'label map')
  path = schema.label_map_path(output_dir)
  if storage.exists(path):
    existing = labels.read_label_names(path)
    if existing != list(label_map):
      diff = next(
        (i for i, (a, b) in enumerate(zip(existing, label_map)) if a != b),
        min(len(existing), len(label_map)),
      )
      raise ValueError(
        f'{path} already holds a different label map ({len(existing)} classes, '
        f'{len(label_map)} given; first difference at class {diff}): use another output '
        'directory, or delete it and every split converted with it'
      )
    return path
  storage.write_text(path, ''.join(f'{name}\n' for name in label_map))
  return path


@dataclasses.dataclass(frozen=True)
class _ShardTask:
  output_dir: str
  split: str
  index: int
  num_shards: int
  entries: tuple[tuple[int, Entry], ...]  # (position in the input list, entry)
  label_map: tuple[str, ...]
  options: ConvertOptions

  @property
  def file(self) -> str:
    return schema.shard_name(self.split, self.index, self.num_shards)

  @property
  def path(self) -> str:
    return storage.join(self.output_dir, self.file)

  @property
  def record_path(self) -> str:
    return done_record_path(self.output_dir, self.file)

  def fingerprint(self) -> str:
    blob = json.dumps(
      [
        schema.SCHEMA_VERSION,
        self.file,
        [[k, *entry] for k, entry in self.entries],
        schema.label_map_sha256(self.label_map),
        self.options.output_options(),
      ]
    )
    return hashlib.sha256(blob.encode('utf-8')).hexdigest()


def done_record_path(output_dir: str, shard_file: str) -> str:
  """Where the `.done` record of a finished shard is (delete it to have the shard redone)."""
  return storage.join(output_dir, DONE_DIR, f'{shard_file}.json')


def _finished_record(task: _ShardTask) -> dict[str, Any] | None:
  """The shard's `.done` record if the shard is complete and matches the task, else None."""
  try:
    record = storage.read_json(task.record_path)
    size = storage.size(task.path)
  except (OSError, ValueError):
    return None
  if record.get('fingerprint') != task.fingerprint() or record.get('num_bytes') != size:
    return None
  return record


# Records read at once from a bucket (each read and size is a round trip).
_REMOTE_READS = 32


def _finished_records(tasks: Sequence[_ShardTask]) -> dict[str, dict[str, Any] | None]:
  """Shard file -> `_finished_record` of each task."""
  if tasks and storage.is_remote(tasks[0].output_dir):
    with concurrent.futures.ThreadPoolExecutor(_REMOTE_READS) as pool:
      found = list(pool.map(_finished_record, tasks))
  else:
    found = [_finished_record(t) for t in tasks]
  return {t.file: record for t, record in zip(tasks, found)}


def _encode_one(
  entry: Entry, label_map: Sequence[str], options: ConvertOptions
) -> encode_video.EncodedVideo:
  if not 0 <= entry.label < len(label_map):
    raise video_decode.BadVideoError(
      f'label {entry.label} is not in the label map (0..{len(label_map) - 1})'
    )
  return encode_video.encode_video(
    entry.path,
    options.short_side,
    options.image_format,
    options.jpeg_quality,
    options.min_side,
    options.max_side,
  )


def _masked_crc32c(data: bytes) -> bytes:
  """TFRecord's checksum of `data`: CRC32C, rotated and offset, little-endian."""
  import google_crc32c  # pylint: disable=g-import-not-at-top  (google-cloud-storage needs it)

  crc = google_crc32c.value(data)
  return struct.pack('<I', (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class HashingRecordWriter:
  """`tf.io.TFRecordWriter` that also takes the SHA-256 and size of the bytes it writes, from
  TFRecord's framing (length, its masked CRC32C, data, the data's masked CRC32C), so that a
  shard's checksum needs no second read (a download, on a bucket)."""

  def __init__(self, path: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy; workers only)

    self._writer = tf.io.TFRecordWriter(path)
    self._digest = hashlib.sha256()
    self.num_bytes = 0

  def write(self, record: bytes) -> None:
    self._writer.write(record)
    length = struct.pack('<Q', len(record))
    for part in (length, _masked_crc32c(length), record, _masked_crc32c(record)):
      self._digest.update(part)
    self.num_bytes += len(record) + 16

  def sha256(self) -> str:
    return self._digest.hexdigest()

  def __enter__(self) -> 'HashingRecordWriter':
    return self

  def __exit__(self, *exc) -> None:
    self._writer.close()


def _convert_shard(task: _ShardTask, progress: Callable[[int], Any]) -> dict[str, Any]:
  """Writes one shard whole (see the module's docstring), then its `.done` record; returns
  that record."""
  serializer = dataset_writer.ExampleSerializer(task.label_map, task.options.image_format)
  remote = storage.is_remote(task.path)
  target = task.path if remote else f'{task.path}.tmp-{os.getpid()}'
  problems, videos = [], []  # problems: [input position, path, reason, kept]
  with HashingRecordWriter(target) as writer:
    for list_index, entry in task.entries:
      try:
        video = _encode_one(entry, task.label_map, task.options)
      except video_decode.BadVideoError as e:
        problems.append([list_index, entry.path, str(e), False])
      except Exception as e:  # pylint: disable=broad-except  (bad input never stops the run)
        problems.append([list_index, entry.path, f'error: {type(e).__name__}: {e}', False])
      else:
        keep = not video.problem or task.options.truncated == 'keep'
        if video.problem:
          action = 'kept' if keep else 'dropped (--truncated=drop)'
          problems.append([list_index, entry.path, f'{video.problem}; {action}', keep])
        if keep:
          name = entry.name or storage.basename(entry.path)
          writer.write(
            serializer.serialize(
              video.frames,
              label=entry.label,
              video_id=name,
              fps=video.fps,
              height=video.height,
              width=video.width,
              original_height=video.original_height,
              original_width=video.original_width,
            )
          )
          videos.append([len(videos), name, entry.label, video.num_frames, entry.path])
      progress(1)
  if not remote:
    storage.move(target, task.path)
  size = storage.size(task.path)
  if size != writer.num_bytes:
    raise RuntimeError(f'{task.path}: {size} bytes written, {writer.num_bytes} expected')
  record = {
    'file': task.file,
    'num_examples': len(videos),
    'num_truncated': sum(1 for p in problems if p[2].startswith('truncated')),
    'skipped': problems,
    'videos': videos,
    'num_bytes': size,
    'sha256': writer.sha256(),
    'fingerprint': task.fingerprint(),
  }
  storage.write_json(task.record_path, record)
  return record


_WORKER_QUEUE = None


def exit_with_parent() -> None:
  """Makes a pool worker exit when its parent dies (pool initializer; pools do not do that)."""
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True).start()


def _init_worker(progress_queue) -> None:
  global _WORKER_QUEUE
  _WORKER_QUEUE = progress_queue
  exit_with_parent()


def _convert_shard_in_worker(task: _ShardTask) -> dict[str, Any]:
  return _convert_shard(task, _WORKER_QUEUE.put)


def _run_parallel(
  tasks: list[_ShardTask], workers: int, progress: progress_lib.Progress
) -> list[dict[str, Any]]:
  """Runs shard tasks in `workers` spawned processes, feeding per-video progress."""
  ctx = multiprocessing.get_context('spawn')  # no fork of a process that may hold TF threads
  progress_queue = ctx.Queue()

  def drain():
    while True:
      try:
        progress.update(progress_queue.get_nowait())
      except queue_lib.Empty:
        return

  records = []
  with concurrent.futures.ProcessPoolExecutor(
    workers, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue,)
  ) as pool:
    pending = {pool.submit(_convert_shard_in_worker, t) for t in tasks}
    while pending:
      done, pending = concurrent.futures.wait(
        pending, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED
      )
      drain()
      try:
        records.extend(f.result() for f in done)
      except concurrent.futures.BrokenExecutor as e:
        raise RuntimeError(
          'a worker process died (a crash inside the decoder, or out of memory?); finished '
          'shards are kept: re-run the same command to resume, with --workers=1 to see which '
          'video it was'
        ) from e
  drain()
  return records


def _remove_stale_files(
  output_dir: str, split: str, keep: set[str], own: set[str], others_too: bool
) -> None:
  """Deletes the temporaries that killed runs left of the shards `own` (and of their records).
  With `others_too` (a run that owns the whole split), also every other temporary of the split
  and its shards with another shard count (not in `keep`), with their records; a task never
  touches another task's files."""
  shard = rf'{re.escape(split)}-\d{{5}}-of-\d{{5}}\.{schema.FILE_FORMAT}'
  done_dir = storage.join(output_dir, DONE_DIR)
  for directory, suffix in ((output_dir, ''), (done_dir, r'\.json')):
    # `name.tmp-PID` of a shard being written; `.name.tmp-XXXX` of a record being published.
    pattern = re.compile(rf'^(\.?)({shard}){suffix}(\.tmp-\w+)?$')
    for name in storage.listdir(directory):
      match = pattern.match(name)
      if not match or (match.group(1) and not match.group(3)):
        continue
      file, temporary = match.group(2), bool(match.group(3))
      if (temporary and file in own) or (others_too and (temporary or file not in keep)):
        storage.remove(storage.join(directory, name))


def _check_other_splits(
  output_dir: str, splits: Iterable[str], options: ConvertOptions, name: str
) -> None:
  """The directory's other splits must share the dataset name and image format (TFDS has one
  feature definition per dataset)."""
  for manifest in dataset_writer.current_manifests(output_dir):
    if manifest['split'] in splits:
      continue
    theirs = manifest['options']['image_format']
    if theirs != options.image_format:
      raise ValueError(
        f'{output_dir} holds split {manifest["split"]!r} with frames stored as '
        f'{theirs}; use --image_format={theirs} or another output directory'
      )
    if manifest['name'] != name:
      raise ValueError(
        f'{output_dir} holds split {manifest["split"]!r} of dataset '
        f'{manifest["name"]!r}; use --name={manifest["name"]} or another '
        'output directory'
      )


EntryLike = Entry | tuple[str, int] | tuple[str, int, str]


def convert_split(
  entries: Iterable[EntryLike],
  output_dir: str,
  split: str,
  label_map: Sequence[str],
  options: ConvertOptions = ConvertOptions(),
  name: str = '',
) -> dict[str, Any]:
  """Converts `entries` (path, label index[, name]) to TFRecord shards of `split`; resumable.

  Returns a summary: split, name, data_dir, complete, num_videos, num_shards, shards_reused,
  seconds, manifest, skipped_csv and, when `complete`, num_examples, num_skipped (videos left
  out), num_truncated (dropped or kept in part). A summary is not complete when this run is one
  of several tasks (`options.num_tasks`) and other tasks' shards are not done yet: it then has
  task, num_tasks, task_shards (the shards of this task) and shards_done (of the split), and
  manifest and skipped_csv are None.

  Raises ValueError for a bad split name, label map, options or output location; bad videos
  are only listed. `name` is the TFDS dataset name (default:
  `dataset_writer.default_dataset_name` with fallback "videos"). With `options.workers` > 1, a
  calling script needs the `if __name__ == "__main__":` guard (workers are spawned, not forked).
  """
  return convert_splits({split: entries}, output_dir, label_map, options, name)[0]


def convert_splits(
  splits: Mapping[str, Iterable[EntryLike]],
  output_dir: str,
  label_map: Sequence[str],
  options: ConvertOptions = ConvertOptions(),
  name: str = '',
) -> list[dict[str, Any]]:
  """`convert_split` for several splits sharing one label map and one pool of workers.

  After its own shards, the run reads the `.done` records of every shard of each split: when
  all are finished it writes the split's CSVs and manifest, then TFDS's metadata. Each task
  records its shards before it reads the others' records, so of several tasks finishing at
  once, the one that reads last sees every shard done (both may: they write the same files).
  """
  start = time.time()
  storage.check(output_dir, 'output directory')
  label_map = tuple(label_map)
  for split in splits:
    if not re.fullmatch(schema.SPLIT_NAME_PATTERN, split):
      raise ValueError(f"split name {split!r} must be letters, digits or '_'")
  name = dataset_writer.check_dataset_name(
    name or dataset_writer.default_dataset_name(output_dir, 'videos')
  )
  storage.makedirs(storage.join(output_dir, DONE_DIR))
  write_label_map(output_dir, label_map)
  _check_other_splits(output_dir, splits, options, name)
  all_entries, tasks = {}, {}
  for split, entries in splits.items():
    all_entries[split] = [Entry(*e) for e in entries]
    num_shards = options.num_shards or default_num_shards(len(all_entries[split]))
    tasks[split] = [
      _ShardTask(output_dir, split, i, num_shards, tuple(shard), label_map, options)
      for i, shard in enumerate(shard_entries(all_entries[split], num_shards, options.shuffle_seed))
    ]
    _remove_stale_files(
      output_dir,
      split,
      {t.file for t in tasks[split]},
      {t.file for t in tasks[split] if options.owns(t.index)},
      options.num_tasks == 1,
    )

  every = [t for ts in tasks.values() for t in ts]
  mine = [t for t in every if options.owns(t.index)]
  records = _finished_records(mine)
  reused = {file for file, record in records.items() if record is not None}
  todo = [t for t in mine if t.file not in reused]
  workers = min(options.workers or os.cpu_count() or 1, max(1, len(todo)))
  total = sum(len(t.entries) for t in mine)
  initial = total - sum(len(t.entries) for t in todo)
  with progress_lib.Progress(
    total, initial, desc=','.join(splits), enabled=options.progress
  ) as progress:
    if workers == 1:
      new_records = [_convert_shard(t, progress.update) for t in todo]
    else:
      new_records = _run_parallel(todo, workers, progress)
  records.update((r['file'], r) for r in new_records)
  converted = {r['file'] for r in new_records}
  # Other tasks' shards, read after this task's records are written.
  records.update(_finished_records([t for t in every if t.file not in records]))

  seconds = time.time() - start
  summaries, manifests = [], []
  for split in splits:
    split_records = [records[t.file] for t in tasks[split]]
    done = sum(r is not None for r in split_records)
    if done < len(split_records):
      summaries.append(
        {
          'split': split,
          'name': name,
          'data_dir': output_dir,
          'complete': False,
          'task': options.task,
          'num_tasks': options.num_tasks,
          'task_shards': sum(options.owns(t.index) for t in tasks[split]),
          'shards_done': done,
          'num_shards': len(split_records),
          'shards_reused': sum(t.file in reused for t in tasks[split]),
          'num_videos': len(all_entries[split]),
          'seconds': round(seconds, 2),
          'manifest': None,
          'skipped_csv': None,
        }
      )
      continue
    manifest, summary = _write_split_files(
      output_dir,
      split,
      name,
      all_entries[split],
      label_map,
      options,
      split_records,
      sum(t.file not in converted for t in tasks[split]),
      seconds,
    )
    manifests.append(manifest)
    summaries.append(summary)
  if manifests:
    dataset_writer.publish_manifests(output_dir, manifests)
  return summaries


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(header)
  writer.writerows(rows)
  return text.getvalue()


def _write_split_files(
  output_dir, split, name, entries, label_map, options, records, reused, seconds
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Writes skipped.csv and index.csv from the shard records; returns the manifest (for
  `dataset_writer.publish_manifests`) and the summary."""
  problems = sorted(p for r in records for p in r['skipped'])
  skipped_csv = schema.skipped_path(output_dir, split)
  storage.write_text(
    skipped_csv,
    _csv_text(
      ['path', 'reason', 'kept'],
      ((path, reason, 'yes' if kept else 'no') for _, path, reason, kept in problems),
    ),
  )
  starts = np.cumsum([0] + [r['num_examples'] for r in records]).tolist()
  storage.write_text(
    schema.index_path(output_dir, split),
    _csv_text(
      ['index', 'file', 'position', 'video_id', 'label', 'num_frames', 'path'],
      (
        (start + position, r['file'], position, video_id, label, frames, path)
        for r, start in zip(records, starts)
        for position, video_id, label, frames, path in r['videos']
      ),
    ),
  )
  num_examples = sum(r['num_examples'] for r in records)
  num_skipped = sum(1 for *_, kept in problems if not kept)
  manifest = {
    'schema_version': schema.SCHEMA_VERSION,
    'split': split,
    'name': name,
    'num_examples': num_examples,
    'num_videos': len(entries),
    'num_classes': len(label_map),
    'label_map': list(label_map),
    'label_map_sha256': schema.label_map_sha256(label_map),
    'options': dict(
      options.output_options(),
      num_shards=len(records),
      order='random permutation of the input (numpy default_rng(shuffle_seed))'
      ', dealt round-robin to the shards',
    ),
    'shards': [{key: r[key] for key in schema.SHARD_KEYS} for r in records],
    'num_skipped': num_skipped,
    'num_truncated': sum(r['num_truncated'] for r in records),
    'skipped': [
      {'path': path, 'reason': reason, 'kept': kept} for _, path, reason, kept in problems
    ],
  }
  return manifest, {
    'split': split,
    'name': name,
    'data_dir': output_dir,
    'complete': True,
    'num_videos': len(entries),
    'num_examples': num_examples,
    'num_skipped': num_skipped,
    'num_truncated': manifest['num_truncated'],
    'num_shards': len(records),
    'shards_reused': reused,
    'seconds': round(seconds, 2),
    'manifest': schema.manifest_path(output_dir, split),
    'skipped_csv': skipped_csv,
  }


def report(summaries: Sequence[dict[str, Any]], stream: TextIO | None = None) -> int:
  """Prints one line per split; returns the exit status (1 if a split converted no video; 0
  for a task whose split awaits other tasks' shards)."""
  stream = stream or sys.stderr
  status = 0
  for s in summaries:
    if not s['complete']:
      print(
        f'{s["split"]}: task {s["task"]}/{s["num_tasks"]} converted its {s["task_shards"]} '
        f'shards; {s["shards_done"]} of {s["num_shards"]} shards of the split are done: the '
        'manifest is written by the run that finishes the last one (or re-run with '
        '--num_tasks=1)',
        file=stream,
      )
      continue
    line = (
      f'{s["split"]}: {s["num_examples"]} of {s["num_videos"]} videos converted in '
      f'{s["seconds"]:.1f} s, {s["num_shards"]} shards ({s["shards_reused"]} reused); '
      f'{s["num_skipped"]} skipped, {s["num_truncated"]} truncated'
    )
    if s['num_skipped'] or s['num_truncated']:
      line += f' (see {s["skipped_csv"]})'
    print(line, file=stream)
    if s['num_examples'] == 0:
      print(
        f'error: no video of split {s["split"]!r} could be converted; reasons in '
        f'{s["skipped_csv"]}',
        file=stream,
      )
      status = 1
  if summaries and status == 0 and all(s['complete'] for s in summaries):
    print(
      f'TFDS dataset {summaries[0]["name"]!r}: '
      f'tfds.builder_from_directory({summaries[0]["data_dir"]!r})',
      file=stream,
    )
  return status
