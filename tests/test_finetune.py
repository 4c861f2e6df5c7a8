"""Fine-tuning: a new head for other classes, frozen stages, norm_eval, backbone lr multiplier,
and which checkpoint the test protocol evaluates."""

import functools
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from configs import base, finetune_list
from cost_jax.checkpoints import saving
from cost_jax.inference import loading
from cost_jax.models import create_model
from cost_jax.training import config_checks, init_weights, loop, optim, steps
from cost_jax.training.config_checks import ConfigError
from cost_jax.training.state import create_train_state
from cost_jax.weights import import_mmaction2, saved
from cost_jax.weights.mmaction2 import ArchitectureMismatchError
from tests import fixtures, train_testlib, trees


def _fixture_config(num_classes: int, arch: str = 'costb') -> ml_collections.ConfigDict:
  """A full config whose model is the reference checkpoints' (width 8), with `num_classes`."""
  config = base.get_config()
  config.model = base.get_model_config(arch)
  config.model.update(base_channels=8, num_classes=num_classes, bn_group_size=0)
  config.init.resnet2d = ''
  return config


def _flat(tree):
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, tree), sep='/')


def _assert_backbone_kept(got, want):
  for collection in ('params', 'batch_stats'):
    flat_got, flat_want = _flat(got[collection]), _flat(want[collection])
    backbone = [k for k in flat_want if k.startswith('backbone/')]
    assert backbone and all(k in flat_got for k in backbone)
    for key in backbone:
      np.testing.assert_array_equal(flat_got[key], flat_want[key], err_msg=key)


def _assert_fresh_head(head, num_classes, features=256):
  assert head['kernel'].shape == (features, num_classes) and head['bias'].shape == (num_classes,)
  assert float(np.abs(head['bias']).max()) == 0.0
  assert 0.005 < float(np.std(head['kernel'])) < 0.02  # I3DHead: normal, std 0.01


def test_mmaction2_checkpoint_with_other_classes_keeps_backbone_and_replaces_head(caplog):
  path = fixtures.path('costb.pth')
  _, reference = import_mmaction2(path)
  config = _fixture_config(num_classes=7)
  with caplog.at_level(logging.WARNING):
    variables = init_weights.initial_variables(config, init_weights.InitSource('mmaction2', path))
  _assert_backbone_kept(variables, reference)
  _assert_fresh_head(variables['params']['cls_head']['fc_cls'], 7)
  assert 'kept the backbone' in caplog.text
  assert 'for 7 classes (the checkpoint has 10)' in caplog.text
  # The same class count keeps the head as it is.
  same = init_weights.initial_variables(
    _fixture_config(num_classes=10), init_weights.InitSource('mmaction2', path)
  )
  np.testing.assert_array_equal(
    same['params']['cls_head']['fc_cls']['kernel'],
    reference['params']['cls_head']['fc_cls']['kernel'],
  )
  # Any other difference stays an error naming the field.
  with pytest.raises(ArchitectureMismatchError, match=r'arch: checkpoint costb, config costa'):
    init_weights.initial_variables(
      _fixture_config(7, 'costa'), init_weights.InitSource('mmaction2', path)
    )


def test_cost_jax_checkpoint_with_other_classes(tmp_path):
  model_config, reference = import_mmaction2(fixtures.path('costa.pth'))
  directory = saved.save_model(str(tmp_path / 'saved'), model_config, reference)
  config = _fixture_config(num_classes=3, arch='costa')
  config.init.checkpoint = directory
  source = init_weights.resolve(config)
  assert source == init_weights.InitSource('checkpoint', directory)
  variables = init_weights.initial_variables(config, source)
  _assert_backbone_kept(variables, reference)
  _assert_fresh_head(variables['params']['cls_head']['fc_cls'], 3)
  config.model.depth = 101
  with pytest.raises(ArchitectureMismatchError, match='depth: checkpoint 50, config 101'):
    init_weights.initial_variables(config, source)


