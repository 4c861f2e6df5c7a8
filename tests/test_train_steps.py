"""The pure steps on a tiny real model: gradient accumulation, chunked multi-view testing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from cost_jax.models import create_model
from cost_jax.training import metrics, optim, sharding, steps
from cost_jax.training.state import create_train_state

T, SIZE, CLASSES = 4, 32, 3


@pytest.fixture(scope='module')
def setup():
  config = base.get_config()
  config.model = base.get_model_config('c2d')
  config.model.update(base_channels=4, num_classes=CLASSES, bn_group_size=4, dropout_ratio=0.0)
  config.model.update(stage_blocks=(1, 1, 1, 1), inflate=((0,),) * 4)  # the steps, not the depth
  model = create_model(config.model)
  lr = optim.create_learning_rate_schedule(config.optimizer, global_batch_size=8, steps_per_epoch=1)
  tx = optim.create_optimizer(config.optimizer, lr)
  build = functools.partial(
    create_train_state, model, tx, sample_clips=jnp.zeros((1, T, SIZE, SIZE, 3))
  )
  state = jax.jit(build)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 256, (8, T, SIZE, SIZE, 3), dtype=np.uint8)
  labels = rng.integers(0, CLASSES, (8,)).astype(np.int32)
  return dict(
    config=config, model=model, tx=tx, lr=lr, state=state, build=build, clips=clips, labels=labels
  )


def _train(setup, num_micro):
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=setup['model'],
      tx=setup['tx'],
      learning_rate_fn=setup['lr'],
      data_config=setup['config'].data,
    )
  )
  batch = sharding.split_micro_batches(
    {'clips': setup['clips'], 'label': setup['labels']}, num_micro
  )
  return step(setup['state'], batch)


def test_gradient_accumulation_equals_one_big_batch(setup):
  # BatchNorm groups of 4: one batch of 8 and two micro-batches of 4 normalise the same groups,
  # so the mean loss and the averaged gradient (hence the new parameters) agree.
  whole, m_whole = _train(setup, 1)
  accum, m_accum = _train(setup, 2)
  assert int(whole.step) == int(accum.step) == 1
  np.testing.assert_allclose(float(m_accum['loss']), float(m_whole['loss']), rtol=1e-5)
  np.testing.assert_allclose(float(m_accum['grad_norm']), float(m_whole['grad_norm']), rtol=1e-4)
  moved = jax.tree.map(
    lambda a, b: float(jnp.abs(a - b).max()), whole.params, setup['state'].params
  )
  assert max(jax.tree.leaves(moved)) > 1e-4  # the step did change params
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), accum.params, whole.params
  )
  # Running statistics: the micro-batches update them one after the other.
  first = jax.tree.leaves(whole.batch_stats)[0]
  assert not np.allclose(jax.tree.leaves(accum.batch_stats)[0], first)
  assert np.isfinite(float(m_whole['param_norm']))


def test_chunked_multi_view_scores_match_per_view_evaluation(setup):
  variables = steps.inference_variables(setup['state'])
  views = setup['clips'][:6].reshape(1, 6, T, SIZE, SIZE, 3).repeat(2, axis=0)
  views[1] = views[1, ::-1]  # 2 videos x 6 views
  data = setup['config'].data
  logits = jax.jit(functools.partial(steps.eval_step, model=setup['model'], data_config=data))(
    variables, {'clips': views.reshape(12, T, SIZE, SIZE, 3)}
  )
  logits = np.asarray(logits).reshape(2, 6, CLASSES)
  for average, chunks in (('prob', (1, 6)), ('score', (3,))):
    expected = np.asarray(metrics.average_views(jnp.asarray(logits), average))
    for chunk in chunks:
      got = jax.jit(
        functools.partial(
          steps.test_step,
          model=setup['model'],
          data_config=data,
          views_per_chunk=chunk,
          average=average,
        )
      )(variables, {'clips': views})
      np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_initial_weights_must_fit_the_model(setup):
  good = {'params': setup['state'].params, 'batch_stats': setup['state'].batch_stats}
  bad = jax.tree.map(lambda x: x, good)
  bad['params'] = dict(bad['params'])
  bad['params'].pop('cls_head')
  with pytest.raises(ValueError, match='cls_head'):
    jax.eval_shape(lambda k: setup['build'](k, variables=bad), jax.random.PRNGKey(0))
  state = jax.eval_shape(lambda k: setup['build'](k, variables=good), jax.random.PRNGKey(0))
  assert jax.tree.structure(state.params) == jax.tree.structure(good['params'])


def test_micro_batch_split_and_global_arrays():
  batch = {'clips': np.zeros((6, 2), np.uint8), 'label': np.arange(6, dtype=np.int64)}
  split = sharding.split_micro_batches(batch, 3)
  assert split['clips'].shape == (3, 2, 2)
  np.testing.assert_array_equal(split['label'][1], [2, 3])
  with pytest.raises(ValueError, match='grad_accum_steps=4'):
    sharding.split_micro_batches(batch, 4)
  mesh = sharding.create_mesh()
  arrays = sharding.host_to_global(split, mesh, batch_axis=1)
  assert arrays['label'].dtype == jnp.int32 and arrays['label'].shape == (3, 2)
  np.testing.assert_array_equal(sharding.to_host(arrays['label']), split['label'])


def test_multi_view_score_matches_mmaction2_recognizer3d():
  """Recognizer3D's test path on the reference c2d: two clips of one video, softmax averaged."""
  from cost_jax.weights import import_mmaction2
  from tests import fixtures

  model_config, variables = import_mmaction2(fixtures.path('c2d.pth'))
  io = fixtures.io('c2d')
  clips = fixtures.ncthw_to_nthwc(io['input'])[None]  # (1 video, 2 views, ...)
  data = base.get_config().data
  for chunk in (1, 2):
    score = jax.jit(
      functools.partial(
        steps.test_step, model=create_model(model_config), data_config=data, views_per_chunk=chunk
      )
    )(variables, {'clips': jnp.asarray(clips)})
    np.testing.assert_allclose(np.asarray(score), io['eval_test_score'], rtol=1e-5, atol=1e-6)
