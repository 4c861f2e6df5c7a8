"""Class names of the official models: the shipped Kinetics-400 / Moments in Time lists, chosen
automatically for 400 / 339-class checkpoints by predict, analyze and export; --labels=FILE
overrides them, --labels=none gives class_<i>, a checkpoint's own label map wins."""

import json
import os
import random
import shutil
import subprocess
import sys
import zipfile

import pytest

from cost_jax import analyze, export, predict
from cost_jax.inference import builtin_labels, loading
from cost_jax.weights import import_mmaction2
from cost_jax.weights.saved import save_model
from data_prep import kinetics400, mit
from tests import fixtures, video_factory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K400, MIT = builtin_labels.BUILTIN
# predict at toy size: one centre clip of 4 frames, 28 pixels.
TINY_FLAGS = [
  '--views=1',
  '--clip_len=4',
  '--frame_interval=2',
  '--short_side=32',
  '--crop_size=28',
]


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """{num_classes: .npz} of the costb fixture with a random 400 / 339-way head."""
  root = str(tmp_path_factory.mktemp('official'))
  return {n: fixtures.checkpoint_with_classes(root, 'costb', n) for n in (400, 339)}


@pytest.fixture(scope='module')
def video(tmp_path_factory):
  root = tmp_path_factory.mktemp('videos')
  return video_factory.write_video(
    str(root / 'clip.mp4'), video_factory.pattern_frames(20, 32, 40, 0)
  )


def _file_lines(entry):
  with open(builtin_labels.path(entry), encoding='utf-8') as f:
    text = f.read()
  assert text.endswith('\n') and '\r' not in text
  return text.splitlines()


def test_shipped_files_have_every_class_once_in_the_official_order():
  for entry, count, first, last in (
    (K400, 400, 'abseiling', 'zumba'),
    (MIT, 339, 'clapping', 'typing'),
  ):
    names = _file_lines(entry)
    assert len(names) == count and len(set(names)) == count
    assert all(n and n == n.strip() for n in names)
    assert (names[0], names[-1]) == (first, last)
    assert builtin_labels.names(entry) == names
    assert builtin_labels.for_num_classes(count) == entry
  assert builtin_labels.for_num_classes(10) is None
  # data_prep numbers the classes the same way: Kinetics by MMAction2's sort key over the names
  # of the train csv (in any order), Moments in Time by the index in moments_categories.txt.
  k400 = _file_lines(K400)
  shuffled = random.Random(0).sample(k400, len(k400))
  assert kinetics400.label_map_from_rows([{'label': f'"{n}"'} for n in shuffled]) == k400
  names = _file_lines(MIT)
  assert names != sorted(names)  # the dataset's own order, not alphabetical
  assert 'playing+music' in names and 'adult+female+speaking' in names


def test_mit_order_is_the_categories_file_order(tmp_path):
  names = _file_lines(MIT)
  categories = tmp_path / 'moments_categories.txt'
  lines = [f'{n},{i}' for i, n in enumerate(names)]
  categories.write_text('\n'.join(random.Random(1).sample(lines, len(lines))) + '\n')
  assert mit.read_categories(str(categories)) == names


def test_order_warning_for_the_official_names_in_another_order():
  k400 = builtin_labels.names(K400)
  assert builtin_labels.order_warning(k400) is None
  assert builtin_labels.order_warning([f'c{i}' for i in range(400)]) is None  # another dataset
  assert builtin_labels.order_warning(['a', 'b']) is None
  swapped = [k400[1], k400[0]] + k400[2:]
  warning = builtin_labels.order_warning(swapped)
  assert 'Kinetics-400' in warning and "class 0: 'air drumming' here, 'abseiling' there" in warning


def test_predict_names_a_400_class_checkpoint(checkpoints, video, capsys):
  assert predict.main(['--checkpoint', checkpoints[400], *TINY_FLAGS, video]) == 0
  captured = capsys.readouterr()
  note = 'class names: Kinetics-400 (built in; --labels to override, --labels=none for indices)'
  assert note in captured.err.splitlines()
  top = [line.split()[1:-1] for line in captured.out.splitlines() if line.startswith('  ')]
  assert len(top) == 5
  assert all(' '.join(words) in set(builtin_labels.names(K400)) for words in top)


def test_predict_json_names_a_339_class_checkpoint(checkpoints, video, capsys):
  assert predict.main(['--checkpoint', checkpoints[339], '--json', *TINY_FLAGS, video]) == 0
  captured = capsys.readouterr()
  report = json.loads(captured.out)
  assert report['num_classes'] == 339 and report['label_source'].startswith('Moments in Time')
  names = builtin_labels.names(MIT)
  (result,) = report['videos']
  assert [t['label'] for t in result['top']] == [names[t['index']] for t in result['top']]
  assert 'class names: Moments in Time (built in' in captured.err


