"""The stand-alone CoSTa / CoSTb layers against MMAction2 at every stride."""

import jax
import numpy as np
import pytest

from cost_jax.models.cost_layer import CoSTConv
from cost_jax.weights import keymap
from tests import fixtures

CASES = [(variant, stride) for variant in ('CoSTa', 'CoSTb') for stride in ('111', '122', '222')]


def _flax_params(ref, tag, variant):
  p = lambda name: ref[f'{tag}:param:{name}']
  params = {'kernel': keymap.cost_kernel_to_flax(p('weight')), 'bias': p('bias')}
  if variant == 'CoSTa':
    params['alpha'] = p('alpha')
  else:
    params['fc1'] = {'kernel': p('fc1.weight').T}
    params['fc2'] = {'kernel': p('fc2.weight').T}
  return {'params': params}


@pytest.mark.parametrize('variant,stride', CASES)
@pytest.mark.parametrize('impl', ['fold2d', 'conv3d'])
def test_cost_layer_matches_mmaction2(variant, stride, impl):
  ref = fixtures.load('cost_layers.npz')
  tag = f'{variant}_s{stride}'
  layer = CoSTConv(
    features=6,
    variant=variant.lower(),
    strides=tuple(int(s) for s in stride),
    use_bias=True,
    fold=impl == 'fold2d',
  )
  x = fixtures.ncthw_to_nthwc(ref[f'{tag}:input'])
  out, state = layer.apply(_flax_params(ref, tag, variant), x, mutable=['cost_views'])
  views = state['cost_views']['views'][0]
  for view in ('hw', 'tw', 'th'):
    np.testing.assert_allclose(
      views[view],
      fixtures.ncthw_to_nthwc(ref[f'{tag}:view_{view}']),
      atol=1e-5,
      rtol=0,
      err_msg=view,
    )
  np.testing.assert_allclose(out, fixtures.ncthw_to_nthwc(ref[f'{tag}:output']), atol=1e-5, rtol=0)


def test_costa_default_init_and_view_weights_are_sown():
  layer = CoSTConv(features=4, variant='costa')
  x = jax.random.normal(jax.random.key(0), (1, 4, 6, 6, 3))
  variables = layer.init(jax.random.key(1), x)
  np.testing.assert_allclose(variables['params']['alpha'][:, 0], [0.7, -0.7, -0.7])
  _, state = layer.apply(variables, x, mutable=['intermediates'])
  weights = state['intermediates']['view_weights'][0]
  assert weights.shape == (4, 3)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert weights[0, 0] > weights[0, 1]


def test_costb_view_weights_are_per_sample():
  layer = CoSTConv(features=4, variant='costb')
  x = jax.random.normal(jax.random.key(0), (3, 4, 6, 6, 3))
  variables = layer.init(jax.random.key(1), x)
  variables = jax.tree_util.tree_map(lambda a: a * 30 if a.ndim == 2 else a, variables)
  _, state = layer.apply(variables, x, mutable=['intermediates'])
  weights = state['intermediates']['view_weights'][0]
  assert weights.shape == (3, 4, 3)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert not np.allclose(weights[0], weights[1])


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="'costc'"):
    CoSTConv(features=2, variant='costc').init(jax.random.key(0), np.zeros((1, 2, 4, 4, 1)))
