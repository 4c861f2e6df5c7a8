"""Datasets, workdirs, checkpoints, weights and videos on gs://, against a real GCS emulator.

Every command runs as a user would run it, in a subprocess whose environment points the GCS
clients at `tests.gcs_emulator` on 127.0.0.1 (fake-gcs-server, and a TLS proxy for TensorFlow's
client), from an empty working directory that must stay empty: nothing of a bucket run may land
on local disk. The Makefile runs the suite in a private network namespace (loopback only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import fixtures, gcs_emulator, session_once, train_testlib, video_factory, zygote

CLASSES = train_testlib.CLASSES
DATA = 'data/tiny'  # the dataset's prefix in the bucket
NUM_TRAIN_SHARDS = 4


@pytest.fixture(scope='module')
def gcs():
  try:
    emulator = gcs_emulator.GcsEmulator()
  except (ImportError, OSError, RuntimeError) as e:
    if os.environ.get('CI'):  # CI has the emulator (requirements-dev.txt): never skip there
      raise
    pytest.skip(f'the GCS emulator cannot start here: {e}')
  print(f'GCS emulator on {emulator.url}; private network namespace: {gcs_emulator.isolated()}')
  yield emulator
  emulator.close()


def _env(gcs, cache_dir):
  env = train_testlib.env()
  env.update(gcs.env(), COST_JAX_CACHE=str(cache_dir))
  return env


def _command(module, *args):
  return [sys.executable, '-m', module, *map(str, args)]


def _run_argv(gcs, cwd, argv, expect=0, cache_dir=None, timeout=400):
  proc = zygote.run(
    argv, cwd=cwd, env=_env(gcs, cache_dir or cwd.parent / 'cache'), timeout=timeout
  )
  assert proc.returncode == expect, f'{argv[1:]}: {proc.returncode}\n{proc.stderr[-4000:]}'
  return proc


def _run(gcs, cwd, module, *args, expect=0, cache_dir=None):
  return _run_argv(gcs, cwd, _command(module, *args), expect, cache_dir)


def _python(gcs, cwd, code, cache_dir=None):
  """The last line `code` prints, run in a Python subprocess pointed at the emulator."""
  return _run_argv(gcs, cwd, [sys.executable, '-c', code], 0, cache_dir).stdout.split('\n')[-2]


def _upload_videos(gcs, tmp_path, count, offset, prefix):
  """`count` small videos in the bucket under `prefix`; the lines of their list file."""
  lines = []
  for i in range(count):
    label = (i + offset) % len(CLASSES)
    local = video_factory.write_video(
      str(tmp_path / 'videos' / prefix / f'{i:02d}.mp4'),
      video_factory.pattern_frames(12, 32, 40, seed=100 * offset + i),
    )
    with open(local, 'rb') as f:
      gcs.upload(f'videos/{prefix}/{i:02d}.mp4', f.read())
    lines.append(f'{prefix}/{i:02d}.mp4 {label}')
  gcs.upload(f'lists/{prefix}.txt', ('\n'.join(lines) + '\n').encode())
  return lines


def _convert(gcs, cwd, split, output, *flags):
  bucket = f'gs://{gcs.bucket}'
  return _run(
    gcs,
    cwd,
    'data_prep.build',
    f'--list={bucket}/lists/{split}.txt',
    f'--video_root={bucket}/videos',
    f'--labels={bucket}/lists/labels.txt',
    f'--output={output}',
    f'--split={split}',
    '--short_side=48',
    '--workers=1',
    '--progress=false',
    *flags,
  )


@pytest.fixture(scope='module')
def gs_dataset(gcs, tmp_path_factory):
  """The tiny train/val dataset converted by data_prep from bucket videos into the bucket."""
  session_once.claim(tmp_path_factory, 'test_cloud_storage.gs_dataset')
  tmp = tmp_path_factory.mktemp('gs_dataset')
  cwd = tmp / 'cwd'
  cwd.mkdir()
  gcs.upload('lists/labels.txt', ''.join(f'{name}\n' for name in CLASSES).encode())
  labels = {
    'train': _upload_videos(gcs, tmp, train_testlib.NUM_TRAIN, 0, 'train'),
    'val': _upload_videos(gcs, tmp, train_testlib.NUM_VAL, 1, 'val'),
  }
  output = f'gs://{gcs.bucket}/{DATA}'
  _convert(gcs, cwd, 'train', output, f'--num_shards={NUM_TRAIN_SHARDS}')
  _convert(gcs, cwd, 'val', output, '--num_shards=2')
  assert os.listdir(cwd) == []
  return output, labels


def test_data_prep_into_a_bucket_resumes_after_a_kill(gcs, gs_dataset, tmp_path):
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  output = f'gs://{gcs.bucket}/resumed'
  done_prefix = 'resumed/.done/'
  gcs.proxy.read_latency_s = 0.5  # each video read waits: the kill lands mid-conversion
  try:
    proc = zygote.Popen(
      _command(
        'data_prep.build',
        f'--list=gs://{gcs.bucket}/lists/train.txt',
        f'--video_root=gs://{gcs.bucket}/videos',
        f'--labels=gs://{gcs.bucket}/lists/labels.txt',
        f'--output={output}',
        '--split=train',
        '--short_side=48',
        '--workers=1',
        '--num_shards=8',
        '--progress=false',
      ),
      cwd=cwd,
      env=_env(gcs, tmp_path / 'cache'),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while not gcs.objects(done_prefix) and time.monotonic() < deadline:
      assert proc.poll() is None, 'the conversion ended before it could be killed'
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    gcs.proxy.read_latency_s = 0.0
  finished = gcs.objects(done_prefix)
  assert 1 <= len(finished) < 8, finished
  assert 'resumed/train.manifest.json' not in gcs.objects('resumed/')

  report = _convert(gcs, cwd, 'train', output, '--num_shards=8').stderr
  assert f'8 shards ({len(finished)} reused)' in report, report
  assert os.listdir(cwd) == []
  resumed = json.loads(gcs.download('resumed/train.manifest.json'))
  straight = json.loads(gcs.download(f'{DATA}/train.manifest.json'))
  assert resumed['num_examples'] == straight['num_examples'] == train_testlib.NUM_TRAIN
  objects = gcs.objects('resumed/')
  for shard in resumed['shards']:  # sizes in the manifest are the objects' sizes
    assert objects[f'resumed/{shard["file"]}'] == shard['num_bytes']
  assert not [name for name in objects if '.tmp' in name or 'lock' in name]


def test_tfds_reads_the_dataset_from_the_bucket(gcs, gs_dataset, tmp_path):
  output, _ = gs_dataset
  code = (
    'import tensorflow_datasets as tfds, json, sys\n'
    f'builder = tfds.builder_from_directory({output!r})\n'
    "ds = builder.as_dataset(split='val')\n"
    "labels = [int(e['label']) for e in ds]\n"
    "print(json.dumps({'splits': sorted(builder.info.splits), 'labels': labels}))\n"
  )
  found = json.loads(_python(gcs, tmp_path, code))
  assert found['splits'] == ['train', 'val']
  index = json.loads(gcs.download(f'{DATA}/val.manifest.json'))
  assert len(found['labels']) == index['num_examples'] == train_testlib.NUM_VAL


def test_train_kill_resume_test_predict_and_export_in_a_bucket(gcs, gs_dataset, tmp_path):
  data_dir, labels = gs_dataset
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  workdir = f'gs://{gcs.bucket}/runs/c2d'
  config = train_testlib.write_config_file(
    str(tmp_path / 'config.py'),
    data_dir,
    num_epochs=2,
    checkpoint_every_steps=1,
    eval_every_epochs=2,
    keep_checkpoints=2,
  )
  prefix = 'runs/c2d/checkpoints/'

  def finished_steps():  # orbax's mark of a finished step on a bucket (items have their own)
    parts = [name[len(prefix) :].split('/') for name in gcs.objects(prefix)]
    return sorted(int(p[0]) for p in parts if p[0].isdigit() and p[1:] == ['commit_success.txt'])

  cmd = _command('cost_jax.main', f'--config={config}', f'--workdir={workdir}')
  proc = zygote.Popen(
    cmd,
    cwd=cwd,
    env=_env(gcs, tmp_path / 'cache'),
    stdout=subprocess.DEVNULL,
    stderr=open(tmp_path / 'run1.log', 'w'),
  )
  deadline = time.monotonic() + 300
  while len(finished_steps()) < 2 and time.monotonic() < deadline:
    assert proc.poll() is None, open(tmp_path / 'run1.log').read()[-3000:]
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  *_, intact, newest = finished_steps()
  assert newest < 4
  assert 'runs/c2d/config.json' in gcs.objects('runs/c2d/')

  # The killed run's newest checkpoint, damaged in the bucket: the resumed run moves it aside
  # (its objects copied, then deleted) and resumes from the newest intact one.
  damaged = f'{{"step": {newest}, damaged'.encode()
  gcs.upload(f'{prefix}{newest}/meta/metadata', damaged)
  resumed = _run(gcs, cwd, 'cost_jax.main', *cmd[3:]).stderr
  said = [line.split('] ', 1)[-1] for line in resumed.splitlines() if 'esum' in line]
  assert f'Resuming from step {intact}, the newest intact checkpoint' in said, said
  assert 'is damaged' in resumed and 'moved it to' in resumed
  assert gcs.download(f'{prefix}{newest}.corrupt/meta/metadata') == damaged
  assert finished_steps()[-1] == 4
  assert json.loads(gcs.download(f'{prefix}4/meta/metadata'))['step'] == 4

  _run(gcs, cwd, 'cost_jax.main', *cmd[3:], '--mode=test')
  summary = json.loads(gcs.download('runs/c2d/test_val_summary.json'))
  assert summary['num_videos'] == train_testlib.NUM_VAL
  assert summary['step'] in finished_steps()  # the best step by val top-1, or the latest
  assert 'runs/c2d/test_val_scores.npz' in gcs.objects('runs/c2d/')

  video = f'gs://{gcs.bucket}/videos/val/00.mp4'
  out = f'gs://{gcs.bucket}/outputs/predict.json'
  _run(
    gcs, cwd, 'cost_jax.predict', f'--checkpoint={workdir}', video, '--views=1', f'--output={out}'
  )
  predicted = json.loads(gcs.download('outputs/predict.json'))
  assert predicted['videos'][0]['video'] == video and predicted['videos'][0]['ok']
  assert {t['label'] for t in predicted['videos'][0]['top']} <= set(CLASSES)  # the run's names

  export_dir = f'gs://{gcs.bucket}/outputs/export'
  _run(gcs, cwd, 'cost_jax.export', f'--checkpoint={workdir}', f'--output={export_dir}')
  exported = gcs.objects('outputs/export/')
  assert exported['outputs/export/model.jax_exported'] > 0
  assert 'outputs/export/saved_model/saved_model.pb' in exported
  assert gcs.download('outputs/export/label_map.txt').decode().split() == list(CLASSES)
  assert os.listdir(cwd) == []  # nothing of the run on local disk


def test_weights_and_videos_from_a_bucket(gcs, gs_dataset, tmp_path):
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  cache = tmp_path / 'cache'
  with open(fixtures.path('c2d.pth'), 'rb') as f:
    original = f.read()
  weights = gcs.upload('weights/c2d.pth', original)
  with open(fixtures.path('costa.pth'), 'rb') as f:
    costa = gcs.upload('weights/costa.pth', f.read())

  # init.* from a bucket: copied into the local download cache, byte for byte
  code = (
    'from cost_jax.weights import download\n'
    f"print(download.resolve_weights({weights!r}, field='init.mmaction2'))\n"
  )
  local = _python(gcs, cwd, code, cache)
  assert local.startswith(str(cache)) and open(local, 'rb').read() == original

  video = f'gs://{gcs.bucket}/videos/train/01.mp4'
  out = f'gs://{gcs.bucket}/outputs/from_pth.json'
  args = [f'--checkpoint={weights}', video, video + '.missing', '--views=1', f'--output={out}']
  failed = _run(gcs, cwd, 'cost_jax.predict', *args, expect=1)  # 1: a video failed
  assert f'error: {video}.missing: missing file' in failed.stderr
  result = json.loads(gcs.download('outputs/from_pth.json'))
  assert result['checkpoint'] == weights
  good, missing = result['videos']
  probabilities = [t['probability'] for t in good['top']]
  assert good['ok'] and 0 < sum(probabilities) <= 1 + 1e-6
  assert not missing['ok'] and missing['error'] == 'missing file'

  analysis = f'gs://{gcs.bucket}/outputs/analysis'
  _run(gcs, cwd, 'cost_jax.analyze', f'--checkpoint={costa}', f'--output_dir={analysis}')
  report = json.loads(gcs.download('outputs/analysis/view_weights.json'))
  assert report['kind'] == 'learned' and report['layers']
  assert gcs.download('outputs/analysis/view_weights.png').startswith(b'\x89PNG')
  assert os.listdir(cwd) == []


def _concurrent_reads(gcs, tmp_path, data_dir, parallel_reads):
  code = (
    'from cost_jax.data import input_pipeline\n'
    'from tests import train_testlib\n'
    f'config = train_testlib.tiny_config({data_dir!r})\n'
    f'config.data.parallel_reads = {parallel_reads}\n'
    "ds, n = input_pipeline.create_eval_dataset(config.data, split='train', batch_size=2,"
    " mode='val', process_index=0, process_count=1)\n"
    'print(sum(1 for _ in ds))\n'
  )
  gcs.proxy.reset_counters(counted=lambda target: '.tfrecord' in target)
  gcs.proxy.read_latency_s = 0.3  # a round trip, so that overlapping reads are visible
  try:
    _python(gcs, tmp_path, code)
  finally:
    gcs.proxy.read_latency_s = 0.0
  shards = {t for t in gcs.proxy.objects_read if '/train-' in t}
  assert len(shards) == NUM_TRAIN_SHARDS, gcs.proxy.objects_read
  return gcs.proxy.max_concurrent_reads


def test_shard_reads_overlap_as_configured(gcs, gs_dataset, tmp_path):
  data_dir, _ = gs_dataset
  assert _concurrent_reads(gcs, tmp_path, data_dir, 1) == 1
  assert _concurrent_reads(gcs, tmp_path, data_dir, NUM_TRAIN_SHARDS) >= NUM_TRAIN_SHARDS - 1


@pytest.mark.parametrize(
  'module, args',
  [
    ('cost_jax.main', [f'--config={train_testlib.REPO}/configs/demo_c2d.py', '--workdir=s3://b/r']),
    ('cost_jax.predict', ['--checkpoint=x.pth', 'hdfs://videos/a.mp4']),
    ('data_prep.build', ['--list=l.txt', '--output=s3://bucket/ds', '--split=train']),
  ],
)
def test_an_unsupported_scheme_is_one_line_before_any_write(module, args, tmp_path):
  proc = zygote.run(_command(module, *args), cwd=tmp_path, env=train_testlib.env(), timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1 and 'unsupported scheme' in lines[0], proc.stderr[-2000:]
  assert os.listdir(tmp_path) == []


def test_local_paths_still_publish_whole_files(tmp_path):
  from cost_jax import storage

  target = str(tmp_path / 'a' / 'b.json')
  storage.write_json(target, {'x': np.arange(3).tolist()})
  assert storage.read_json(target) == {'x': [0, 1, 2]}
  assert os.listdir(tmp_path / 'a') == ['b.json']  # no temporary left behind
  storage.move(str(tmp_path / 'a'), str(tmp_path / 'c'))
  assert storage.listdir(str(tmp_path)) == ['c'] and storage.size(str(tmp_path / 'c' / 'b.json'))
