"""The notebooks run top to bottom on the CPU with a tiny model (nbclient, the venv's kernel)."""

import os
import pathlib
import sys
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient

from cost_jax.inference import builtin_labels
from cost_jax.weights.download import WeightsUnavailableError, resolve_weights
from tests import fixtures, video_factory
from tests.xla_cache import XLA_TEST_FLAGS

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks')
XLA_CACHE = os.path.join(tempfile.gettempdir(), f'cost_jax_notebook_xla_cache_{os.getuid()}')


def _run(name, monkeypatch, tmp_path, **env):
  """Executes notebooks/`name` with COST_JAX_* parameters; returns the executed notebook."""
  # The kernel spec says `python`: make that the interpreter running the tests.
  monkeypatch.setenv('PATH', os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
  monkeypatch.setenv('XLA_FLAGS', ' '.join(XLA_TEST_FLAGS))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', XLA_CACHE)
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
  monkeypatch.setenv('COST_JAX_TINY', '1')
  monkeypatch.setenv('COST_JAX_WORK_DIR', str(tmp_path))
  for key, value in env.items():
    monkeypatch.setenv(f'COST_JAX_{key}', value)
  notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  NotebookClient(
    notebook, timeout=240, kernel_name='python3', resources={'metadata': {'path': NOTEBOOKS}}
  ).execute()
  return notebook


def _outputs(notebook):
  texts, images = [], 0
  for cell in notebook.cells:
    for output in cell.get('outputs', []):
      if output.get('output_type') == 'stream':
        texts.append(output['text'])
      images += 'image/png' in output.get('data', {})
  return ''.join(texts), images


@pytest.mark.parametrize('name', ['inference.ipynb', 'view_coefficients.ipynb'])
def test_notebook_has_colab_setup_cell_and_parameters(name):
  notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  assert 'REPO_URL' in notebook.cells[0].source  # says how to run it on Colab
  install = notebook.cells[1].source
  assert "'google.colab' in sys.modules" in install and 'pip' in install
  # The repository address is one variable, empty until published: no made-up address.
  assert "REPO_URL = ''" in install and 'github.com' not in notebook.cells[0].source + install
  tagged = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1 and 'COST_JAX_CHECKPOINT' in tagged[0].source
  assert all(not c.get('outputs') for c in notebook.cells if c.cell_type == 'code')


def test_inference_notebook_runs_with_a_random_tiny_model(monkeypatch, tmp_path):
  notebook = _run('inference.ipynb', monkeypatch, tmp_path, CHECKPOINT='random', VIEWS='6')
  text, images = _outputs(notebook)
  assert 'random init' in text
  assert '(6 views):' in text and '  5. ' in text  # the top-5 of the synthetic video
  assert images == 1  # frames + top-5 figure
  assert os.path.exists(tmp_path / 'move_right.mp4')


def test_inference_notebook_names_the_classes_of_a_kinetics_checkpoint(monkeypatch, tmp_path):
  """A 400-class MMAction2 checkpoint and a video, both given as (file://) URLs: the top-5 are
  Kinetics-400 names, and the notebook says where they came from."""
  checkpoint = fixtures.checkpoint_with_classes(str(tmp_path), 'costb', 400)
  video = video_factory.write_video(
    str(tmp_path / 'clip.mp4'), video_factory.pattern_frames(20, 32, 40, 0)
  )
  notebook = _run(
    'inference.ipynb',
    monkeypatch,
    tmp_path,
    CHECKPOINT=pathlib.Path(checkpoint).as_uri(),
    VIDEO=pathlib.Path(video).as_uri(),
    VIEWS='3',
  )
  text, images = _outputs(notebook)
  assert 'costb: 400 classes, from ' + checkpoint in text
  assert 'class names: Kinetics-400 (built in;' in text
  assert f'{video} (20, 32, 40, 3)' in text
  top = [line[5:].rsplit(' ', 1)[0].strip() for line in text.splitlines() if line[:5] == '  1. ']
  assert len(top) == 1 and top[0] in builtin_labels.names(builtin_labels.BUILTIN[0])
  assert images == 1


def test_download_hint_names_the_notebook_parameter(tmp_path):
  with pytest.raises(WeightsUnavailableError) as error:
    resolve_weights(f'file://{tmp_path}/costb.pth', field='CHECKPOINT')
  assert "pass an existing file: CHECKPOINT = '/path/to/costb.pth'" in str(error.value)
  with pytest.raises(WeightsUnavailableError, match='--config.init.resnet2d='):
    resolve_weights(str(tmp_path / 'r50.pth'))


def test_view_coefficients_notebook_runs_on_an_mmaction2_checkpoint(monkeypatch, tmp_path):
  notebook = _run(
    'view_coefficients.ipynb', monkeypatch, tmp_path, CHECKPOINT=fixtures.path('costb.pth')
  )
  text, images = _outputs(notebook)
  assert 'CoST(b) view coefficients per layer' in text and 'layer4.2' in text
  assert images == 2  # per layer, and per class
  assert os.path.exists(tmp_path / 'view_coefficients' / 'view_weights.json')
