"""The hand-written gradients (`conv_impl='fold2d_custom_grads'`) equal XLA's autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import base
from cost_jax.models import create_model, custom_grads
from cost_jax.models.recognizer import resolve_conv_impl
from cost_jax.training import config_checks
from tests import trees

POOLS = [
  # (window, strides, padding): the stem's max-pool, its temporal variant, and pool2.
  ((1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
  ((2, 3, 3), (2, 2, 2), ((0, 0), (1, 1), (1, 1))),
  ((2, 1, 1), (2, 1, 1), ((0, 0), (0, 0), (0, 0))),
]


@pytest.mark.parametrize('window,strides,padding', POOLS)
def test_max_pool_and_its_gradient_equal_flax_including_ties(window, strides, padding):
  # After a ReLU half the inputs are 0: ties everywhere, which must go to the same element.
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 6, 9, 11, 5)))
  x = x.at[0, :, :4].set(1.0)  # whole windows of equal values
  cotangent = jax.random.normal(jax.random.key(1), nn.max_pool(x, window, strides, padding).shape)

  def plain(x):
    return nn.max_pool(x, window, strides, padding)

  def sliced(x):
    return custom_grads.max_pool(x, window, strides, padding)

  np.testing.assert_array_equal(jax.jit(sliced)(x), jax.jit(plain)(x))
  grad_plain = jax.jit(jax.grad(lambda x: jnp.sum(plain(x) * cotangent)))(x)
  grad_sliced = jax.jit(jax.grad(lambda x: jnp.sum(sliced(x) * cotangent)))(x)
  # Overlapping windows add their shares in another order: equal up to float rounding.
  np.testing.assert_allclose(grad_sliced, grad_plain, rtol=1e-6, atol=1e-6)
  assert jnp.array_equal(grad_sliced != 0, grad_plain != 0)  # the same elements receive it
  assert int(jnp.sum(grad_sliced != 0)) <= cotangent.size  # one element per window, not split


def test_pointwise_value_and_gradients_equal_einsum():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 6))
  kernel = jax.random.normal(jax.random.key(1), (6, 7))
  cotangent = jax.random.normal(jax.random.key(2), (2, 3, 4, 5, 7))

  def loss(fn):
    return jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(fn(x, k) * cotangent), argnums=(0, 1)))

  value, grads = loss(custom_grads.pointwise)(x, kernel)
  want_value, want_grads = loss(lambda x, k: jnp.einsum('nthwc,cd->nthwd', x, k))(x, kernel)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _tiny(arch, conv_impl):
  """Width 4 with 5 blocks: every stage's first block (strided, with its downsample) and one
  identity block; for CoST(b) both inflated and plain blocks, as R50 mixes them."""
  config = base.get_model_config(arch)
  config.update(
    base_channels=4, num_classes=5, dropout_ratio=0.0, bn_group_size=2, conv_impl=conv_impl
  )
  inflated = int(arch != 'c2d')
  config.update(stage_blocks=(1, 2, 1, 1), inflate=((inflated,), (0, inflated), (inflated,), (0,)))
  return config


@pytest.mark.parametrize('arch', ['c2d', 'costb'])
def test_whole_model_train_step_gradients_equal_fold2d(arch):
  clips = jax.random.normal(jax.random.key(0), (4, 4, 32, 32, 3))
  labels = jnp.array([0, 1, 2, 3])
  results = {}
  models = {impl: create_model(_tiny(arch, impl)) for impl in ('fold2d', 'fold2d_custom_grads')}
  # Both implementations have the same variables: initialise once, differentiate both there.
  init = jax.jit(lambda k: models['fold2d'].init({'params': k}, clips[:1]))
  variables = init(jax.random.key(1))
  for impl, model in models.items():

    def loss(params, model=model, variables=variables):
      logits, state = model.apply(
        {**variables, 'params': params}, clips, train=True, mutable=['batch_stats']
      )
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
      return loss, state['batch_stats']

    results[impl] = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
  (loss_a, stats_a), grads_a = results['fold2d']
  (loss_b, stats_b), grads_b = results['fold2d_custom_grads']
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
  for path, a, b in trees.leaf_pairs(stats_a, stats_b):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=path)
  for path, a, b in trees.leaf_pairs(grads_a, grads_b):
    scale = float(jnp.max(jnp.abs(a))) + 1e-12
    np.testing.assert_allclose(b, a, atol=2e-5 * scale, rtol=1e-4, err_msg=path)


def test_auto_resolves_per_platform_and_bad_values_are_config_errors():
  assert resolve_conv_impl('auto', 'cpu') == 'fold2d_custom_grads'
  assert resolve_conv_impl('auto', 'gpu') == 'fold2d'
  assert resolve_conv_impl('conv3d', 'cpu') == 'conv3d'
  with pytest.raises(ValueError, match='conv_impl'):
    resolve_conv_impl('fast')
  config = base.get_config()
  config.model.conv_impl = 'fast'
  with pytest.raises(config_checks.ConfigError, match="model.conv_impl='fast'"):
    config_checks.check_model_and_optimizer(config)