def test_init_choices_are_checked(caplog):
  config = _fixture_config(num_classes=4)
  with caplog.at_level(logging.WARNING):
    assert init_weights.resolve(config) is None
  assert 'RANDOM weights' in caplog.text
  config.init.update(mmaction2='a.pth', checkpoint='b')
  with pytest.raises(
    ConfigError,
    match="only one of init.resnet2d, init.mmaction2, init.checkpoint; got init.mmaction2='a.pth'",
  ):
    init_weights.resolve(config)
  config.init.update(mmaction2='torchvision://resnet50', checkpoint='')
  with pytest.raises(ConfigError, match='set init.resnet2d instead'):
    init_weights.resolve(config)
  # The fine-tuning config refuses to start from random weights.
  ft = finetune_list.get_config()
  assert ft.init.required and not ft.init.mmaction2 and ft.optimizer.backbone_lr_mult == 0.1
  with pytest.raises(ConfigError, match='set init.mmaction2 .* or init.checkpoint'):
    config_checks.check_model_and_optimizer(ft)
  # ... but its step 3, --mode=test, takes the weights from the workdir: no start weights needed,
  # and start weights that are not on this machine are not looked for.
  config_checks.check_model_and_optimizer(ft, mode='test')
  ft.init.mmaction2 = '/nowhere/costb.pth'
  with pytest.raises(ConfigError, match='no such file'):
    config_checks.check_model_and_optimizer(ft)
  config_checks.check_model_and_optimizer(ft, mode='test')


def _tiny_model_config(**overrides):
  """C2D (the fastest to compile; freezing and norm_eval are arch-independent) at width 4 with
  one block per stage: every stage, the stem and the head are there, as freezing counts them."""
  config = base.get_model_config('c2d')
  config.update(base_channels=4, num_classes=3, bn_group_size=0, dropout_ratio=0.0, **overrides)
  config.update(stage_blocks=(1, 1, 1, 1), inflate=((0,),) * 4)
  return config


def test_frozen_stages_get_no_update_and_keep_their_statistics():
  config = base.get_config()
  config.model = _tiny_model_config(frozen_stages=1)
  config.optimizer.update(base_lr=0.5, base_batch_size=4)
  model = create_model(config.model)
  tx = optim.create_optimizer(config.optimizer, 0.5, frozen_stages=1)
  clips = jax.random.uniform(jax.random.key(1), (4, 4, 32, 32, 3))
  state = create_train_state(model, tx, jax.random.key(0), clips[:1])
  batch = {'clips': clips[None], 'label': jnp.array([[0, 1, 2, 0]])}
  step = jax.jit(
    functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=lambda _: 0.5, data_config=config.data
    )
  )
  new_state, metrics = step(state, batch)
  assert np.isfinite(float(metrics['loss']))
  for collection in ('params', 'batch_stats'):
    before, after = _flat(getattr(state, collection)), _flat(getattr(new_state, collection))
    assert any(key.startswith(('backbone/conv1/', 'backbone/layer1_0/')) for key in before)
    for key in before:
      frozen = key.startswith(('backbone/conv1/', 'backbone/layer1_'))
      changed = not np.array_equal(before[key], after[key])
      if frozen:
        assert not changed, f'frozen {collection} {key} changed'
    for key in (
      'backbone/layer2_0/conv1/bn/' + ('scale' if collection == 'params' else 'mean'),
      'backbone/layer4_0/conv3/bn/' + ('bias' if collection == 'params' else 'var'),
    ):
      assert not np.array_equal(before[key], after[key]), f'{collection} {key} did not train'
  assert not np.array_equal(
    _flat(state.params)['cls_head/fc_cls/kernel'], _flat(new_state.params)['cls_head/fc_cls/kernel']
  )


def test_norm_eval_keeps_every_batchnorm_in_inference_mode():
  config = _tiny_model_config(norm_eval=True)
  model = create_model(config)
  clips = jax.random.uniform(jax.random.key(1), (2, 4, 32, 32, 3))
  variables = model.init(jax.random.key(0), clips, train=False)
  variables = {
    'params': variables['params'],
    'batch_stats': jax.tree.map(lambda x: x + 0.3, variables['batch_stats']),
  }
  trained, mutated = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
    variables, clips
  )
  evaluated = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, clips)
  np.testing.assert_allclose(trained, evaluated, rtol=1e-6, atol=1e-6)
  for path, a, b in trees.leaf_pairs(mutated['batch_stats'], variables['batch_stats']):
    np.testing.assert_array_equal(a, b, err_msg=path)


