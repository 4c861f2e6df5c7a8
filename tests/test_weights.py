"""MMAction2 checkpoint import, strict checking, inflation of 2D ResNets, and the import CLI."""

import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import base
from cost_jax.models.recognizer import backbone_architecture
from cost_jax.models.resnet3d import blocks_per_stage
from cost_jax.models.variables import abstract_variables, init_variables
from cost_jax.weights import (
  CheckpointMismatchError,
  import_mmaction2,
  inflate_resnet2d,
  variables_to_state_dict,
)
from cost_jax.weights.mmaction2 import (
  ArchitectureMismatchError,
  check_against,
  infer_model_config,
  variable_shapes,
)
from cost_jax.weights.saved import load_model
from tests import fixtures, train_testlib, trees, zygote


def _flat(variables):
  return traverse_util.flatten_dict({k: variables[k] for k in ('params', 'batch_stats')})


@pytest.mark.parametrize('arch', fixtures.ARCHS)
def test_pth_and_npz_import_identically_and_infer_the_architecture(arch, tmp_path):
  state = fixtures.state_dict(arch)
  np.savez(tmp_path / f'{arch}.npz', **state)
  config_pth, from_pth = import_mmaction2(fixtures.path(f'{arch}.pth'))
  config_npz, from_npz = import_mmaction2(str(tmp_path / f'{arch}.npz'))
  manifest = fixtures.load_json('manifest.json')['archs'][arch]['config']['backbone']
  for config in (config_pth, config_npz):
    assert config.arch == arch
    assert (config.depth, config.base_channels, config.num_classes) == (50, 8, 10)
    assert tuple(config.conv1_kernel) == (1, 7, 7)
    assert [list(s) for s in config.inflate] == (
      [[0] * n for n in (3, 4, 6, 3)] if arch == 'c2d' else manifest['inflate']
    )
  flat_pth, flat_npz = _flat(from_pth), _flat(from_npz)
  assert flat_pth.keys() == flat_npz.keys()
  for key in flat_pth:
    np.testing.assert_array_equal(flat_pth[key], flat_npz[key])
  # Export gives back the original tensors under the original keys.
  exported = variables_to_state_dict(from_pth)
  assert set(exported) == {k for k in state if not k.endswith('num_batches_tracked')}
  for key, value in exported.items():
    np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_import_checks_a_given_config():
  config = base.get_config()
  config.model.update(dict(base_channels=8, num_classes=10, bn_group_size=4, conv_impl='conv3d'))
  model_config, _ = import_mmaction2(fixtures.path('costb.pth'), config=config)
  assert (model_config.bn_group_size, model_config.conv_impl) == (4, 'conv3d')
  config.model.arch = 'costa'
  config.model.num_classes = 400
  with pytest.raises(ValueError) as error:
    import_mmaction2(fixtures.path('costb.pth'), config=config)
  message = str(error.value)
  assert 'costb.pth' in message and 'arch: checkpoint costb, config costa' in message
  assert 'num_classes: checkpoint 10, config 400' in message


def test_strict_import_lists_missing_unexpected_and_mismatched_keys(tmp_path):
  state = fixtures.state_dict('costb')
  del state['backbone.layer3.1.conv1.bn.running_var']
  state['backbone.layer9.extra.weight'] = np.zeros(3, np.float32)
  state['cls_head.fc_cls.bias'] = np.zeros(11, np.float32)
  broken = tmp_path / 'broken.npz'
  np.savez(broken, **state)
  with pytest.raises(CheckpointMismatchError) as error:
    import_mmaction2(str(broken))
  err = error.value
  assert err.missing == ['backbone.layer3.1.conv1.bn.running_var']
  assert err.unexpected == ['backbone.layer9.extra.weight']
  assert err.mismatched == [('cls_head.fc_cls.bias', (11,), (10,))]
  assert 'broken.npz' in str(err)
  # Non-strict import keeps what fits.
  _, variables = import_mmaction2(str(broken), strict=False)
  assert 'bias' not in variables['params']['cls_head']['fc_cls']


def test_truncated_checkpoint_names_the_file(tmp_path):
  data = open(fixtures.path('costa.pth'), 'rb').read()
  truncated = tmp_path / 'truncated.pth'
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match='truncated.pth'):
    import_mmaction2(str(truncated))


def test_not_a_resnet3d_checkpoint_is_refused(tmp_path):
  path = tmp_path / 'other.npz'
  np.savez(path, **{'encoder.weight': np.zeros((2, 2), np.float32)})
  with pytest.raises(ValueError, match="other.npz.*'backbone.conv1.conv.weight'"):
    import_mmaction2(str(path))


def test_stem_strides_come_from_the_stored_config():
  state = fixtures.state_dict('c2d')
  meta = {'config': 'backbone=dict(conv1_stride_t=2, pool1_stride_t=2, depth=50)'}
  config = infer_model_config(state, meta)
  assert (config.conv1_stride_t, config.pool1_stride_t) == (2, 2)
  assert infer_model_config(state).conv1_stride_t == 1


