"""The optimiser recipe against a step-by-step re-statement of mmcv + torch.optim.SGD."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import base
from cost_jax.training import optim


def _opt_config(**overrides) -> ml_collections.ConfigDict:
  config = base.get_config().optimizer
  config.update(overrides)
  return config


def test_linear_scaling_and_epochwise_step_decay():
  cfg = _opt_config(lr_decay_epochs=(2, 4), lr_decay_factor=0.1)
  assert optim.scaled_learning_rate(cfg, 16) == pytest.approx(0.0025)  # 0.01 * 16 / 64
  lr = optim.create_learning_rate_schedule(cfg, global_batch_size=16, steps_per_epoch=10)
  got = [float(lr(s)) for s in (0, 19, 20, 39, 40, 99)]
  np.testing.assert_allclose(got, [2.5e-3, 2.5e-3, 2.5e-4, 2.5e-4, 2.5e-5, 2.5e-5], rtol=1e-5)


def test_linear_warmup_per_iteration_as_mmcv():
  cfg = _opt_config(warmup_epochs=1, warmup_ratio=0.1, lr_decay_epochs=(3,))
  lr = optim.create_learning_rate_schedule(cfg, global_batch_size=64, steps_per_epoch=10)
  # mmcv 'linear': lr * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio)) for i < warmup_iters.
  expected = [0.01 * (1 - (1 - i / 10) * 0.9) for i in range(10)] + [0.01, 0.01]
  np.testing.assert_allclose([float(lr(i)) for i in range(12)], expected, rtol=1e-5)
  assert float(lr(0)) == pytest.approx(0.001)


def _torch_like_sgd(params, grads_seq, lrs, *, momentum, weight_decay, max_norm):
  """What mmcv's OptimizerHook + torch.optim.SGD do, written out with numpy."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  buf = None
  for grads, lr in zip(grads_seq, lrs):
    total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    coef = min(max_norm / (total + 1e-6), 1.0)  # clip_grad_norm_ on raw grads
    d_p = {k: grads[k] * coef + weight_decay * p[k] for k in p}  # SGD adds wd in step()
    buf = d_p if buf is None else {k: momentum * buf[k] + d_p[k] for k in p}
    p = {k: p[k] - lr * buf[k] for k in p}
  return p


def test_sgd_matches_torch_order_clip_then_decay_then_momentum():
  rng = np.random.default_rng(0)
  params = {
    'w': rng.normal(size=(3, 4)).astype(np.float32) * 30,  # large: wd matters
    'b': rng.normal(size=(4,)).astype(np.float32),
  }
  grads_seq = [
    {k: (rng.normal(size=v.shape) * s).astype(np.float32) for k, v in params.items()}
    for s in (50.0, 0.1, 80.0)
  ]  # steps 0 and 2 get clipped
  cfg = _opt_config(weight_decay=1e-2, grad_clip_norm=40.0, lr_decay_epochs=(1,))
  lr = optim.create_learning_rate_schedule(cfg, global_batch_size=64, steps_per_epoch=2)
  tx = optim.create_optimizer(cfg, lr)

  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for grads in grads_seq:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, p)
    p = optax.apply_updates(p, updates)

  lrs = [float(lr(i)) for i in range(3)]
  assert lrs[2] == pytest.approx(lrs[0] * 0.1)
  expected = _torch_like_sgd(params, grads_seq, lrs, momentum=0.9, weight_decay=1e-2, max_norm=40.0)
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), expected[k], rtol=2e-5, atol=1e-5)

  # Decaying before clipping (the wrong order) gives visibly different parameters.
  wrong = optax.chain(
    optax.add_decayed_weights(1e-2), optax.clip_by_global_norm(40.0), optax.sgd(lr, momentum=0.9)
  )
  q, wstate = jax.tree.map(jnp.asarray, params), None
  wstate = wrong.init(q)
  for grads in grads_seq:
    updates, wstate = wrong.update(jax.tree.map(jnp.asarray, grads), wstate, q)
    q = optax.apply_updates(q, updates)
  assert np.abs(np.asarray(q['w']) - expected['w']).max() > 1e-3