def test_backbone_lr_multiplier_scales_only_the_backbone_step():
  params = {
    'backbone': {
      'conv1': {'kernel': jnp.ones((3, 3))},
      'layer1_0': {'kernel': jnp.full((4,), 2.0)},
      'layer3_1': {'kernel': jnp.full((2, 2), -1.0)},
    },
    'cls_head': {'fc_cls': {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}},
  }
  grads = jax.tree.map(lambda p: 30.0 * jnp.ones_like(p), params)  # clipped at norm 40
  labels = optim.param_groups(params, frozen_stages=0)
  assert labels['backbone']['conv1']['kernel'] == optim.FROZEN
  assert labels['backbone']['layer1_0']['kernel'] == optim.BACKBONE
  assert labels['cls_head']['fc_cls']['bias'] == optim.HEAD
  cfg = base.get_config().optimizer

  def two_steps(mult, frozen):
    cfg.backbone_lr_mult = mult
    tx = optim.create_optimizer(cfg, 0.1, frozen_stages=frozen)
    state, p, out = tx.init(params), params, []
    for _ in range(2):
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
      out.append(updates)
    return out

  plain, scaled, frozen = two_steps(1.0, -1), two_steps(0.1, -1), two_steps(0.1, 0)
  # From the same parameters (the first step), the backbone's step is 0.1x, the head's the same.
  for module in ('layer1_0', 'layer3_1', 'conv1'):
    np.testing.assert_allclose(
      scaled[0]['backbone'][module]['kernel'],
      0.1 * plain[0]['backbone'][module]['kernel'],
      rtol=1e-6,
    )
  for step in range(2):
    for leaf in ('kernel', 'bias'):
      np.testing.assert_allclose(
        scaled[step]['cls_head']['fc_cls'][leaf], plain[step]['cls_head']['fc_cls'][leaf], rtol=1e-6
      )
    assert float(jnp.abs(frozen[step]['backbone']['conv1']['kernel']).max()) == 0.0
    assert float(jnp.abs(frozen[step]['backbone']['layer1_0']['kernel']).min()) > 0.0
  # torch: the clipped gradient plus weight decay, times lr (momentum buffer starts empty).
  norm = np.sqrt(sum(30.0**2 * np.size(p) for p in jax.tree.leaves(params)))
  expected = -0.1 * (30.0 * 40.0 / norm + 1e-4 * 2.0)
  np.testing.assert_allclose(plain[0]['backbone']['layer1_0']['kernel'], expected, rtol=1e-5)


def _save_steps(directory, bests):
  manager = saving.create_manager(directory, keep=5, async_save=False)
  for step, best in bests:
    state = {'w': np.full(2, step, np.float32)}
    saving.save(
      manager,
      state,
      {'step': step, 'best': best},
      metrics={'val_top1': 0.1 * step} if best else None,
    )
  manager.wait_until_finished()
  manager.close()


def test_evaluation_uses_the_best_checkpoint_by_val_top1(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  best = {'val_top1': 0.75, 'step': 2}
  _save_steps(directory, [(1, {'val_top1': 0.5, 'step': 1}), (2, best), (3, best)])
  step_dir, why = loading.select_step_directory(str(tmp_path))
  assert step_dir == os.path.join(directory, '2') and 'best val top-1 (0.7500)' in why
  assert loading.select_step_directory(os.path.join(directory, '3'))[0].endswith('3')
  shutil.rmtree(os.path.join(directory, '2'))
  step_dir, why = loading.select_step_directory(directory)
  assert step_dir.endswith('3') and 'best step 2 is no longer on disk' in why
  unvalidated = str(tmp_path / 'other')
  _save_steps(unvalidated, [(4, None), (6, None)])
  step_dir, why = loading.select_step_directory(unvalidated)
  assert step_dir.endswith('6') and 'no validation' in why


def test_fine_tuning_run_from_an_mmaction2_checkpoint(tmp_path):
  """The whole flow on tiny data: 10-class checkpoint -> 4 classes, layer1 frozen."""
  data_dir = str(tmp_path / 'data')
  train_testlib.write_tiny_dataset(data_dir)
  config = train_testlib.tiny_config(data_dir, arch='costb', r50=True)
  config.model.update(base_channels=8, frozen_stages=1)
  config.init.mmaction2 = fixtures.path('costb.pth')
  config.optimizer.backbone_lr_mult = 0.1
  config.num_epochs = 1
  workdir = str(tmp_path / 'work')
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['step'] == 2
  state = train_testlib.load_state(workdir, 2)
  _, reference = import_mmaction2(fixtures.path('costb.pth'))
  got, want = _flat(state['params']), _flat(reference['params'])
  assert got['cls_head/fc_cls/kernel'].shape == (256, 4)
  np.testing.assert_array_equal(
    got['backbone/layer1_2/conv2/conv/kernel'], want['backbone/layer1_2/conv2/conv/kernel']
  )  # frozen
  assert not np.array_equal(
    got['backbone/layer3_0/conv2/conv/kernel'], want['backbone/layer3_0/conv2/conv/kernel']
  )  # fine-tuned
