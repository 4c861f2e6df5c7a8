"""data_prep: lists, Kinetics, MiT -> TFDS datasets; read-back, resume, bad input, exit status."""

import csv
import json
import os
import re
import sys

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cost_jax.data import labels, schema, video_decode
from data_prep import build, convert, encode_video, kinetics400, mit
from tests import fixtures, train_testlib, zygote
from tests import video_factory as vf

QUIET = dict(progress=False, workers=1)


def decoded_frames(path: str) -> np.ndarray:
  """Every frame of a video as the reference decode gives it (PyAV, rgb24)."""
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


def read_split(out_dir: str, split: str) -> tuple[dict, list[dict]]:
  """The manifest and every example of a split (through TFDS, frames decoded), checking
  per-shard counts against the manifest."""
  manifest = schema.read_manifest(out_dir, split)
  builder = tfds.builder_from_directory(out_dir)
  assert builder.info.splits[split].shard_lengths == [s['num_examples'] for s in manifest['shards']]
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  assert len(examples) == manifest['num_examples']
  return manifest, examples


def read_csv(path: str) -> list[dict[str, str]]:
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def read_skipped(out_dir: str, split: str) -> dict[str, tuple[str, str]]:
  """path -> (reason, kept) of `{split}.skipped.csv`."""
  with open(schema.skipped_path(out_dir, split), newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['path', 'reason', 'kept']
  return {path: (reason, kept) for path, reason, kept in rows[1:]}


def write_good_videos(root: str) -> list[str]:
  """Five tiny natural-looking videos 24x32 with 5..9 frames at 10 fps; their relative paths."""
  rels = [f'class{i % 2}/v{i}.mp4' for i in range(5)]
  for i, rel in enumerate(rels):
    vf.write_video(os.path.join(root, rel), vf.natural_frames(5 + i, 24, 32, seed=i), fps=10)
  return rels


def lossless_inputs(root: str) -> dict[str, np.ndarray]:
  """The lossless test's video files (written under `root`), keyed as regenerate_mmaction2.py's
  `--lossless-inputs` reads them (`NAME:video`, the file's bytes)."""
  inputs = {}
  for rel in write_good_videos(root):
    with open(os.path.join(root, rel), 'rb') as f:
      inputs[f'data_prep/{rel}:video'] = np.frombuffer(f.read(), np.uint8)
  return inputs


@pytest.fixture(scope='module')
def good_videos(tmp_path_factory):
  """`write_good_videos`: (root, [(relative path, frames as decoded)])."""
  root = str(tmp_path_factory.mktemp('videos'))
  return root, [(rel, decoded_frames(os.path.join(root, rel))) for rel in write_good_videos(root)]


def write_list(path, lines):
  with open(path, 'w') as f:
    f.writelines(f'{line}\n' for line in lines)
  return str(path)


def test_build_writes_a_tfds_dataset_equal_to_the_source_videos(good_videos, tmp_path):
  """Lossless frames at the decoded size: every feature equals what the source video holds."""
  root, videos = good_videos
  list_file = write_list(
    tmp_path / 'train.txt', [f'{rel} {i % 3}' for i, (rel, _) in enumerate(videos)]
  )
  label_file = write_list(tmp_path / 'labels.txt', ['cat', 'dog', 'eel'])
  data_dir = tmp_path / 'tfds'
  out = str(data_dir / 'tiny_videos' / '1.0.0')  # the layout tfds.load(NAME) searches
  status = build.main(
    [
      f'--list={list_file}',
      f'--video_root={root}',
      f'--output={out}',
      '--split=train',
      f'--labels={label_file}',
      '--short_side=0',
      '--image_format=png',
      '--num_shards=2',
      '--workers=1',
      '--noprogress',
    ]
  )
  assert status == 0
  assert sorted(f for f in os.listdir(out) if f.endswith('.tfrecord')) == [
    'train-00000-of-00002.tfrecord',
    'train-00001-of-00002.tfrecord',
  ]
  manifest, examples = read_split(out, 'train')
  assert manifest['name'] == 'tiny_videos' and manifest['options']['image_format'] == 'png'
  assert [s['num_examples'] for s in manifest['shards']] == [3, 2]
  assert manifest['num_classes'] == 3 and manifest['label_map'] == ['cat', 'dog', 'eel']
  assert manifest['num_skipped'] == 0 and read_skipped(out, 'train') == {}
  builder = tfds.builder_from_directory(out)
  assert builder.info.name == 'tiny_videos' and builder.info.features['label'].names == [
    'cat',
    'dog',
    'eel',
  ]
  assert builder.info.supervised_keys == ('video', 'label')
  with open(schema.label_map_path(out)) as f:
    assert f.read() == 'cat\ndog\neel\n'
  by_name = {e['video_id'].decode(): e for e in examples}
  assert sorted(by_name) == sorted(rel for rel, _ in videos)
  for i, (rel, frames) in enumerate(videos):
    e = by_name[rel]
    assert (
      e['label'] == i % 3
      and builder.info.features['label'].int2str(e['label']) == ['cat', 'dog', 'eel'][i % 3]
    )
    assert e['num_frames'] == len(frames) and e['fps'] == pytest.approx(10.0)
    assert (e['height'], e['width'], e['original_height'], e['original_width']) == (24, 32, 24, 32)
    np.testing.assert_array_equal(e['video'], frames)  # bit for bit
    np.testing.assert_array_equal(e['middle_frame'], frames[len(frames) // 2])
  # The index says where each video went; positions follow the shard contents.
  index = read_csv(schema.index_path(out, 'train'))
  order = [e['video_id'].decode() for e in examples]
  assert [row['video_id'] for row in sorted(index, key=lambda r: int(r['index']))] == order
  # TFDS's own tools work on it, and tfds.load finds it by name.
  assert len(list(tfds.load('tiny_videos', data_dir=str(data_dir), split='train'))) == 5
  frame = tfds.as_dataframe(builder.as_dataset(split='train').take(2), builder.info)
  assert len(frame) == 2 and 'video_id' in frame.columns
  import matplotlib

  matplotlib.use('Agg')
  figure = tfds.visualization.show_examples(
    builder.as_dataset(split='train'), builder.info, rows=1, cols=2
  )
  assert len(figure.axes) == 2


def test_lossless_conversion_gives_the_official_crops_exactly(good_videos, tmp_path):
  """PNG at the decoded size: the pipeline's val and test crops are those of MMAction2's own
  pipelines (DecordInit, SampleFrames, DecordDecode, Resize, CenterCrop / ThreeCrop,
  FormatShape) on the same video files, bit for bit (so the test protocol's scores are the
  official ones). lossless_crops.npz holds the files and MMAction2's crops, recorded by
  tests/testdata/regenerate_mmaction2.py."""
  from configs import base
  from cost_jax.data import input_pipeline

  recorded = fixtures.load('lossless_crops.npz')
  root, videos = good_videos
  for rel, frames in videos:  # the recorded files decode to this test's frames
    copy = tmp_path / 'recorded' / rel
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(recorded[f'data_prep/{rel}:video'].tobytes())
    np.testing.assert_array_equal(
      decoded_frames(str(copy)), frames, err_msg=f'{rel}: not the recorded video'
    )
  out = str(tmp_path / 'out')
  convert.convert_split(
    [(os.path.join(root, rel), 0, rel) for rel, _ in videos],
    out,
    'val',
    ['a'],
    convert.ConvertOptions(short_side=0, image_format='png', num_shards=2, **QUIET),
  )
  cfg = base.get_config().data
  cfg.update(
    data_dir=out,
    clip_len=4,
    frame_interval=2,
    val_short_side=32,
    crop_size=28,
    test_short_side=32,
    test_crop_size=32,
    test_num_clips=2,
    prefetch=1,
  )
  names = {int(row['index']): row['video_id'] for row in read_csv(schema.index_path(out, 'val'))}
  for mode in ('val', 'test'):
    ds, _ = input_pipeline.create_eval_dataset(
      cfg, split='val', batch_size=1, mode=mode, process_index=0, process_count=1
    )
    seen = []
    for batch in ds.as_numpy_iterator():
      seen.append(names[int(batch['index'][0])])
      want = fixtures.ncthw_to_nthwc(recorded[f'data_prep/{seen[-1]}:{mode}'])
      np.testing.assert_array_equal(batch['clips'][0], want[0] if mode == 'val' else want)
    assert sorted(seen) == sorted(rel for rel, _ in videos)


def test_resized_jpeg_frames(good_videos, tmp_path):
  root, videos = good_videos
  rel, frames = videos[4]
  convert.convert_split(
    [(os.path.join(root, rel), 0, rel)],
    str(tmp_path),
    'val',
    ['a'],
    convert.ConvertOptions(short_side=16, **QUIET),
  )
  _, (example,) = read_split(str(tmp_path), 'val')
  # Short side 16: 24x32 -> 16x22 (long side rounded to even, like ffmpeg scale=-2:16).
  assert example['video'].shape == (len(frames), 16, 22, 3)
  assert (example['height'], example['width']) == (16, 22)
  assert (example['original_height'], example['original_width']) == (24, 32)
  assert encode_video.resized_shape(240, 320, 320) == (320, 426)
  assert encode_video.resized_shape(1080, 608, 320) == (568, 320)
  assert encode_video.resized_shape(24, 32, 0) == (24, 32)


def test_native_jpeg_frames_keep_order_and_content(good_videos, tmp_path):
  root, videos = good_videos
  rel, frames = videos[4]
  convert.convert_split(
    [(os.path.join(root, rel), 0, rel)],
    str(tmp_path),
    'val',
    ['a'],
    convert.ConvertOptions(short_side=0, jpeg_quality=95, **QUIET),
  )
  _, (example,) = read_split(str(tmp_path), 'val')
  stored = example['video'].astype(np.float32)
  assert stored.shape == frames.shape
  errors = np.abs(stored[:, None] - frames[None].astype(np.float32)).mean(axis=(2, 3, 4))
  # Every stored frame is close to its own source frame and closest to it.
  assert np.all(np.diag(errors) < 6), np.diag(errors)
  assert np.all(errors.argmin(axis=1) == np.arange(len(frames)))


def test_resume_keeps_finished_shards_and_redoes_the_rest(good_videos, tmp_path):
  root, videos = good_videos
  entries = [(os.path.join(root, rel), 0) for rel, _ in videos]
  out = str(tmp_path)
  options = convert.ConvertOptions(short_side=16, num_shards=3, **QUIET)
  first = convert.convert_split(entries, out, 'train', ['x'], options)
  assert first['num_examples'] == 5 and first['shards_reused'] == 0
  shards = [os.path.join(out, schema.shard_name('train', i, 3)) for i in range(3)]
  mtimes = [os.stat(p).st_mtime_ns for p in shards]
  with open(schema.manifest_path(out, 'train')) as f:
    manifest_before = json.load(f)

  # Simulate a run killed while writing shard 1: no record, a half-written temporary file.
  os.remove(convert.done_record_path(out, schema.shard_name('train', 1, 3)))
  os.remove(shards[1])
  vf.write_bytes(shards[1] + '.tmp-99999', b'partial')
  # And a shard whose file no longer matches its record (e.g. overwritten by hand).
  with open(shards[2], 'ab') as f:
    f.write(b'junk')
  second = convert.convert_split(entries, out, 'train', ['x'], options)
  assert second['shards_reused'] == 1 and second['num_examples'] == 5
  assert os.stat(shards[0]).st_mtime_ns == mtimes[0]
  assert not os.path.exists(shards[1] + '.tmp-99999')
  manifest, examples = read_split(out, 'train')
  names = sorted(e['video_id'].decode() for e in examples)
  assert names == sorted(f'v{i}.mp4' for i in range(5))  # each video exactly once
  assert manifest == manifest_before

  # A third run with nothing to do rewrites no shard.
  mtimes = [os.stat(p).st_mtime_ns for p in shards]
  third = convert.convert_split(entries, out, 'train', ['x'], options)
  assert third['shards_reused'] == 3
  assert [os.stat(p).st_mtime_ns for p in shards] == mtimes

  # Other options redo everything; another shard count replaces the old shards.
  convert.convert_split(
    entries, out, 'train', ['x'], convert.ConvertOptions(short_side=16, num_shards=2, **QUIET)
  )
  assert sorted(f for f in os.listdir(out) if f.endswith('.tfrecord')) == [
    schema.shard_name('train', i, 2) for i in range(2)
  ]
  assert read_split(out, 'train')[0]['num_examples'] == 5


@pytest.fixture(scope='module')
def bad_inputs(tmp_path_factory, good_videos):
  """(entries, expected reason prefix by path, good paths) covering every kind of bad input."""
  d = tmp_path_factory.mktemp('bad')
  root, videos = good_videos
  full = vf.write_video(str(d / 'full.mp4'), vf.pattern_frames(12, 48, 64), fps=8)
  size = os.path.getsize(full)
  mdat = vf.mp4_box_offset(full)
  expected = {
    str(d / 'missing.mp4'): 'missing file',
    vf.write_bytes(str(d / 'empty.mp4'), b''): 'empty file (0 bytes)',
    vf.write_bytes(str(d / 'text.mp4'), b'not a video\n' * 50): 'not a video',
    vf.write_audio_only(str(d / 'audio.mp4')): 'no video stream (audio-only)',
    vf.write_truncated_copy(full, str(d / 'header_only.mp4'), mdat + 24): 'no decodable frame',
    vf.write_truncated_copy(full, str(d / 'cut.mp4'), int(size * 0.8)): 'truncated: kept ',
    vf.write_video(str(d / 'tiny.mp4'), vf.pattern_frames(2, 6, 6)): 'absurd resolution 6x6',
    vf.write_video(str(d / 'wide.mp4'), vf.pattern_frames(2, 8, 8200)): 'absurd resolution 8200x8',
  }
  good = [os.path.join(root, rel) for rel, _ in videos[:2]]
  out_of_range = os.path.join(root, videos[2][0])
  expected[out_of_range] = 'label 7 is not in the label map (0..1)'
  entries = [(p, 0) for p in expected if p != out_of_range] + [(out_of_range, 7)]
  entries += [(p, 1) for p in good]
  return entries, expected, good


@pytest.mark.parametrize('truncated', ['drop', 'keep'])
def test_every_bad_input_is_listed_with_its_reason(bad_inputs, tmp_path, capsys, truncated):
  entries, expected, good = bad_inputs
  list_file = write_list(tmp_path / 'list.txt', [f'{p} {label}' for p, label in entries])
  out = str(tmp_path / 'out')
  status = build.main(
    [
      f'--list={list_file}',
      f'--output={out}',
      '--split=train',
      '--num_classes=2',
      '--num_shards=3',
      '--workers=1',
      '--noprogress',
      '--short_side=0',
      f'--truncated={truncated}',
    ]
  )
  assert status == 0
  skipped = read_skipped(out, 'train')
  assert sorted(skipped) == sorted(expected)
  for path, prefix in expected.items():
    assert skipped[path][0].startswith(prefix), (path, skipped[path])
  cut = next(p for p in expected if p.endswith('cut.mp4'))
  reason, kept = skipped[cut]
  frames = int(re.match(r'truncated: kept (\d+) frames of 12', reason).group(1))
  assert 1 <= frames < 12
  assert kept == ('yes' if truncated == 'keep' else 'no')
  assert reason.endswith('; kept' if truncated == 'keep' else '; dropped (--truncated=drop)')
  assert all(k == 'no' for p, (_, k) in skipped.items() if p != cut)
  manifest, examples = read_split(out, 'train')
  converted = len(good) + (truncated == 'keep')
  assert manifest['num_examples'] == converted == len(examples)
  assert manifest['num_truncated'] == 1
  assert manifest['num_skipped'] == len(expected) - (truncated == 'keep')
  assert sorted(e['num_frames'] for e in examples) == sorted(
    [5, 6] + ([frames] if truncated == 'keep' else [])
  )
  assert len(manifest['skipped']) == len(expected)
  summary = capsys.readouterr().err
  assert f'{converted} of {len(entries)} videos converted' in summary
  assert f'{manifest["num_skipped"]} skipped, 1 truncated' in summary


def test_encode_video_errors_directly(bad_inputs):
  _, expected, _ = bad_inputs
  for path, prefix in expected.items():
    if prefix.startswith(('label', 'truncated')):
      continue
    with pytest.raises(video_decode.BadVideoError, match=re.escape(prefix)):
      encode_video.encode_video(path, short_side=0)


def test_nothing_converted_exits_nonzero(bad_inputs, tmp_path):
  _, expected, _ = bad_inputs
  bad = [p for p, reason in expected.items() if not reason.startswith(('label', 'truncated'))]
  list_file = write_list(tmp_path / 'list.txt', [f'{p} 0' for p in bad])
  out = str(tmp_path / 'out')
  result = zygote.run(
    [
      sys.executable,
      '-m',
      'data_prep.build',
      f'--list={list_file}',
      f'--output={out}',
      '--split=val',
      '--workers=1',
    ],
    cwd=train_testlib.REPO,
    env=train_testlib.env(),
    timeout=120,
  )
  assert result.returncode == 1, result.stderr
  assert "no video of split 'val' could be converted" in result.stderr
  assert f'0 of {len(bad)} videos converted' in result.stderr
  # stderr is not a terminal: plain progress lines, no progress bar.
  n = len(bad)
  assert f'val: started, {n} videos in all' in result.stderr and '\r' not in result.stderr
  assert re.search(rf'val: {n}/{n} videos \(100\.0%\), [\d.]+ videos/s, done in', result.stderr)
  assert sorted(read_skipped(out, 'val')) == sorted(bad)


def test_parallel_workers_write_the_same_shards(good_videos, tmp_path):
  root, videos = good_videos
  entries = [(os.path.join(root, rel), i % 2, rel) for i, (rel, _) in enumerate(videos)]
  digests = []
  for workers in (1, 2):
    out = str(tmp_path / f'w{workers}')
    summary = convert.convert_split(
      entries,
      out,
      'train',
      ['a', 'b'],
      convert.ConvertOptions(short_side=16, num_shards=2, workers=workers, progress=False),
    )
    assert summary['num_examples'] == 5
    digests.append([s['sha256'] for s in schema.read_manifest(out, 'train')['shards']])
  assert digests[0] == digests[1]


def test_command_line_mistakes_are_one_line_with_status_2(good_videos, tmp_path, capsys):
  root, _ = good_videos
  good_list = write_list(tmp_path / 'good.txt', ['a.mp4 0'])
  bad_list = write_list(tmp_path / 'bad.txt', ['a.mp4 0', 'b.mp4 one'])
  out = f'--output={tmp_path / "o"}'
  cases = [
    ([f'--list={bad_list}', out, '--split=x'], "bad.txt:2: label 'one' is not an integer"),
    (
      [f'--list={good_list}', out, '--split=x', '--video-root=v'],
      "Unknown command line flag 'video-root'",
    ),
    (
      [f'--list={good_list}', out, '--split=x', '--jpeg_quality=0'],
      '--jpeg_quality=0 is invalid: must be in 1..100',
    ),
    ([f'--list={good_list}', out, '--split=x', '--image_format=gif'], '--image_format=gif'),
    ([f'--list={good_list}', out, '--split=x', '--truncated=maybe'], '--truncated=maybe'),
    ([out, '--split=x'], '--list'),
    ([f'--list={good_list}', out, '--split=x', 'stray'], "unexpected argument(s) ['stray']"),
    ([f'--list={good_list}', out, '--split=a-b'], "split name 'a-b'"),
    ([f'--list={good_list}', out, '--split=x', '--name=Bad-Name'], "dataset name 'Bad-Name'"),
    ([f'--list={tmp_path / "none.txt"}', out, '--split=x'], 'none.txt'),
    ([f'--list={good_list}', out, '--split=x', f'--labels={tmp_path / "none.txt"}'], 'label file'),
  ]
  for argv, expected in cases:
    assert build.main(argv + ['--noprogress']) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and expected in err, (argv, err)
  assert build.main(['--help']) == 0
  assert '--video_root' in capsys.readouterr().out
  # A second split must agree with the label map and frame format already in the directory.
  lm = str(tmp_path / 'lm')
  os.makedirs(lm)
  convert.write_label_map(lm, ['a', 'b'])
  with pytest.raises(ValueError, match='different label map'):
    convert.convert_split([], lm, 'val', ['a', 'c'], convert.ConvertOptions(**QUIET))


def test_splits_converted_separately_share_one_tfds_dataset(good_videos, tmp_path):
  root, videos = good_videos
  out = str(tmp_path)
  for split, chosen in (('train', videos[:3]), ('val', videos[3:])):
    convert.convert_split(
      [(os.path.join(root, rel), 0, rel) for rel, _ in chosen],
      out,
      split,
      ['a'],
      convert.ConvertOptions(short_side=16, **QUIET),
    )
  builder = tfds.builder_from_directory(out)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {'train': 3, 'val': 2}
  with pytest.raises(ValueError, match='frames stored as jpeg; use --image_format=jpeg'):
    convert.convert_split(
      [(os.path.join(root, videos[0][0]), 0)],
      out,
      'test',
      ['a'],
      convert.ConvertOptions(image_format='png', **QUIET),
    )


def test_videos_go_to_shards_in_a_seeded_random_order():
  entries = [convert.Entry(f'v{i}', i // 10) for i in range(40)]  # class-sorted: 4 x 10
  shards = convert.shard_entries(entries, 4, seed=0)
  assert sorted(k for shard in shards for k, _ in shard) == list(range(40))
  assert [len(s) for s in shards] == [10] * 4
  # Round-robin over the input order would give each shard every class in class order;
  # the shuffled order mixes classes within and across positions.
  assert all(len({e.label for _, e in s}) >= 3 for s in shards)
  assert any([e.label for _, e in s] != sorted(e.label for _, e in s) for s in shards)
  assert convert.shard_entries(entries, 4, seed=0) == shards
  assert convert.shard_entries(entries, 4, seed=1) != shards
  assert [[k for k, _ in s] for s in convert.shard_entries(entries, 4, seed=None)] == [
    list(range(i, 40, 4)) for i in range(4)
  ]
  assert [convert.default_num_shards(n) for n in (0, 7, 8, 80, 10**6)] == [1, 1, 1, 10, 1024]


def test_verify_names_damaged_shards_and_rerun_rewrites_only_them(good_videos, tmp_path, capsys):
  from data_prep import verify

  root, videos = good_videos
  list_file = write_list(tmp_path / 'list.txt', [f'{rel} 0' for rel, _ in videos])
  out = str(tmp_path / 'out')
  argv = [
    f'--list={list_file}',
    f'--video_root={root}',
    f'--output={out}',
    '--split=train',
    '--short_side=16',
    '--num_shards=3',
    '--workers=1',
    '--noprogress',
  ]
  assert build.main(argv) == 0
  assert verify.main([out, '--noprogress']) == 0
  assert 'train: 3 shard(s) checked, intact' in capsys.readouterr().out
  shards = [os.path.join(out, schema.shard_name('train', i, 3)) for i in range(3)]
  with open(shards[0], 'r+b') as f:  # a flipped bit: same size
    f.seek(os.path.getsize(shards[0]) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x01]))
  with open(shards[2], 'r+b') as f:  # truncated
    f.truncate(os.path.getsize(shards[2]) - 50)
  mtime = os.stat(shards[1]).st_mtime_ns
  assert verify.main([out, '--noprogress']) == 1
  report = capsys.readouterr().out
  index = read_csv(schema.index_path(out, 'train'))
  for i in (0, 2):
    name = schema.shard_name('train', i, 3)
    line = next(line for line in report.splitlines() if f'DAMAGED {name}' in line)
    assert '(marked for redo)' in line and 'SHA-256' in line
    held = sorted(row['path'] for row in index if row['file'] == name)
    assert held and all(path in report for path in held)
  assert schema.shard_name('train', 1, 3) not in report and '2 damaged' in report
  assert build.main(argv) == 0  # the same command rewrites the two damaged shards
  assert os.stat(shards[1]).st_mtime_ns == mtime
  assert verify.main([out, '--noprogress']) == 0
  assert verify.main([str(tmp_path / 'nowhere')]) == 2
  assert 'is not a directory' in capsys.readouterr().err


def test_label_names_files(tmp_path):
  text = write_list(tmp_path / 'l.txt', ['a b', 'c', '', ''])
  assert labels.read_label_names(text) == ['a b', 'c']
  as_json = tmp_path / 'l.json'
  as_json.write_text(json.dumps({'1': 'y', '0': 'x'}))
  assert labels.read_label_names(str(as_json)) == ['x', 'y']
  for lines, message in (
    (['a', '', 'b'], 'class 1 .line 2. has an invalid name'),
    (['a', 'a'], "class name 'a' is used by classes 0 and 1"),
    ([], 'no class names'),
  ):
    with pytest.raises(ValueError, match=message):
      labels.read_label_names(write_list(tmp_path / 'bad.txt', lines))
  with pytest.raises(FileNotFoundError, match='label file'):
    labels.read_label_names(str(tmp_path / 'missing.txt'))


def test_kinetics400_layout(tmp_path, capsys):
  root = tmp_path / 'k400'
  (root / 'annotations').mkdir(parents=True)
  header = 'label,youtube_id,time_start,time_end,split\n'
  (root / 'annotations' / 'kinetics_train.csv').write_text(
    header + 'pass x,aaaaaaaaaaa,10,20,train\n'
    'pass-y,bbbbbbbbbbb,0.0,10.0,train\n'
    '"abseiling",ccccccccccc,5,15,train\n'
  )
  (root / 'annotations' / 'kinetics_val.csv').write_text(
    header + 'pass x,ddddddddddd,1,11,val\n' + 'abseiling,eeeeeeeeeee,2,12,val\n'
  )
  frames = vf.pattern_frames(4, 16, 20)
  vf.write_video(str(root / 'videos_train' / 'aaaaaaaaaaa_000010_000020.mp4'), frames)  # flat
  vf.write_video(
    str(root / 'videos_train' / 'pass-y' / 'bbbbbbbbbbb_000000_000010.mp4'), frames
  )  # class folder
  vf.write_video(str(root / 'videos_train' / 'ccccccccccc.mp4'), frames)  # id only
  vf.write_video(str(root / 'videos_val' / 'pass_x' / 'ddddddddddd_000001_000011.mp4'), frames)
  out = str(tmp_path / 'out')
  status = kinetics400.main(
    [f'--root={root}', f'--output={out}', '--short_side=0', '--workers=1', '--noprogress']
  )
  assert status == 0
  # MMAction2 numbers classes by their names with spaces as '_': "pass-y" < "pass_x".
  expected_map = ['abseiling', 'pass-y', 'pass x']
  with open(schema.label_map_path(out)) as f:
    assert f.read().splitlines() == expected_map
  assert tfds.builder_from_directory(out).info.name == 'kinetics400'
  _, train = read_split(out, 'train')
  found = {e['video_id'].decode(): e['label'] for e in train}
  assert found == {
    'aaaaaaaaaaa_000010_000020.mp4': 2,
    'pass-y/bbbbbbbbbbb_000000_000010.mp4': 1,
    'ccccccccccc.mp4': 0,
  }
  manifest, val = read_split(out, 'val')
  assert [e['label'] for e in val] == [2]
  assert manifest['num_skipped'] == 1
  ((missing, (reason, _)),) = read_skipped(out, 'val').items()
  assert missing.endswith('eeeeeeeeeee_000002_000012.mp4') and reason == 'missing file'
  # An unknown class in val is an error naming the file and row.
  (root / 'annotations' / 'kinetics_val.csv').write_text(header + 'juggling,x,1,2,val\n')
  assert kinetics400.main([f'--root={root}', f'--output={out}', '--noprogress']) == 2
  assert "kinetics_val.csv:2: class 'juggling'" in capsys.readouterr().err
  assert kinetics400.main([f'--root={root}', f'--output={out}', '--splits=train,dev']) == 2
  assert '--splits=train,dev' in capsys.readouterr().err


def test_moments_in_time_layout(tmp_path, capsys):
  root = tmp_path / 'mit'
  (root / 'annotations').mkdir(parents=True)
  (root / 'annotations' / 'moments_categories.txt').write_text('running,1\nclapping,0\n')
  (root / 'annotations' / 'trainingSet.csv').write_text(
    'running/a.mp4,running,3,0\nclapping/b.mp4,clapping,3,0\n'
  )
  (root / 'annotations' / 'validationSet.csv').write_text('clapping/c.mp4,clapping,3,0\n')
  frames = vf.pattern_frames(3, 16, 16)
  for rel in ('training/running/a.mp4', 'training/clapping/b.mp4', 'validation/clapping/c.mp4'):
    vf.write_video(str(root / 'videos' / rel), frames)
  out = str(tmp_path / 'out')
  assert (
    mit.main([f'--root={root}', f'--output={out}', '--short_side=0', '--workers=1', '--noprogress'])
    == 0
  )
  with open(schema.label_map_path(out)) as f:
    assert f.read() == 'clapping\nrunning\n'
  _, train = read_split(out, 'train')
  assert {e['video_id'].decode(): e['label'] for e in train} == {
    'running/a.mp4': 1,
    'clapping/b.mp4': 0,
  }
  _, val = read_split(out, 'val')
  assert [(e['label'], e['num_frames']) for e in val] == [(0, 3)]
  (root / 'annotations' / 'moments_categories.txt').write_text('running,1\nclapping\n')
  assert mit.main([f'--root={root}', f'--output={out}', '--noprogress']) == 2
  assert "moments_categories.txt:2: expected 'name,index'" in capsys.readouterr().err
