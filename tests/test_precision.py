"""The precision policy (`model.precision`): which arithmetic each convolution and matmul gets."""

import re

import jax
import jax.numpy as jnp
import pytest

from configs import base
from cost_jax.models import create_model
from cost_jax.models import precision as precision_lib


def _tiny(arch, **overrides):
  config = base.get_model_config(arch)
  config.update(dict(base_channels=4, num_classes=5, dropout_ratio=0.0, bn_group_size=0))
  config.update(overrides)
  return config


def test_levels_per_platform_are_the_documented_ones():
  level = precision_lib.matmul_level
  assert level('float32', 'gpu') == 'default'  # TF32 on Ampere+, as cuDNN in the official runs
  assert level('float32', 'tpu') == 'high'  # three bfloat16 passes
  assert level('float32', 'cpu') == 'highest'
  assert {level('float32_full', p) for p in ('gpu', 'tpu', 'cpu')} == {'highest'}
  assert precision_lib.compute_dtype('bfloat16') == jnp.bfloat16
  assert precision_lib.compute_dtype('float32_full') == jnp.float32
  with pytest.raises(ValueError, match="model.precision must be one of .* got 'tf32'"):
    precision_lib.compute_dtype('tf32')
  # Configs saved before the field existed name a compute dtype instead.
  assert precision_lib.precision_of({'dtype': 'bfloat16'}) == 'bfloat16'
  assert precision_lib.precision_of({'dtype': 'float32'}) == 'float32'


def _train_gradient_jaxpr(model, clips, variables):
  def loss(params, batch_stats):
    logits, _ = model.apply(
      {'params': params, 'batch_stats': batch_stats}, clips, train=True, mutable=['batch_stats']
    )
    return jnp.sum(logits)

  return str(jax.make_jaxpr(jax.grad(loss))(variables['params'], variables['batch_stats']))


@pytest.mark.parametrize('impl', ['fold2d_custom_grads', 'conv3d'])
def test_every_convolution_and_matmul_of_the_train_step_carries_the_models_level(impl):
  """Forward, XLA's transposes and the hand-written backward passes alike, whatever the
  process-wide default says."""
  clips = jnp.zeros((2, 4, 16, 16, 3))
  model = create_model(_tiny('costb', conv_impl=impl)).clone(matmul_level='high')
  variables = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, clips))
  with jax.default_matmul_precision('bfloat16'):
    jaxpr = _train_gradient_jaxpr(model, clips, variables)
  ops = re.findall(r'(dot_general|conv_general_dilated)\[(.*?)\] ', jaxpr, flags=re.S)
  assert len(ops) > 60
  levels = [re.search(r'precision=\(?(Precision\.\w+|None)', params).group(1) for _, params in ops]
  assert set(levels) == {'Precision.HIGH'}, sorted(set(levels))
  # The hand-written 1x1x1 backward pass is among them (its weight-gradient einsum 'mc,md->cd').
  if impl == 'fold2d_custom_grads':
    assert 'optimization_barrier' in jaxpr


def test_bfloat16_computes_activations_in_bfloat16_and_keeps_the_rest_float32():
  """Dtypes are fixed when tracing: checked on shapes alone (the values: test_models)."""
  clips = jax.ShapeDtypeStruct((2, 4, 16, 16, 3), jnp.float32)
  model = create_model(_tiny('costb', precision='bfloat16'))
  variables = jax.eval_shape(lambda x: model.init({'params': jax.random.key(0)}, x), clips)
  jaxpr = _train_gradient_jaxpr(model, jnp.zeros(clips.shape), variables)
  convs = re.findall(r'= conv_general_dilated\[', jaxpr)
  bf16_convs = re.findall(r'bf16\[[\d,]*\] = conv_general_dilated\[', jaxpr)
  assert convs and len(bf16_convs) == len(convs)

  def train(v, x):
    out, state = model.apply(v, x, train=True, mutable=['batch_stats', 'intermediates'])
    grads = jax.grad(
      lambda p: jnp.sum(model.apply({**v, 'params': p}, x, train=True, mutable=['batch_stats'])[0])
    )(v['params'])
    return out, state, grads

  out, state, grads = jax.eval_shape(train, variables, clips)
  float32 = {jnp.dtype(jnp.float32)}
  assert out.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(variables['params'])} == float32
  assert {x.dtype for x in jax.tree.leaves(state['batch_stats'])} == float32
  view_weights = [
    v
    for path, v in jax.tree_util.tree_leaves_with_path(state['intermediates'])
    if 'view_weights' in jax.tree_util.keystr(path)
  ]
  assert len(view_weights) == 8 and {w.dtype for w in view_weights} == float32
  stage_outputs = [
    v
    for path, v in jax.tree_util.tree_leaves_with_path(state['intermediates'])
    if 'layer' in jax.tree_util.keystr(path) and 'view_weights' not in jax.tree_util.keystr(path)
  ]
  assert stage_outputs and {x.dtype for x in stage_outputs} == {jnp.dtype(jnp.bfloat16)}
  assert {g.dtype for g in jax.tree.leaves(grads)} == float32
