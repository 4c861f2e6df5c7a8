"""Model parity with MMAction2 0.24.1 (reference outputs in tests/testdata/mmaction2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors, traverse_util
from flax import linen as nn

from configs import base
from cost_jax.models import count_params, create_model
from cost_jax.models.conv import Conv3D
from cost_jax.models.cost_layer import CoSTConv
from cost_jax.weights import mmaction2
from tests import fixtures, trees


def _model_and_variables(arch, **overrides):
  state = fixtures.state_dict(arch)
  config = mmaction2.infer_model_config(state)
  config.update(overrides)
  return config, create_model(config), mmaction2.state_dict_to_variables(state, config)


@pytest.mark.parametrize('arch', fixtures.ARCHS)
@pytest.mark.parametrize('impl', ['fold2d', 'fold2d_custom_grads', 'conv3d'])
def test_eval_logits_and_stages_match_mmaction2(arch, impl):
  io = fixtures.io(arch)
  _, model, variables = _model_and_variables(arch, conv_impl=impl)
  clips = fixtures.ncthw_to_nthwc(io['input'])
  logits, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']))(
    variables, clips
  )
  np.testing.assert_allclose(logits, io['eval_logits'], atol=1e-4, rtol=0)
  stages = state['intermediates']['backbone']
  for stage in ('maxpool', 'layer1', 'layer2', 'layer3'):
    np.testing.assert_allclose(
      stages[stage][0],
      fixtures.ncthw_to_nthwc(io[f'eval_stage_{stage}']),
      atol=1e-4,
      rtol=0,
      err_msg=stage,
    )
  np.testing.assert_allclose(
    stages['layer4'][0], fixtures.ncthw_to_nthwc(io['eval_feat']), atol=1e-4, rtol=0
  )
  # Recognizer3D's test path: the 2 clips are one video; softmax averaged over clips.
  score = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0, keepdims=True)
  np.testing.assert_allclose(score, io['eval_test_score'], atol=1e-5, rtol=0)


@pytest.mark.parametrize('arch', fixtures.ARCHS)
def test_train_mode_outputs_and_running_stats_match_mmaction2(arch):
  io = fixtures.io(arch)
  # The reference switched dropout off and used batch statistics over the whole batch of 2.
  _, model, variables = _model_and_variables(arch, dropout_ratio=0.0, bn_group_size=0)
  clips = fixtures.ncthw_to_nthwc(io['input'])
  logits, new_state = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats', 'intermediates'])
  )(variables, clips)
  feat = new_state['intermediates']['backbone']['layer4'][0]
  np.testing.assert_allclose(logits, io['train_logits'], atol=1e-3, rtol=0)
  np.testing.assert_allclose(feat, fixtures.ncthw_to_nthwc(io['train_feat']), atol=1e-2, rtol=0)
  labels = io['train_labels']
  loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
  np.testing.assert_allclose(loss, io['train_loss_cls'], atol=1e-4)
  updated = mmaction2.variables_to_state_dict({'batch_stats': new_state['batch_stats']})
  checked = 0
  for key, value in io.items():
    if key.startswith('train_bn_after:') and not key.endswith('num_batches_tracked'):
      np.testing.assert_allclose(
        updated[key.split(':', 1)[1]], value, atol=1e-3, rtol=1e-3, err_msg=key
      )
      checked += 1
  assert checked == 2 * sum(k.endswith('.bn.running_mean') for k in updated)
  # The guard of that check: in train mode every running statistic moves with the batch.
  old = traverse_util.flatten_dict(variables['batch_stats'])
  new = traverse_util.flatten_dict(new_state['batch_stats'])
  assert old.keys() == new.keys()
  assert all(not np.allclose(old[k], new[k]) for k in old)


EXPECTED_MILLIONS = {'c2d': 24.33, 'i3d': 29.01, 'costa': 24.33, 'costb': 25.09}


def _full_size_shapes(model, clips):
  """(logits, variables) of `model` at the shape of `clips`, from one trace (no compile): the
  variables hold the backbone's stage outputs ('intermediates')."""
  init = lambda x: model.init_with_output({'params': jax.random.key(0)}, x, mutable=True)
  return jax.eval_shape(init, clips)


@pytest.mark.parametrize('arch', fixtures.ARCHS)
def test_full_size_parameter_counts_and_shapes(arch):
  config = base.get_model_config(arch)
  clips = jax.ShapeDtypeStruct((2, 8, 224, 224, 3), jnp.float32)
  logits, variables = _full_size_shapes(create_model(config), clips)
  assert round(count_params(variables['params']) / 1e6, 2) == EXPECTED_MILLIONS[arch]
  assert logits.shape == (2, 400)
  assert variables['intermediates']['backbone']['layer4'][0].shape == (2, 4, 7, 7, 2048)


