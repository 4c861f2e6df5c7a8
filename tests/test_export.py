"""Export: the SavedModel and the jax.export artefact give the JAX model's probabilities."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from cost_jax import export
from cost_jax.inference import loading
from cost_jax.weights import import_mmaction2
from cost_jax.weights.saved import save_model
from tests import fixtures

CLIP = (8, 32, 32, 3)


@pytest.fixture(scope='module')
def saved_dir(tmp_path_factory):
  model_config, variables = import_mmaction2(fixtures.path('costb.pth'))
  return save_model(str(tmp_path_factory.mktemp('costb_saved')), model_config, variables)


@pytest.fixture(scope='module')
def bundle(saved_dir):
  return loading.load_bundle(saved_dir)


@pytest.fixture(scope='module')
def clips():
  return np.random.default_rng(0).integers(0, 256, (3,) + CLIP, dtype=np.uint8)


@pytest.fixture(scope='module')
def expected(bundle, clips):
  """Probabilities of the JAX model itself."""
  probabilities = np.asarray(jax.jit(bundle.probability_fn())(bundle.variables, clips))
  np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-5)
  return probabilities


def test_savedmodel_and_stablehlo_match_jax(bundle, clips, expected, tmp_path):
  paths = export.export(bundle, str(tmp_path), 'both', frames=8, size=32, platforms=['cpu'])

  loaded = tf.saved_model.load(paths['savedmodel'])
  serve = loaded.signatures[export.SIGNATURE]
  assert serve.structured_input_signature[1]['clips'].dtype == tf.uint8
  for batch in (clips, clips[:1]):  # the batch size is free
    got = serve(clips=tf.constant(batch))[export.OUTPUT_NAME].numpy()
    np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-6, rtol=0)

  exported = export.load_stablehlo(str(tmp_path))
  assert exported.platforms == ('cpu',)
  assert exported.in_avals[0].dtype == np.uint8 and exported.in_avals[0].shape[1:] == CLIP
  for batch, want in ((clips, expected), (clips[1:], expected[1:])):
    np.testing.assert_allclose(np.asarray(exported.call(batch)), want, atol=1e-6, rtol=0)

  with open(paths['spec']) as f:
    spec = json.load(f)
  assert spec['input']['shape'] == ['batch', *CLIP] and spec['input']['dtype'] == 'uint8'
  assert spec['output']['shape'] == ['batch', 10] and spec['num_classes'] == 10
  assert spec['label_names'] == [f'class_{i}' for i in range(10)]
  assert spec['formats']['savedmodel'] == export.SAVED_MODEL_DIR
  with open(paths['labels']) as f:
    assert f.read().splitlines() == spec['label_names']


def test_cli_stablehlo_for_several_platforms(saved_dir, bundle, clips, expected, tmp_path, capsys):
  out = tmp_path / 'out'
  assert (
    export.main(
      [
        '--checkpoint',
        saved_dir,
        '--output',
        str(out),
        '--format',
        'stablehlo',
        '--frames',
        '8',
        '--size',
        '32',
        '--platforms',
        'cpu,cuda',
      ]
    )
    == 0
  )
  assert 'stablehlo:' in capsys.readouterr().out
  assert not os.path.exists(out / export.SAVED_MODEL_DIR)
  exported = export.load_stablehlo(str(out))
  assert exported.platforms == ('cpu', 'cuda')
  np.testing.assert_allclose(np.asarray(exported.call(clips)), expected, atol=1e-6, rtol=0)
  with pytest.raises(ValueError, match='format must be one of'):
    export.export(bundle, str(tmp_path / 'x'), 'onnx')
  with pytest.raises(FileNotFoundError, match='no StableHLO export'):
    export.load_stablehlo(str(tmp_path))
