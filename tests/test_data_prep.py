"""data_prep: lists, Kinetics, MiT -> TFRecords; read-back, resume, bad input, exit status."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cost_jax.data import schema
from data_prep import build, convert, kinetics400, mit, video_decode
from tests import video_factory as vf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(progress=False, workers=1)


def parse(record: bytes) -> dict:
  """One stored SequenceExample as numpy values, frames decoded."""
  context = {k: tf.io.FixedLenFeature([], tf.int64) for k in schema.INT_CONTEXT_KEYS}
  context.update({k: tf.io.FixedLenFeature([], tf.float32) for k in schema.FLOAT_CONTEXT_KEYS})
  context.update({k: tf.io.FixedLenFeature([], tf.string) for k in schema.BYTES_CONTEXT_KEYS})
  ctx, seq = tf.io.parse_single_sequence_example(
      record, context_features=context,
      sequence_features={schema.FRAMES_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
  out = {k: v.numpy() for k, v in ctx.items()}
  out["frames"] = np.stack([tf.io.decode_jpeg(j).numpy() for j in seq[schema.FRAMES_KEY]])
  return out


def read_split(out_dir: str, split: str) -> tuple[dict, list[dict]]:
  """The manifest and every example of a split, checking per-shard counts."""
  manifest = schema.read_manifest(out_dir, split)
  examples = []
  for shard in manifest["shards"]:
    records = list(tf.data.TFRecordDataset(os.path.join(out_dir, shard["file"])))
    assert len(records) == shard["num_examples"], shard
    examples += [parse(r.numpy()) for r in records]
  assert len(examples) == manifest["num_examples"]
  return manifest, examples


def read_skipped(out_dir: str, split: str) -> dict[str, str]:
  with open(schema.skipped_path(out_dir, split), newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["path", "reason"]
  return {path: reason for path, reason in rows[1:]}


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory):
  """Five tiny videos 24x32 with 5..9 frames at 10 fps, as (relative path, frames)."""
  root = tmp_path_factory.mktemp("videos")
  videos = []
  for i in range(5):
    rel = f"class{i % 2}/v{i}.mp4"
    frames = vf.pattern_frames(5 + i, 24, 32, seed=i)
    vf.write_video(str(root / rel), frames, fps=10)
    videos.append((rel, frames))
  return str(root), videos


def write_list(path, lines):
  with open(path, "w") as f:
    f.writelines(f"{line}\n" for line in lines)
  return str(path)


def test_build_writes_readable_shards(good_videos, tmp_path):
  root, videos = good_videos
  list_file = write_list(tmp_path / "train.txt", [f"{rel} {i % 3}" for i, (rel, _) in
                                                  enumerate(videos)])
  labels = write_list(tmp_path / "labels.txt", ["cat", "dog", "eel"])
  out = str(tmp_path / "out")
  status = build.main(["--list", list_file, "--video-root", root, "--output", out, "--split",
                       "train", "--labels", labels, "--short-side", "16", "--num-shards", "2",
                       "--workers", "1", "--no-progress"])
  assert status == 0
  assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == [
      "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
  manifest, examples = read_split(out, "train")
  assert [s["num_examples"] for s in manifest["shards"]] == [3, 2]
  assert manifest["num_classes"] == 3 and manifest["label_map"] == ["cat", "dog", "eel"]
  assert manifest["num_skipped"] == 0 and manifest["options"]["short_side"] == 16
  with open(schema.label_map_path(out)) as f:
    assert f.read() == "cat\ndog\neel\n"
  assert read_skipped(out, "train") == {}
  by_name = {e[schema.FILENAME_KEY].decode(): e for e in examples}
  assert sorted(by_name) == sorted(rel for rel, _ in videos)
  for i, (rel, frames) in enumerate(videos):
    e = by_name[rel]
    assert e[schema.LABEL_INDEX_KEY] == i % 3
    assert e[schema.LABEL_TEXT_KEY].decode() == ["cat", "dog", "eel"][i % 3]
    assert e[schema.NUM_FRAMES_KEY] == len(frames) == len(e["frames"])
    assert e[schema.FPS_KEY] == pytest.approx(10.0)
    # Short side 16: 24x32 -> 16x22 (long side rounded to even, like ffmpeg scale=-2:16).
    assert e["frames"].shape[1:] == (16, 22, 3)
    assert (e[schema.HEIGHT_KEY], e[schema.WIDTH_KEY]) == (16, 22)
    assert (e[schema.ORIGINAL_HEIGHT_KEY], e[schema.ORIGINAL_WIDTH_KEY]) == (24, 32)


def test_frames_keep_order_and_content_at_native_size(good_videos, tmp_path):
  root, videos = good_videos
  rel, frames = videos[4]
  convert.convert_split([(os.path.join(root, rel), 0, rel)], str(tmp_path), "val", ["a"],
                        convert.ConvertOptions(short_side=0, jpeg_quality=95, **QUIET))
  _, (example,) = read_split(str(tmp_path), "val")
  stored = example["frames"].astype(np.float32)
  assert stored.shape == frames.shape
  errors = np.abs(stored[:, None] - frames[None].astype(np.float32)).mean(axis=(2, 3, 4))
  # Every stored frame is close to its own source frame and closest to it.
  assert np.all(np.diag(errors) < 12), np.diag(errors)
  assert np.all(errors.argmin(axis=1) == np.arange(len(frames)))


def test_resume_keeps_finished_shards_and_redoes_the_rest(good_videos, tmp_path):
  root, videos = good_videos
  entries = [(os.path.join(root, rel), 0) for rel, _ in videos]
  out = str(tmp_path)
  options = convert.ConvertOptions(short_side=16, num_shards=3, **QUIET)
  first = convert.convert_split(entries, out, "train", ["x"], options)
  assert first["num_examples"] == 5 and first["shards_reused"] == 0
  shards = [os.path.join(out, schema.shard_name("train", i, 3)) for i in range(3)]
  mtimes = [os.stat(p).st_mtime_ns for p in shards]
  with open(schema.manifest_path(out, "train")) as f:
    manifest_before = json.load(f)

  # Simulate a run killed while writing shard 1: no record, a half-written temporary file.
  os.remove(os.path.join(out, convert.DONE_DIR, schema.shard_name("train", 1, 3) + ".json"))
  os.remove(shards[1])
  vf.write_bytes(shards[1] + ".tmp-99999", b"partial")
  # And a shard whose file no longer matches its record (e.g. overwritten by hand).
  with open(shards[2], "ab") as f:
    f.write(b"junk")
  second = convert.convert_split(entries, out, "train", ["x"], options)
  assert second["shards_reused"] == 1 and second["num_examples"] == 5
  assert os.stat(shards[0]).st_mtime_ns == mtimes[0]
  assert not os.path.exists(shards[1] + ".tmp-99999")
  manifest, examples = read_split(out, "train")
  names = sorted(e[schema.FILENAME_KEY].decode() for e in examples)
  assert names == sorted(f"v{i}.mp4" for i in range(5))  # each video exactly once
  assert manifest == manifest_before

  # A third run with nothing to do rewrites no shard.
  mtimes = [os.stat(p).st_mtime_ns for p in shards]
  third = convert.convert_split(entries, out, "train", ["x"], options)
  assert third["shards_reused"] == 3
  assert [os.stat(p).st_mtime_ns for p in shards] == mtimes

  # Other options redo everything; another shard count replaces the old shards.
  convert.convert_split(entries, out, "train", ["x"],
                        convert.ConvertOptions(short_side=16, num_shards=2, **QUIET))
  assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == [
      schema.shard_name("train", i, 2) for i in range(2)]
  assert read_split(out, "train")[0]["num_examples"] == 5


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, good_videos):
  """(entries, expected reason prefix by path, good paths) covering every kind of bad input."""
  d = tmp_path_factory.mktemp("bad")
  root, videos = good_videos
  full = vf.write_video(str(d / "full.mp4"), vf.pattern_frames(12, 48, 64), fps=8)
  size = os.path.getsize(full)
  mdat = vf.mp4_box_offset(full)
  expected = {
      str(d / "missing.mp4"): "missing file",
      vf.write_bytes(str(d / "empty.mp4"), b""): "empty file (0 bytes)",
      vf.write_bytes(str(d / "text.mp4"), b"not a video\n" * 50): "not a video",
      vf.write_audio_only(str(d / "audio.mp4")): "no video stream (audio-only)",
      vf.write_truncated_copy(full, str(d / "header_only.mp4"), mdat + 24): "no decodable frame",
      vf.write_truncated_copy(full, str(d / "cut.mp4"), int(size * 0.8)): "truncated: kept ",
      vf.write_video(str(d / "tiny.mp4"), vf.pattern_frames(2, 6, 6)): "absurd resolution 6x6",
      vf.write_video(str(d / "wide.mp4"), vf.pattern_frames(2, 8, 8200)):
          "absurd resolution 8200x8",
  }
  good = [os.path.join(root, rel) for rel, _ in videos[:2]]
  out_of_range = os.path.join(root, videos[2][0])
  expected[out_of_range] = "label 7 is not in the label map (0..1)"
  entries = [(p, 0) for p in expected if p != out_of_range] + [(out_of_range, 7)]
  entries += [(p, 1) for p in good]
  return entries, expected, good


def test_every_bad_input_is_listed_with_its_reason(bad_inputs, tmp_path, capsys):
  entries, expected, good = bad_inputs
  list_file = write_list(tmp_path / "list.txt", [f"{p} {label}" for p, label in entries])
  out = str(tmp_path / "out")
  status = build.main(["--list", list_file, "--output", out, "--split", "train",
                       "--num-classes", "2", "--num-shards", "3", "--workers", "1",
                       "--no-progress", "--short-side", "0"])
  assert status == 0
  skipped = read_skipped(out, "train")
  assert sorted(skipped) == sorted(expected)
  for path, prefix in expected.items():
    assert skipped[path].startswith(prefix), (path, skipped[path])
  kept = int(re.match(r"truncated: kept (\d+) frames of 12$",
                      skipped[[p for p in expected if p.endswith("cut.mp4")][0]]).group(1))
  assert 1 <= kept < 12
  manifest, examples = read_split(out, "train")
  # The good videos and the truncated one (its decodable part) are converted.
  assert manifest["num_examples"] == len(good) + 1 == len(examples)
  assert manifest["num_skipped"] == len(expected) - 1 and manifest["num_truncated"] == 1
  assert sorted(e[schema.NUM_FRAMES_KEY] for e in examples) == sorted([5, 6, kept])
  assert len(manifest["skipped"]) == len(expected)
  summary = capsys.readouterr().err
  assert f"3 of {len(entries)} videos converted" in summary
  assert f"{len(expected) - 1} skipped, 1 truncated" in summary


def test_decode_video_errors_directly(bad_inputs):
  _, expected, _ = bad_inputs
  for path, prefix in expected.items():
    if prefix.startswith(("label", "truncated")):
      continue
    with pytest.raises(video_decode.BadVideoError, match=re.escape(prefix)):
      video_decode.decode_video(path, short_side=0)


def test_nothing_converted_exits_nonzero(bad_inputs, tmp_path):
  _, expected, _ = bad_inputs
  bad = [p for p, reason in expected.items() if not reason.startswith(("label", "truncated"))]
  list_file = write_list(tmp_path / "list.txt", [f"{p} 0" for p in bad])
  out = str(tmp_path / "out")
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.build", "--list", list_file, "--output", out,
       "--split", "val", "--workers", "1", "--no-progress"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1, result.stderr
  assert "no video of split 'val' could be converted" in result.stderr
  assert f"0 of {len(bad)} videos converted" in result.stderr
  assert sorted(read_skipped(out, "val")) == sorted(bad)


def test_parallel_workers_write_the_same_shards(good_videos, tmp_path):
  root, videos = good_videos
  entries = [(os.path.join(root, rel), i % 2, rel) for i, (rel, _) in enumerate(videos)]
  digests = []
  for workers in (1, 2):
    out = str(tmp_path / f"w{workers}")
    summary = convert.convert_split(entries, out, "train", ["a", "b"], convert.ConvertOptions(
        short_side=16, num_shards=2, workers=workers, progress=False))
    assert summary["num_examples"] == 5
    digests.append([open(os.path.join(out, s["file"]), "rb").read()
                    for s in schema.read_manifest(out, "train")["shards"]])
  assert digests[0] == digests[1]


def test_bad_arguments_give_clear_errors(good_videos, tmp_path, capsys):
  root, _ = good_videos
  bad_list = write_list(tmp_path / "bad.txt", ["a.mp4 0", "b.mp4 one"])
  with pytest.raises(ValueError, match=r"bad.txt:2: label 'one' is not an integer"):
    build.read_list_file(bad_list, root)
  assert build.main(["--list", bad_list, "--output", str(tmp_path / "o"), "--split", "x",
                     "--no-progress"]) == 2
  assert "bad.txt:2" in capsys.readouterr().err
  with pytest.raises(SystemExit, match="jpeg_quality=0"):
    build.main(["--list", bad_list, "--output", str(tmp_path / "o"), "--split", "x",
                "--jpeg-quality", "0"])
  # A second split must agree with the label map already in the output directory.
  out = str(tmp_path / "lm")
  os.makedirs(out)
  convert.write_label_map(out, ["a", "b"])
  with pytest.raises(ValueError, match="different label map"):
    convert.convert_split([], out, "val", ["a", "c"], convert.ConvertOptions(**QUIET))


def test_default_shard_count_and_assignment():
  assert [convert.default_num_shards(n) for n in (0, 7, 8, 80, 10**6)] == [1, 1, 1, 10, 1024]
  entries = [convert.Entry(f"v{i}", 0) for i in range(7)]
  shards = convert.shard_entries(entries, 3)
  assert [[e.path for e in s] for s in shards] == [["v0", "v3", "v6"], ["v1", "v4"],
                                                   ["v2", "v5"]]
  assert video_decode.resized_shape(240, 320, 320) == (320, 426)
  assert video_decode.resized_shape(1080, 608, 320) == (568, 320)
  assert video_decode.resized_shape(24, 32, 0) == (24, 32)


def test_kinetics400_layout(good_videos, tmp_path, capsys):
  root = tmp_path / "k400"
  (root / "annotations").mkdir(parents=True)
  header = "label,youtube_id,time_start,time_end,split\n"
  (root / "annotations" / "kinetics_train.csv").write_text(
      header + "pass x,aaaaaaaaaaa,10,20,train\n"
      "pass-y,bbbbbbbbbbb,0.0,10.0,train\n"
      '"abseiling",ccccccccccc,5,15,train\n')
  (root / "annotations" / "kinetics_val.csv").write_text(
      header + "pass x,ddddddddddd,1,11,val\n" + "abseiling,eeeeeeeeeee,2,12,val\n")
  frames = vf.pattern_frames(4, 16, 20)
  vf.write_video(str(root / "videos_train" / "aaaaaaaaaaa_000010_000020.mp4"), frames)  # flat
  vf.write_video(str(root / "videos_train" / "pass-y" / "bbbbbbbbbbb_000000_000010.mp4"),
                 frames)                                                      # class folder
  vf.write_video(str(root / "videos_train" / "ccccccccccc.mp4"), frames)      # id only
  vf.write_video(str(root / "videos_val" / "pass_x" / "ddddddddddd_000001_000011.mp4"), frames)
  out = str(tmp_path / "out")
  status = kinetics400.main(["--root", str(root), "--output", out, "--short-side", "0",
                             "--workers", "1", "--no-progress"])
  assert status == 0
  # MMAction2 numbers classes by their names with spaces as '_': "pass-y" < "pass_x".
  expected_map = ["abseiling", "pass-y", "pass x"]
  with open(schema.label_map_path(out)) as f:
    assert f.read().splitlines() == expected_map
  _, train = read_split(out, "train")
  labels = {e[schema.FILENAME_KEY].decode(): e[schema.LABEL_INDEX_KEY] for e in train}
  assert labels == {"aaaaaaaaaaa_000010_000020.mp4": 2,
                    "pass-y/bbbbbbbbbbb_000000_000010.mp4": 1, "ccccccccccc.mp4": 0}
  manifest, val = read_split(out, "val")
  assert [e[schema.LABEL_INDEX_KEY] for e in val] == [2]
  assert manifest["num_skipped"] == 1
  (missing, reason), = read_skipped(out, "val").items()
  assert missing.endswith("eeeeeeeeeee_000002_000012.mp4") and reason == "missing file"
  # An unknown class in val is an error naming the file and row.
  (root / "annotations" / "kinetics_val.csv").write_text(header + "juggling,x,1,2,val\n")
  assert kinetics400.main(["--root", str(root), "--output", out, "--no-progress"]) == 2
  assert "kinetics_val.csv:2: class 'juggling'" in capsys.readouterr().err


def test_moments_in_time_layout(tmp_path, capsys):
  root = tmp_path / "mit"
  (root / "annotations").mkdir(parents=True)
  (root / "annotations" / "moments_categories.txt").write_text("running,1\nclapping,0\n")
  (root / "annotations" / "trainingSet.csv").write_text(
      "running/a.mp4,running,3,0\nclapping/b.mp4,clapping,3,0\n")
  (root / "annotations" / "validationSet.csv").write_text("clapping/c.mp4,clapping,3,0\n")
  frames = vf.pattern_frames(3, 16, 16)
  for rel in ("training/running/a.mp4", "training/clapping/b.mp4",
              "validation/clapping/c.mp4"):
    vf.write_video(str(root / "videos" / rel), frames)
  out = str(tmp_path / "out")
  assert mit.main(["--root", str(root), "--output", out, "--short-side", "0", "--workers",
                   "1", "--no-progress"]) == 0
  with open(schema.label_map_path(out)) as f:
    assert f.read() == "clapping\nrunning\n"
  _, train = read_split(out, "train")
  assert {e[schema.FILENAME_KEY].decode(): e[schema.LABEL_INDEX_KEY] for e in train} == {
      "running/a.mp4": 1, "clapping/b.mp4": 0}
  _, val = read_split(out, "val")
  assert [(e[schema.LABEL_TEXT_KEY], e[schema.NUM_FRAMES_KEY]) for e in val] == [
      (b"clapping", 3)]
  (root / "annotations" / "moments_categories.txt").write_text("running,1\nclapping\n")
  assert mit.main(["--root", str(root), "--output", out, "--no-progress"]) == 2
  assert "moments_categories.txt:2: expected 'name,index'" in capsys.readouterr().err