def test_labels_none_and_labels_file(checkpoints, video, tmp_path, capsys):
  labels = tmp_path / 'mine.txt'
  labels.write_text(''.join(f'my class {i}\n' for i in range(400)))
  assert (
    predict.main(
      ['--checkpoint', checkpoints[400], f'--labels={labels}', '--json', *TINY_FLAGS, video]
    )
    == 0
  )
  captured = capsys.readouterr()
  report = json.loads(captured.out)
  assert report['label_source'] == f'{labels} (--labels)'
  top = report['videos'][0]['top']
  assert [t['label'] for t in top] == [f'my class {t["index"]}' for t in top]
  assert f'class names: {labels} (--labels)' in captured.err

  assert predict.main(['--checkpoint', checkpoints[400], '--labels=none', *TINY_FLAGS, video]) == 0
  captured = capsys.readouterr()
  assert 'class names: class indices (--labels=none)' in captured.err
  lines = [line.split() for line in captured.out.splitlines() if line.startswith('  ')]
  assert len(lines) == 5 and all(words[1].startswith('class_') for words in lines)
  bundle = loading.load_bundle(checkpoints[400], labels='none')
  assert bundle.label_names == [f'class_{i}' for i in range(400)]


def test_a_label_file_of_the_wrong_size_is_one_line_and_status_2(
  checkpoints, video, tmp_path, capsys
):
  labels = tmp_path / 'three.txt'
  labels.write_text('a\nb\nc\n')
  assert predict.main(['--checkpoint', checkpoints[400], f'--labels={labels}', video]) == 2
  captured = capsys.readouterr()
  assert captured.err == f'error: {labels}: 3 class names, but the model has 400 classes\n'
  assert captured.out == ''


def test_a_checkpoint_with_its_own_label_map_keeps_it(checkpoints, tmp_path):
  model_config, variables = import_mmaction2(checkpoints[400])
  directory = save_model(str(tmp_path / 'saved'), model_config, variables)
  assert loading.load_bundle(directory).label_source.startswith('Kinetics-400 (built in')
  own = [f'fine-tuned {i}' for i in range(400)]
  with open(os.path.join(directory, 'label_map.txt'), 'w') as f:
    f.write('\n'.join(own) + '\n')
  bundle = loading.load_bundle(directory)
  assert bundle.label_names == own
  assert bundle.label_source == os.path.join(directory, 'label_map.txt')
  # Next to a .pth / .npz too.
  npz = shutil.copy(checkpoints[339], tmp_path / 'mit.npz')
  (tmp_path / 'labels.txt').write_text(''.join(f'm{i}\n' for i in range(339)))
  assert loading.load_bundle(str(npz)).label_names[:2] == ['m0', 'm1']


def test_export_metadata_carries_the_names(checkpoints, tmp_path, capsys):
  out = tmp_path / 'exported'
  argv = ['--checkpoint', checkpoints[339], '--output', str(out), '--format=stablehlo']
  assert export.main(argv + ['--frames=4', '--size=32', '--platforms=cpu']) == 0
  assert 'class names: Moments in Time (built in' in capsys.readouterr().err
  with open(out / export.SPEC_FILE) as f:
    spec = json.load(f)
  assert spec['label_names'] == builtin_labels.names(MIT)
  assert spec['label_source'].startswith('Moments in Time (built in')
  with open(out / export.LABELS_FILE) as f:
    assert f.read().splitlines() == builtin_labels.names(MIT)


def test_analyze_says_where_the_names_came_from(tmp_path, capsys):
  costa = fixtures.checkpoint_with_classes(str(tmp_path), 'costa', 400)
  assert analyze.main(['--checkpoint', costa, '--output_dir', str(tmp_path / 'out')]) == 0
  assert 'class names: Kinetics-400 (built in' in capsys.readouterr().err
  bundle = loading.load_bundle(costa)
  assert bundle.label_names == builtin_labels.names(K400)


def test_the_wheel_ships_the_label_files(tmp_path):
  """pyproject.toml declares the label files as package data: a wheel built from the package
  holds them (built offline, without build isolation, from a copy of the sources)."""
  pytest.importorskip('setuptools')
  source = tmp_path / 'src'
  source.mkdir()
  shutil.copy(os.path.join(REPO, 'pyproject.toml'), source)
  shutil.copytree(
    os.path.join(REPO, 'cost_jax'),
    source / 'cost_jax',
    ignore=shutil.ignore_patterns('__pycache__', '*.egg-info'),
  )
  run = subprocess.run(
    [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index']
    + ['-q', str(source), '-w', str(tmp_path / 'wheel')],
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  (wheel,) = (tmp_path / 'wheel').glob('*.whl')
  with zipfile.ZipFile(wheel) as zf:
    for entry in builtin_labels.BUILTIN:
      data = zf.read(f'cost_jax/inference/labels/{entry.file}').decode()
      assert data.splitlines() == builtin_labels.names(entry)
