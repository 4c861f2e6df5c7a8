"""The TFRecord schema shared by `data_prep` (writer) and the input pipeline (reader).

Each video is one `tf.train.SequenceExample`:

* feature list ``image/encoded``: one JPEG per frame, at the video's native frame rate;
* context (DMVR-compatible keys plus what exact MMAction2 sampling needs):
  ``clip/label/index``, ``clip/label/text``, ``video/filename``, ``video/num_frames``,
  ``video/fps``, ``image/height``, ``image/width`` (stored frames),
  ``video/original_height``, ``video/original_width``.

A split is a set of shards ``{split}-{i:05d}-of-{n:05d}.tfrecord`` plus ``{split}.manifest.json``
(see `MANIFEST_KEYS`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

SCHEMA_VERSION = 1

FRAMES_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
FILENAME_KEY = "video/filename"
NUM_FRAMES_KEY = "video/num_frames"
FPS_KEY = "video/fps"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
ORIGINAL_HEIGHT_KEY = "video/original_height"
ORIGINAL_WIDTH_KEY = "video/original_width"

INT_CONTEXT_KEYS = (LABEL_INDEX_KEY, NUM_FRAMES_KEY, HEIGHT_KEY, WIDTH_KEY,
                    ORIGINAL_HEIGHT_KEY, ORIGINAL_WIDTH_KEY)
FLOAT_CONTEXT_KEYS = (FPS_KEY,)
BYTES_CONTEXT_KEYS = (LABEL_TEXT_KEY, FILENAME_KEY)

# Keys every manifest.json carries. ``shards`` is a list of {"file": name, "num_examples": n}
# in shard order; ``options`` holds the data_prep options used; ``label_map`` is the ordered list
# of class names (index i = class i).
MANIFEST_KEYS = ("schema_version", "split", "num_examples", "num_classes", "label_map",
                 "label_map_sha256", "options", "shards", "num_skipped")


def shard_name(split: str, index: int, num_shards: int) -> str:
  """File name of shard `index` of `num_shards` for `split`."""
  return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def manifest_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"{split}.manifest.json")


def skipped_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"{split}.skipped.csv")


def label_map_path(data_dir: str) -> str:
  return os.path.join(data_dir, "label_map.txt")


def label_map_sha256(label_map: Sequence[str]) -> str:
  """A stable hash of an ordered list of class names."""
  return hashlib.sha256("\n".join(label_map).encode("utf-8")).hexdigest()


def read_manifest(data_dir: str, split: str) -> dict[str, Any]:
  """Reads and checks `{split}.manifest.json`; errors name the file and the problem."""
  path = manifest_path(data_dir, split)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no manifest for split {split!r}: {path} is missing (run data_prep first)")
  with open(path) as f:
    manifest = json.load(f)
  missing = [k for k in MANIFEST_KEYS if k not in manifest]
  if missing:
    raise ValueError(f"{path}: manifest lacks keys {missing}")
  if manifest["schema_version"] != SCHEMA_VERSION:
    raise ValueError(f"{path}: schema_version {manifest['schema_version']} is not "
                     f"{SCHEMA_VERSION}; re-run data_prep")
  if label_map_sha256(manifest["label_map"]) != manifest["label_map_sha256"]:
    raise ValueError(f"{path}: label_map_sha256 does not match its label_map")
  return manifest


def write_json_atomic(path: str, obj: Mapping[str, Any]) -> None:
  """Writes JSON to a temporary file and renames it over `path`."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