@pytest.mark.parametrize('arch', fixtures.ARCHS)
def test_inflation_matches_mmaction2(arch):
  expected, reference = fixtures.inflation(arch)
  model_config = infer_model_config(fixtures.state_dict(arch))
  variables, report = inflate_resnet2d(
    fixtures.path('resnet2d_tv.pth'), model_config, return_report=True
  )
  assert report.from_2d == {
    k: v for k, v in expected['from_2d'].items() if not k.endswith('num_batches_tracked')
  }
  assert sorted(report.kept_at_init) == sorted(expected['kept_at_init'])
  assert report.unused_2d_keys == expected['unused_2d_keys']
  state = variables_to_state_dict(variables)
  for key in report.from_2d:
    np.testing.assert_allclose(
      state[f'backbone.{key}'], reference[key], rtol=1e-6, atol=1e-7, err_msg=key
    )
  if arch == 'costa':
    np.testing.assert_allclose(
      variables['params']['backbone']['layer2_0']['conv2']['conv']['alpha'][:, 0], [0.7, -0.7, -0.7]
    )
  head = variables['params']['cls_head']['fc_cls']
  assert float(np.abs(head['bias']).max()) == 0.0 and 0.003 < float(np.std(head['kernel'])) < 0.03


def test_inflation_of_a_mismatched_width_is_refused(tmp_path):
  model_config = base.get_model_config('c2d')
  model_config.update(dict(base_channels=4, num_classes=10))
  with pytest.raises(ValueError, match='no tensor matched'):
    inflate_resnet2d(fixtures.path('resnet2d_tv.pth'), model_config)


def test_import_command_line_writes_a_loadable_model(tmp_path):
  out = tmp_path / 'model'
  result = zygote.run(
    [
      sys.executable,
      '-m',
      'cost_jax.tools.import_mmaction2',
      fixtures.path('costb.pth'),
      f'--output={out}',
    ],
    cwd=train_testlib.REPO,
    env=train_testlib.env(),
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'arch=costb depth=50 base_channels=8 num_classes=10' in result.stdout
  model_config, variables = load_model(str(out))
  _, reference = import_mmaction2(fixtures.path('costb.pth'))
  assert model_config.arch == 'costb' and tuple(model_config.conv1_kernel) == (1, 7, 7)
  reference = {k: reference[k] for k in ('batch_stats', 'params')}
  for path, a, b in trees.leaf_pairs(variables, reference):
    np.testing.assert_array_equal(a, b, err_msg=path)


def test_stage_blocks_build_other_block_counts_and_are_inferred_from_a_checkpoint():
  config = base.get_model_config('costb')
  config.update(base_channels=4, num_classes=3, stage_blocks=(1, 2, 1, 1))
  config.inflate = ((1,), (0, 1), (1,), (0,))
  shapes = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
  backbone = shapes['params']['backbone']
  assert {k for k in backbone if k.startswith('layer')} == {
    'layer1_0',
    'layer2_0',
    'layer2_1',
    'layer3_0',
    'layer4_0',
  }
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  inferred = infer_model_config(variables_to_state_dict(zeros))
  assert (inferred.depth, inferred.stage_blocks) == (50, (1, 2, 1, 1))
  assert inferred.inflate == ((1,), (0, 1), (1,), (0,)) and inferred.arch == 'costb'
  r50 = base.get_model_config('costb')
  r50.update(base_channels=4, num_classes=3)
  with pytest.raises(ArchitectureMismatchError, match=r'stage_blocks: checkpoint \(1, 2, 1, 1\)'):
    check_against(inferred, r50, 'ckpt')
  # A model config saved before `stage_blocks` existed (an older workdir's or saved model's
  # config.json) has the depth's blocks, on either side.
  older = {k: v for k, v in r50.items() if k != 'stage_blocks'}
  check_against(older, r50, 'ckpt')
  check_against(r50, older, 'ckpt')
  with pytest.raises(ArchitectureMismatchError, match=r'stage_blocks: checkpoint \(1, 2, 1, 1\)'):
    check_against(inferred, older, 'ckpt')
  with pytest.raises(ValueError, match='expected 4 stages of >= 1 block'):
    blocks_per_stage(50, (1, 0, 1, 1))


def test_variable_shapes_are_cached_by_every_field_that_changes_them():
  """`variable_shapes` caches by the backbone's architecture and the class count: every other
  model field leaves the shapes as they are, and the key's fields do change them."""
  config = base.get_model_config('costb')
  config.update(base_channels=4, num_classes=3, stage_blocks=(1, 1, 1, 1))
  config.inflate = ((1,), (1,), (1,), (1,))

  def uncached(cfg):
    return {k: v.shape for k, v in traverse_util.flatten_dict(abstract_variables(cfg)).items()}

  def varied(field, value):
    changed = config.copy_and_resolve_references()
    changed[field] = value
    return changed

  reference = uncached(config)
  assert variable_shapes(config) == reference
  others = dict(
    conv_impl=('fold2d', 'fold2d_custom_grads', 'conv3d'),
    dropout_ratio=(0.0,),
    bn_group_size=(0, 2),
    precision=('bfloat16', 'float32_full'),
    remat=(True,),
    frozen_stages=(0, 4),
    norm_eval=(True,),
  )
  key_fields = set(backbone_architecture(config)) | {'num_classes'}
  assert set(others) | key_fields == set(config), set(config) - set(others) - key_fields
  for field, values in others.items():
    for value in values:
      assert uncached(varied(field, value)) == reference, (field, value)
  for field, value in (('num_classes', 5), ('base_channels', 8), ('arch', 'i3d')):
    changed = varied(field, value)
    assert variable_shapes(changed) == uncached(changed) != reference, field
