"""data_prep on the storage layer, local side: shards shared by tasks, unsupported locations,
the lock-free TFDS metadata (gs:// end to end is tested against the emulator elsewhere)."""

import hashlib
import io
import os

import pytest
import tensorflow_datasets as tfds

from cost_jax import storage
from cost_jax.data import schema
from data_prep import build, convert, dataset_writer, kinetics400, mit, synthetic, verify
from tests import video_factory as vf

QUIET = dict(progress=False, workers=1)


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """A video root with six tiny videos and a list file of them (labels 0..2)."""
  root = tmp_path_factory.mktemp('videos')
  lines = []
  for i in range(6):
    rel = f'c{i % 3}/v{i}.mp4'
    vf.write_video(str(root / rel), vf.pattern_frames(3 + i % 2, 16, 20, seed=i), fps=8)
    lines.append(f'{rel} {i % 3}\n')
  list_file = root / 'list.txt'
  list_file.write_text(''.join(lines))
  return str(root), str(list_file)


def build_argv(videos, out, *extra):
  root, list_file = videos
  return [
    f'--list={list_file}',
    f'--video_root={root}',
    f'--output={out}',
    '--split=train',
    '--short_side=0',
    '--num_shards=4',
    '--workers=1',
    '--noprogress',
    *extra,
  ]


def read(path):
  with open(path, 'rb') as f:
    return f.read()


def test_two_tasks_write_what_one_run_writes(videos, tmp_path, capsys):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  assert build.main(build_argv(videos, one)) == 0
  capsys.readouterr()
  shards = [schema.shard_name('train', i, 4) for i in range(4)]
  # Temporaries of killed runs: task 0 removes its own (shard 0) and leaves task 1's (shard 1).
  os.makedirs(two)
  for i in (0, 1):
    vf.write_bytes(os.path.join(two, f'{shards[i]}.tmp-99999'), b'partial')

  assert build.main(build_argv(videos, two, '--num_tasks=2', '--task=0')) == 0
  err = capsys.readouterr().err
  assert (
    'train: task 0/2 converted its 2 shards; 2 of 4 shards of the split are done: the manifest '
    'is written by the run that finishes the last one (or re-run with --num_tasks=1)'
  ) in err
  assert 'tfds.builder_from_directory' not in err
  names = set(os.listdir(two))
  assert {shards[0], shards[2], f'{shards[1]}.tmp-99999'} <= names
  assert not names & {shards[1], shards[3], f'{shards[0]}.tmp-99999'}
  for file in ('train.manifest.json', 'train.index.csv', 'train.skipped.csv', 'dataset_info.json'):
    assert file not in names
  assert sorted(os.listdir(os.path.join(two, convert.DONE_DIR))) == [
    f'{shards[0]}.json',
    f'{shards[2]}.json',
  ]

  mtimes = {i: os.stat(os.path.join(two, shards[i])).st_mtime_ns for i in (0, 2)}
  assert build.main(build_argv(videos, two, '--num_tasks=2', '--task=1')) == 0
  err = capsys.readouterr().err
  assert 'train: 6 of 6 videos converted' in err and '4 shards (2 reused)' in err
  assert not os.path.exists(os.path.join(two, f'{shards[1]}.tmp-99999'))  # task 1's own
  for i in (0, 2):  # task 0's shards are kept as they are
    assert os.stat(os.path.join(two, shards[i])).st_mtime_ns == mtimes[i]
  manifest = schema.read_manifest(two, 'train')
  assert manifest == schema.read_manifest(one, 'train')
  for shard in manifest['shards']:  # the SHA-256 taken while writing is the file's
    assert hashlib.sha256(read(os.path.join(two, shard['file']))).hexdigest() == shard['sha256']
  for file in (*shards, 'train.index.csv', 'train.skipped.csv', 'label_map.txt'):
    assert read(os.path.join(two, file)) == read(os.path.join(one, file)), file
  assert tfds.builder_from_directory(two).info.splits['train'].num_examples == 6
  assert verify.main([two, '--noprogress']) == 0

  # A run with one task reuses every shard, whoever wrote it.
  summary = convert.convert_split(
    build.read_list_file(videos[1], videos[0]),
    two,
    'train',
    ['0', '1', '2'],
    convert.ConvertOptions(short_side=0, num_shards=4, **QUIET),
  )
  assert summary['complete'] and summary['shards_reused'] == 4


def test_task_options_are_checked_and_not_part_of_the_output():
  with pytest.raises(ValueError, match=r'task=2 is invalid: must be in 0\.\.1'):
    convert.ConvertOptions(task=2, num_tasks=2)
  with pytest.raises(ValueError, match='num_tasks=0 is invalid'):
    convert.ConvertOptions(num_tasks=0)
  assert (
    convert.ConvertOptions(task=1, num_tasks=3).output_options()
    == convert.ConvertOptions().output_options()
  )
  assert [i for i in range(7) if convert.ConvertOptions(task=1, num_tasks=3).owns(i)] == [1, 4]


def test_command_line_task_mistake(videos, tmp_path, capsys):
  assert build.main(build_argv(videos, tmp_path / 'o', '--num_tasks=2', '--task=2')) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: --task=2 is invalid') and err.count('\n') == 1
  assert not os.path.exists(tmp_path / 'o')