@pytest.mark.parametrize(
  'config_name,frames,feat_t',
  [('costb_r101_k400', 8, 4), ('costb_r101_32f_k400', 32, 4), ('costb_mit', 8, 4)],
)
def test_config_variants_build_at_full_size(config_name, frames, feat_t):
  import importlib

  config = importlib.import_module(f'configs.{config_name}').get_config()
  clips = jax.ShapeDtypeStruct((1, frames, 224, 224, 3), jnp.float32)
  logits, variables = _full_size_shapes(create_model(config.model), clips)
  assert variables['intermediates']['backbone']['layer4'][0].shape == (1, feat_t, 7, 7, 2048)
  assert logits.shape == (1, config.model.num_classes)
  stem = variables['params']['backbone']['conv1']['conv']['kernel']
  assert stem.shape[:3] == tuple(config.model.conv1_kernel)


def test_depth_152_builds():
  config = base.get_model_config('costb')
  config.depth, config.inflate = 152, (1, 1, 1, 1)  # an int per stage, as MMAction2 allows
  model = create_model(config)
  clips = jax.ShapeDtypeStruct((1, 8, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init({'params': jax.random.key(0)}, x), clips)
  blocks = [k for k in variables['params']['backbone'] if k.startswith('layer3_')]
  assert len(blocks) == 36


def _tiny(arch, **overrides):
  config = base.get_model_config(arch)
  config.update(
    dict(base_channels=4, num_classes=5, dropout_ratio=0.0, bn_group_size=0, **overrides)
  )
  return config


@pytest.mark.parametrize(
  'layer',
  [
    CoSTConv(6, 'costa', (1, 1, 1), fold=True),
    CoSTConv(6, 'costb', (2, 2, 2), fold=True),
    CoSTConv(6, 'costb', (1, 2, 2), fold=True),
    Conv3D(6, (1, 3, 3), (2, 2, 2), (0, 1, 1)),
    Conv3D(6, (3, 1, 1), (2, 2, 2), (1, 0, 0)),
    Conv3D(6, (1, 7, 7), (1, 2, 2), (0, 3, 3)),
    Conv3D(6, (1, 1, 1), (2, 2, 2), (0, 0, 0)),
    Conv3D(6, (1, 1, 1), (2, 2, 2), (0, 0, 0), custom_grads=True),
  ],
  ids=lambda layer: (
    f'{type(layer).__name__}-{layer.strides}'
    + ('-custom' if getattr(layer, 'custom_grads', 0) else '')
  ),
)
def test_fold2d_and_conv3d_have_equal_gradients(layer):
  x = jax.random.normal(jax.random.key(1), (2, 5, 9, 8, 4))
  variables = layer.init(jax.random.key(0), x)
  target = jax.random.normal(jax.random.key(2), layer.apply(variables, x).shape)
  grads = {}
  for fold in (True, False):
    module = layer.clone(fold=fold)

    def loss(v, x, module=module):
      return jnp.sum(module.apply(v, x) * target)

    grads[fold] = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
  for path, a, b in trees.leaf_pairs(grads[True], grads[False]):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, err_msg=path)


def test_remat_recomputes_blocks_with_equal_gradients():
  from cost_jax.models.resnet3d import Bottleneck

  x = jax.random.normal(jax.random.key(1), (2, 4, 8, 8, 16))
  block = Bottleneck(4, (1, 2, 2), 'costb', True, True)
  variables = jax.jit(lambda k: block.init(k, x, False))(jax.random.key(0))
  grads = []
  for cls in (Bottleneck, nn.remat(Bottleneck, static_argnums=(2,))):
    module = cls(4, (1, 2, 2), 'costb', True, True)
    loss = lambda p, m=module: jnp.sum(
      m.apply({**variables, 'params': p}, x, True, mutable=['batch_stats'])[0] ** 2
    )
    grads.append(jax.jit(jax.grad(loss))(variables['params']))
  for path, a, b in trees.leaf_pairs(*grads):
    # Float rounding of sums over the batch: relative to each gradient's own scale.
    np.testing.assert_allclose(
      a, b, atol=1e-6 * float(jnp.max(jnp.abs(b))), rtol=1e-5, err_msg=path
    )
  # The config switch puts every block of the backbone under remat (one block per stage here).
  clips = jnp.zeros((2, 4, 16, 16, 3))
  model = create_model(_tiny('costb', remat=True, stage_blocks=(1, 1, 1, 1), inflate=((1,),) * 4))
  params = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, clips))
  jaxpr = str(
    jax.make_jaxpr(
      lambda v: jax.grad(
        lambda p: jnp.sum(
          model.apply({**v, 'params': p}, clips, train=True, mutable=['batch_stats'])[0]
        )
      )(v['params'])
    )(params)
  )
  assert jaxpr.count('remat') + jaxpr.count('checkpoint') >= 4


