"""The shared core of data_prep: a list of videos -> sharded TFRecords + manifest for one split.

Importable API (used by the source front-ends, the synthetic demo and benchmarks)::

  from data_prep import convert
  summary = convert.convert_split(
      entries=[convert.Entry("/data/a.mp4", 3, "a.mp4"), ("/data/b.mp4", 0)],
      output_dir="out", split="train", label_map=["cls0", "cls1", "cls2", "cls3"],
      options=convert.ConvertOptions(short_side=320, workers=8))

writes, under `output_dir` (file names from `cost_jax.data.schema`):

* `{split}-{i:05d}-of-{n:05d}.tfrecord`: one `tf.train.SequenceExample` per video (schema.py);
  video k of `entries` goes to shard `k % n` (deterministic, sizes differ by at most one);
* `{split}.manifest.json` (`schema.MANIFEST_KEYS` plus `num_videos`, `num_truncated`, `skipped`);
* `{split}.skipped.csv` (columns path, reason): videos left out, and truncated videos kept in part;
* `label_map.txt`: line i = name of class i (must agree with what is already there);
* `.done/{shard}.json`: a record per finished shard. Re-running the same call keeps shards whose
  record matches their inputs and options, and redoes the others (writes are atomic: temporary
  file, then rename), so an interrupted run resumes without duplicating anything.

`convert_splits({"train": ..., "val": ...}, output_dir, label_map, options)` does several splits
with one pool of workers. Bad videos never stop the run: each one is listed in skipped.csv with
its reason.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import queue as queue_lib
import re
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import tqdm

from cost_jax.data import schema
from data_prep import video_decode

DONE_DIR = ".done"


class Entry(NamedTuple):
  """One video to convert. `name` is stored as `video/filename` (default: the path's basename)."""
  path: str
  label: int
  name: str = ""


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
  """How videos are converted. Fields that change the output are recorded in the manifest."""
  short_side: int = 320      # stored frames' short side in px; 0 keeps the decoded size
  jpeg_quality: int = 90
  num_shards: int = 0        # 0: default_num_shards(len(entries))
  workers: int = 0           # parallel processes (one shard per task); 0: os.cpu_count()
  min_side: int = video_decode.MIN_SIDE
  max_side: int = video_decode.MAX_SIDE
  progress: bool = True      # tqdm bar with videos/s and ETA on stderr

  def __post_init__(self):
    checks = {"short_side": self.short_side >= 0, "jpeg_quality": 1 <= self.jpeg_quality <= 100,
              "num_shards": self.num_shards >= 0, "workers": self.workers >= 0,
              "min_side": 1 <= self.min_side <= self.max_side}
    for key, ok in checks.items():
      if not ok:
        raise ValueError(f"ConvertOptions.{key}={getattr(self, key)!r} is out of range")

  def output_options(self) -> dict[str, int]:
    """The options that change what is written (kept in the manifest and shard records)."""
    return {"short_side": self.short_side, "jpeg_quality": self.jpeg_quality,
            "min_side": self.min_side, "max_side": self.max_side}


def default_num_shards(num_videos: int) -> int:
  """About 8 videos per shard, at most 1024 shards: many more shards than hosts."""
  return max(1, min(1024, num_videos // 8))


def shard_entries(entries: Sequence[Entry], num_shards: int) -> list[list[Entry]]:
  """Deterministic round-robin assignment: entry k goes to shard k % num_shards."""
  return [list(entries[i::num_shards]) for i in range(num_shards)]


def read_label_map(path: str) -> list[str]:
  """Reads class names, one per line (line i = class i); blank lines are errors."""
  with open(path, encoding="utf-8") as f:
    names = [line.rstrip("\r\n") for line in f]
  while names and not names[-1].strip():
    names.pop()
  check_label_map(names, path)
  return names


def check_label_map(label_map: Sequence[str], where: str = "label_map") -> None:
  """Raises ValueError if names are empty, blank, repeated or contain a newline."""
  if not label_map:
    raise ValueError(f"{where}: the label map is empty")
  seen = {}
  for i, name in enumerate(label_map):
    if not isinstance(name, str) or not name.strip() or "\n" in name or "\r" in name:
      raise ValueError(f"{where}: class {i} has an invalid name {name!r}")
    if name in seen:
      raise ValueError(f"{where}: class name {name!r} is used by classes {seen[name]} and {i}")
    seen[name] = i


def write_label_map(output_dir: str, label_map: Sequence[str]) -> str:
  """Writes `label_map.txt`, or checks that the one already there is the same."""
  check_label_map(label_map)
  path = schema.label_map_path(output_dir)
  if os.path.exists(path):
    existing = read_label_map(path)
    if existing != list(label_map):
      diff = next((i for i, (a, b) in enumerate(zip(existing, label_map)) if a != b),
                  min(len(existing), len(label_map)))
      raise ValueError(
          f"{path} already holds a different label map ({len(existing)} classes, "
          f"{len(label_map)} given; first difference at class {diff}): use another output "
          "directory, or delete it and every split converted with it")
    return path
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("".join(f"{name}\n" for name in label_map))
  os.replace(tmp, path)
  return path


def make_example(video: video_decode.DecodedVideo, label: int, label_text: str,
                 filename: str) -> Any:
  """The `tf.train.SequenceExample` of one decoded video (keys from `schema`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy; workers only)
  example = tf.train.SequenceExample()
  ctx = example.context.feature
  ints = {schema.LABEL_INDEX_KEY: label, schema.NUM_FRAMES_KEY: video.num_frames,
          schema.HEIGHT_KEY: video.height, schema.WIDTH_KEY: video.width,
          schema.ORIGINAL_HEIGHT_KEY: video.original_height,
          schema.ORIGINAL_WIDTH_KEY: video.original_width}
  for key, value in ints.items():
    ctx[key].int64_list.value.append(value)
  ctx[schema.FPS_KEY].float_list.value.append(video.fps)
  ctx[schema.LABEL_TEXT_KEY].bytes_list.value.append(label_text.encode("utf-8"))
  ctx[schema.FILENAME_KEY].bytes_list.value.append(filename.encode("utf-8"))
  frames = example.feature_lists.feature_list[schema.FRAMES_KEY]
  for jpeg in video.jpeg_frames:
    frames.feature.add().bytes_list.value.append(jpeg)
  return example


@dataclasses.dataclass(frozen=True)
class _ShardTask:
  output_dir: str
  split: str
  index: int
  num_shards: int
  entries: tuple[Entry, ...]
  label_map: tuple[str, ...]
  options: ConvertOptions

  @property
  def file(self) -> str:
    return schema.shard_name(self.split, self.index, self.num_shards)

  @property
  def record_path(self) -> str:
    return os.path.join(self.output_dir, DONE_DIR, f"{self.file}.json")

  def fingerprint(self) -> str:
    blob = json.dumps([schema.SCHEMA_VERSION, self.file, [list(e) for e in self.entries],
                       schema.label_map_sha256(self.label_map), self.options.output_options()])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _finished_record(task: _ShardTask) -> dict[str, Any] | None:
  """The shard's `.done` record if the shard is complete and matches the task, else None."""
  try:
    with open(task.record_path) as f:
      record = json.load(f)
    size = os.path.getsize(os.path.join(task.output_dir, task.file))
  except (OSError, ValueError):
    return None
  if record.get("fingerprint") != task.fingerprint() or record.get("bytes") != size:
    return None
  return record


def _convert_one(entry: Entry, label_map: Sequence[str], options: ConvertOptions) -> Any:
  if not 0 <= entry.label < len(label_map):
    raise video_decode.BadVideoError(
        f"label {entry.label} is not in the label map (0..{len(label_map) - 1})")
  return video_decode.decode_video(entry.path, options.short_side, options.jpeg_quality,
                                   options.min_side, options.max_side)


def _convert_shard(task: _ShardTask, progress: Callable[[int], Any]) -> dict[str, Any]:
  """Writes one shard atomically, then its `.done` record; returns that record."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = os.path.join(task.output_dir, task.file)
  tmp = f"{path}.tmp-{os.getpid()}"
  count, skipped, truncated = 0, [], 0
  with tf.io.TFRecordWriter(tmp) as writer:
    for position, entry in enumerate(task.entries):
      try:
        video = _convert_one(entry, task.label_map, task.options)
      except video_decode.BadVideoError as e:
        skipped.append([position, entry.path, str(e), False])
      except Exception as e:  # pylint: disable=broad-except  (bad input never stops the run)
        skipped.append([position, entry.path, f"error: {type(e).__name__}: {e}", False])
      else:
        name = entry.name or os.path.basename(entry.path)
        writer.write(make_example(video, entry.label, task.label_map[entry.label],
                                  name).SerializeToString(deterministic=True))
        count += 1
        if video.problem:
          truncated += 1
          skipped.append([position, entry.path, video.problem, True])
      progress(1)
  os.replace(tmp, path)
  record = {"file": task.file, "num_examples": count, "num_truncated": truncated,
            "skipped": skipped, "bytes": os.path.getsize(path),
            "fingerprint": task.fingerprint()}
  schema.write_json_atomic(task.record_path, record)
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


def _run_parallel(tasks: list[_ShardTask], workers: int, bar: tqdm.tqdm) -> list[dict[str, Any]]:
  """Runs shard tasks in `workers` spawned processes, feeding per-video progress to `bar`."""
  ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold TF threads
  progress_queue = ctx.Queue()

  def drain():
    while True:
      try:
        bar.update(progress_queue.get_nowait())
      except queue_lib.Empty:
        return

  records = []
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                              initargs=(progress_queue,)) as pool:
    pending = {pool.submit(_convert_shard_in_worker, t) for t in tasks}
    while pending:
      done, pending = concurrent.futures.wait(
          pending, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
      drain()
      try:
        records.extend(f.result() for f in done)
      except concurrent.futures.BrokenExecutor as e:
        raise RuntimeError(
            "a worker process died (a crash inside the decoder, or out of memory?); finished "
            "shards are kept: re-run the same command to resume, with --workers 1 to see which "
            "video it was") from e
  drain()
  return records


def _remove_stale_files(output_dir: str, split: str, keep: set[str]) -> None:
  """Deletes shards of `split` with another shard count and temporaries of killed runs."""
  shard = rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}\.tfrecord"
  for directory, suffix in ((output_dir, ""), (os.path.join(output_dir, DONE_DIR), r"\.json")):
    pattern = re.compile(rf"^({shard}){suffix}(\.tmp-\d+)?$")
    for name in os.listdir(directory):
      match = pattern.match(name)
      if match and (match.group(2) or match.group(1) not in keep):
        os.remove(os.path.join(directory, name))


EntryLike = Entry | tuple[str, int] | tuple[str, int, str]


def convert_split(entries: Iterable[EntryLike], output_dir: str, split: str,
                  label_map: Sequence[str],
                  options: ConvertOptions = ConvertOptions()) -> dict[str, Any]:
  """Converts `entries` (path, label index[, name]) to TFRecord shards of `split`; resumable.

  Returns a summary: split, num_videos, num_examples, num_skipped (videos left out),
  num_truncated (kept in part), num_shards, shards_reused, seconds, manifest, skipped_csv.
  Raises ValueError for a bad split name, label map or options; bad videos are only listed.
  With `options.workers` > 1, a calling script needs the `if __name__ == "__main__":` guard
  (workers are spawned, not forked).
  """
  return convert_splits({split: entries}, output_dir, label_map, options)[0]


def convert_splits(splits: Mapping[str, Iterable[EntryLike]], output_dir: str,
                   label_map: Sequence[str],
                   options: ConvertOptions = ConvertOptions()) -> list[dict[str, Any]]:
  """`convert_split` for several splits sharing one label map and one pool of workers."""
  start = time.time()
  label_map = tuple(label_map)
  for split in splits:
    if not re.fullmatch(r"[A-Za-z0-9_.]+", split):
      raise ValueError(f"split name {split!r} must be letters, digits, '_' or '.'")
  os.makedirs(os.path.join(output_dir, DONE_DIR), exist_ok=True)
  write_label_map(output_dir, label_map)
  all_entries, tasks = {}, {}
  for split, entries in splits.items():
    all_entries[split] = [Entry(*e) for e in entries]
    num_shards = options.num_shards or default_num_shards(len(all_entries[split]))
    tasks[split] = [_ShardTask(output_dir, split, i, num_shards, tuple(shard), label_map, options)
                    for i, shard in enumerate(shard_entries(all_entries[split], num_shards))]
    _remove_stale_files(output_dir, split, {t.file for t in tasks[split]})

  records = {t.file: _finished_record(t) for ts in tasks.values() for t in ts}
  reused = {name for name, record in records.items() if record is not None}
  todo = [t for ts in tasks.values() for t in ts if t.file not in reused]
  workers = min(options.workers or os.cpu_count() or 1, max(1, len(todo)))
  total = sum(map(len, all_entries.values()))
  initial = total - sum(len(t.entries) for t in todo)
  with tqdm.tqdm(total=total, initial=initial, unit="video", desc=",".join(splits),
                 disable=not options.progress, dynamic_ncols=True) as bar:
    if workers == 1:
      new_records = [_convert_shard(t, bar.update) for t in todo]
    else:
      new_records = _run_parallel(todo, workers, bar)
  records.update((r["file"], r) for r in new_records)

  seconds = time.time() - start
  return [_write_manifest(output_dir, split, all_entries[split], label_map, options,
                          [records[t.file] for t in tasks[split]],
                          sum(t.file in reused for t in tasks[split]), seconds)
          for split in splits]


def _write_manifest(output_dir, split, entries, label_map, options, records, reused,
                    seconds) -> dict[str, Any]:
  """Writes skipped.csv and the manifest from the shard records; returns the summary."""
  num_shards = len(records)
  problems = sorted((pos * num_shards + shard, path, reason, kept)
                    for shard, r in enumerate(records) for pos, path, reason, kept in r["skipped"])
  skipped_csv = schema.skipped_path(output_dir, split)
  tmp = f"{skipped_csv}.tmp-{os.getpid()}"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["path", "reason"])
    writer.writerows((path, reason) for _, path, reason, _ in problems)
  os.replace(tmp, skipped_csv)

  num_examples = sum(r["num_examples"] for r in records)
  num_skipped = sum(1 for *_, kept in problems if not kept)
  manifest = {
      "schema_version": schema.SCHEMA_VERSION,
      "split": split,
      "num_examples": num_examples,
      "num_videos": len(entries),
      "num_classes": len(label_map),
      "label_map": list(label_map),
      "label_map_sha256": schema.label_map_sha256(label_map),
      "options": dict(options.output_options(), num_shards=num_shards),
      "shards": [{"file": r["file"], "num_examples": r["num_examples"]} for r in records],
      "num_skipped": num_skipped,
      "num_truncated": sum(r["num_truncated"] for r in records),
      "skipped": [{"path": path, "reason": reason} for _, path, reason, _ in problems],
  }
  manifest_file = schema.manifest_path(output_dir, split)
  schema.write_json_atomic(manifest_file, manifest)
  return {"split": split, "num_videos": len(entries), "num_examples": num_examples,
          "num_skipped": num_skipped, "num_truncated": manifest["num_truncated"],
          "num_shards": num_shards, "shards_reused": reused, "seconds": round(seconds, 2),
          "manifest": manifest_file, "skipped_csv": skipped_csv}


def report(summaries: Sequence[dict[str, Any]], stream=None) -> int:
  """Prints one line per split; returns the exit status (1 if a split converted no video)."""
  stream = stream or sys.stderr
  status = 0
  for s in summaries:
    line = (f"{s['split']}: {s['num_examples']} of {s['num_videos']} videos converted in "
            f"{s['seconds']:.1f} s, {s['num_shards']} shards ({s['shards_reused']} reused); "
            f"{s['num_skipped']} skipped, {s['num_truncated']} truncated")
    if s["num_skipped"] or s["num_truncated"]:
      line += f" (see {s['skipped_csv']})"
    print(line, file=stream)
    if s["num_examples"] == 0:
      print(f"error: no video of split {s['split']!r} could be converted; reasons in "
            f"{s['skipped_csv']}", file=stream)
      status = 1
  return status


def run_cli(make_jobs: Callable[[], tuple[Mapping[str, Iterable[EntryLike]], Sequence[str]]],
            output_dir: str, options: ConvertOptions) -> int:
  """The body of every front-end: `make_jobs()` -> ({split: entries}, label map), convert, report.

  Returns the exit status: 2 when the inputs are unusable (the message names the file or value),
  1 when a split converted no video, else 0.
  """
  try:
    jobs, label_map = make_jobs()
    summaries = convert_splits(jobs, output_dir, label_map, options)
  except (OSError, ValueError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return report(summaries)


def add_flags(parser: argparse.ArgumentParser) -> None:
  """Adds the --output and conversion flags shared by every front-end."""
  parser.add_argument("--output", required=True, help="directory for shards and manifests")
  parser.add_argument("--short-side", type=int, default=320,
                      help="short side of stored frames in px (0 = keep)")
  parser.add_argument("--jpeg-quality", type=int, default=90)
  parser.add_argument("--num-shards", type=int, default=0,
                      help="shards per split (0 = max(1, min(1024, videos // 8)))")
  parser.add_argument("--workers", type=int, default=0, help="processes (0 = os.cpu_count())")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
  """ConvertOptions from flags added by `add_flags`; bad values exit with a clear message."""
  try:
    return ConvertOptions(short_side=args.short_side, jpeg_quality=args.jpeg_quality,
                          num_shards=args.num_shards, workers=args.workers,
                          progress=not args.no_progress)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