def test_unsupported_scheme_is_one_line_with_status_2_and_writes_nothing(
  videos, tmp_path, monkeypatch, capsys
):
  monkeypatch.chdir(tmp_path)
  root, list_file = videos
  s3 = 's3://bucket/x'
  cases = [
    (build.main, build_argv(videos, s3), '--output=s3://bucket/x'),
    (build.main, [f'--list={list_file}', '--output=o', '--split=t', f'--video_root={s3}'], '--vid'),
    (build.main, [f'--list={s3}/list.txt', '--output=o', '--split=t'], '--list=s3://'),
    (kinetics400.main, [f'--root={root}', f'--output={s3}'], '--output=s3://'),
    (kinetics400.main, [f'--root={root}', '--output=o', f'--videos_val={s3}'], '--videos_val'),
    (mit.main, [f'--root={root}', f'--output={s3}'], '--output=s3://'),
    (mit.main, [f'--root={s3}', '--output=o'], '--root=s3://'),
    (synthetic.main, [f'--output={s3}'], '--output=s3://'),
    (verify.main, [s3], 's3://'),
  ]
  for main, argv, expected in cases:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, (argv, err)
    assert 'unsupported scheme s3://' in err and (expected or '') in err, (argv, err)
  assert os.listdir(tmp_path) == []  # no 's3:' folder, no 'o'
  with pytest.raises(storage.UnsupportedLocationError, match='s3://'):
    convert.convert_split([], s3, 'train', ['a'], convert.ConvertOptions(**QUIET))


def convert_into(out, videos, split, chosen):
  root, _ = videos
  return convert.convert_split(
    [(os.path.join(root, f'c{i % 3}/v{i}.mp4'), i % 3) for i in chosen],
    out,
    split,
    ['0', '1', '2'],
    convert.ConvertOptions(short_side=0, **QUIET),
  )


def tfds_splits(out):
  return {k: v.num_examples for k, v in tfds.builder_from_directory(out).info.splits.items()}


def test_metadata_lists_every_split_converted_into_the_directory(videos, tmp_path, monkeypatch):
  out = str(tmp_path)
  convert_into(out, videos, 'train', [0, 1, 2, 3])
  assert tfds_splits(out) == {'train': 4}
  convert_into(out, videos, 'val', [4, 5])
  assert tfds_splits(out) == {'train': 4, 'val': 2}
  assert not os.path.exists(os.path.join(out, '.tfds_metadata.lock'))
  train, val = (schema.read_manifest(out, s) for s in ('train', 'val'))

  # The race: a conversion of train listed the manifests before val's was published, and its
  # metadata write lands after val's conversion wrote metadata for both.
  dataset_writer.write_tfds_metadata(out, manifests=[train])
  assert tfds_splits(out) == {'train': 4}  # what the stale write alone leaves
  written = []
  write = dataset_writer.write_tfds_metadata
  monkeypatch.setattr(
    dataset_writer,
    'write_tfds_metadata',
    lambda d, desc, manifests: (
      written.append([m['split'] for m in manifests]) or write(d, desc, manifests)
    ),
  )
  # The same conversion, settling from its stale listing: the re-listing after its write finds
  # val, so it writes again, and stops once a listing matches what it wrote.
  assert dataset_writer.settle_tfds_metadata(out, listing=[train]) == ['train', 'val']
  assert written == [['train'], ['train', 'val']]
  assert tfds_splits(out) == {'train': 4, 'val': 2}
  # With a current listing, one write.
  written.clear()
  assert dataset_writer.publish_manifests(out, [val]) == ['train', 'val']
  assert written == [['train', 'val']]


def test_kinetics_index_follows_linked_class_folders(tmp_path):
  (tmp_path / 'elsewhere' / 'abseiling').mkdir(parents=True)
  (tmp_path / 'elsewhere' / 'abseiling' / 'b_000001_000011.mp4').write_bytes(b'x')
  (tmp_path / 'videos' / 'pass_x').mkdir(parents=True)
  (tmp_path / 'videos' / 'pass_x' / 'a_000001_000011.mkv').write_bytes(b'x')
  (tmp_path / 'videos' / 'pass_x' / 'a_000001_000011.mp4').write_bytes(b'x')
  os.symlink(tmp_path / 'elsewhere' / 'abseiling', tmp_path / 'videos' / 'abseiling')
  video_dir = str(tmp_path / 'videos')
  assert kinetics400.index_videos(video_dir) == {
    'a_000001_000011': os.path.join(video_dir, 'pass_x', 'a_000001_000011.mp4'),
    'b_000001_000011': os.path.join(video_dir, 'abseiling', 'b_000001_000011.mp4'),
  }


def test_report_of_a_waiting_task_is_status_0():
  stream = io.StringIO()
  summary = {
    'split': 'val',
    'complete': False,
    'task': 1,
    'num_tasks': 3,
    'task_shards': 0,
    'shards_done': 1,
    'num_shards': 2,
  }
  assert convert.report([summary], stream) == 0
  assert stream.getvalue().startswith('val: task 1/3 converted its 0 shards; 1 of 2 shards')