def test_bf16_compute_keeps_float32_parameters_and_logits():
  clips = fixtures.ncthw_to_nthwc(fixtures.io('costb')['input'])[:, :, :32, :32]
  _, plain, variables = _model_and_variables('costb')
  _, bf16, _ = _model_and_variables('costb', precision='bfloat16')
  logits_bf16 = jax.jit(bf16.apply)(variables, clips)
  logits_f32 = jax.jit(plain.apply)(variables, clips)
  assert logits_bf16.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
  np.testing.assert_allclose(logits_bf16, logits_f32, atol=0.1)
  assert not np.array_equal(logits_bf16, logits_f32)


def test_bn_groups_normalise_each_group_separately():
  from cost_jax.models.norm import BatchNorm

  x = (
    jax.random.normal(jax.random.key(0), (4, 3, 5, 5, 6))
    * jnp.arange(1, 5)[:, None, None, None, None]
  )
  grouped = BatchNorm(group_size=2)
  variables = grouped.init(jax.random.key(1), x, train=False)
  y, state = grouped.apply(variables, x, train=True, mutable=['batch_stats'])
  whole = BatchNorm(group_size=0)
  y0, s0 = whole.apply(variables, x[:2], train=True, mutable=['batch_stats'])
  y1, s1 = whole.apply(variables, x[2:], train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(y, jnp.concatenate([y0, y1]), atol=1e-5)
  for name in ('mean', 'var'):
    np.testing.assert_allclose(
      state['batch_stats'][name], (s0['batch_stats'][name] + s1['batch_stats'][name]) / 2, atol=1e-6
    )
  y_all, _ = whole.apply(variables, x, train=True, mutable=['batch_stats'])
  assert not np.allclose(y, y_all, atol=1e-3)
  with pytest.raises(ValueError, match='bn_group_size=3'):
    BatchNorm(group_size=3).apply(variables, x, train=True, mutable=['batch_stats'])


def test_bn_statistics_stay_accurate_when_a_channel_mean_dwarfs_its_spread():
  # One-pass E[x^2] - E[x]^2 in float32 loses the variance when |mean| >> std (here 1e4 x);
  # the shifted statistics must still match a float64 two-pass reference, values and gradients.
  from cost_jax.models.norm import BatchNorm

  rng = np.random.default_rng(0)
  spread = rng.uniform(0.5, 2.0, 4)
  x = (rng.standard_normal((2, 3, 5, 5, 4)) * spread + np.array([0.0, 3.0, -300.0, 1e4])).astype(
    np.float32
  )
  weights = rng.standard_normal(x.shape)
  x64 = x.astype(np.float64)
  mean = x64.mean(axis=(0, 1, 2, 3))
  var = x64.var(axis=(0, 1, 2, 3))
  want = (x64 - mean) / np.sqrt(var + 1e-5)
  # d/dx of sum(weights * normalised): the closed form of BatchNorm's input gradient.
  g = weights / np.sqrt(var + 1e-5)
  want_grad = g - g.mean(axis=(0, 1, 2, 3)) - want * (g * want).mean(axis=(0, 1, 2, 3))

  bn = BatchNorm()
  variables = bn.init(jax.random.key(0), x, train=False)

  def loss(x):
    y, state = bn.apply(variables, x, train=True, mutable=['batch_stats'])
    return jnp.sum(y * weights.astype(np.float32)), (y, state)

  grad, (y, state) = jax.jit(jax.grad(loss, has_aux=True))(jnp.asarray(x))
  np.testing.assert_allclose(y, want, atol=2e-3)  # 1e4 in float32 is itself rounded to 1e-3
  np.testing.assert_allclose(y[..., :3], want[..., :3], atol=2e-5)
  np.testing.assert_allclose(grad, want_grad, atol=2e-3)
  np.testing.assert_allclose(
    state['batch_stats']['var'], 0.9 + 0.1 * var * x[..., 0].size / (x[..., 0].size - 1), rtol=1e-4
  )


@pytest.mark.parametrize(
  'layer,name',
  [
    (Conv3D(6, (1, 3, 3), padding=(0, 1, 1)), 'kernel'),
    (CoSTConv(6, 'costa', (1, 1, 1)), 'alpha'),
    (CoSTConv(6, 'costb', (1, 1, 1)), 'kernel'),
  ],
  ids=['Conv3D', 'CoSTConv-costa', 'CoSTConv-costb'],
)
def test_a_parameter_of_another_shape_is_refused_naming_it(layer, name):
  """The modules check existing parameters' shapes themselves (models/params.py), not by
  tracing the initialiser as Flax's `param` does: a wrong shape still stops apply."""
  x = jnp.zeros((1, 4, 8, 8, 4))
  variables = layer.init(jax.random.key(0), x)
  wrong = jax.tree_util.tree_map(lambda v: v, variables)
  shape = wrong['params'][name].shape
  wrong['params'][name] = jnp.zeros(shape[:-1] + (shape[-1] + 1,))
  layer.apply(variables, x)
  with pytest.raises(errors.ScopeParamShapeError, match=rf'"{name}" in "/"'):
    layer.apply(wrong, x)
