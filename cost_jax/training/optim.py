"""The official optimiser recipe (mmcv 1.6 runner + torch.optim.SGD) as an optax chain.

Per step, mmcv's OptimizerHook clips the raw gradients to a global L2 norm, then torch's SGD adds
`weight_decay * param` to every gradient, updates the momentum buffer `buf = m * buf + g` and
steps `param -= lr * buf`. The learning rate is `base_lr * global_batch / base_batch_size`,
multiplied by `lr_decay_factor` at each of `lr_decay_epochs` (epoch-wise, as StepLrUpdater), with
an optional per-iteration linear warmup (mmcv's 'linear' warmup, `warmup_ratio` default 0.1).

For fine-tuning, as MMAction2 does it: parameters of frozen stages (`model.frozen_stages`) are
left out of the step entirely (no weight decay, no momentum), and the backbone's steps are
scaled by `backbone_lr_mult` (an `lr_mult` on the backbone in mmcv's paramwise_cfg terms).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def scaled_learning_rate(opt_config: ml_collections.ConfigDict, global_batch_size: int) -> float:
  """The linear scaling rule: base_lr for base_batch_size clips, proportionally otherwise."""
  return opt_config.base_lr * global_batch_size / opt_config.base_batch_size


def create_learning_rate_schedule(
  opt_config: ml_collections.ConfigDict, *, global_batch_size: int, steps_per_epoch: int
) -> optax.Schedule:
  """Learning rate as a function of the optimiser step (0-based, as optax counts)."""
  if steps_per_epoch < 1:
    raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}')
  peak = scaled_learning_rate(opt_config, global_batch_size)
  boundaries = [int(e) * steps_per_epoch for e in opt_config.lr_decay_epochs]
  factor = opt_config.lr_decay_factor
  warmup_steps = int(round(opt_config.warmup_epochs * steps_per_epoch))
  warmup_ratio = opt_config.get('warmup_ratio', 0.1)

  def schedule(step):
    step = jnp.asarray(step)
    passed = jnp.sum(step >= jnp.asarray(boundaries)) if boundaries else 0
    lr = peak * jnp.power(factor, passed)
    if warmup_steps > 0:
      k = (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
      lr = jnp.where(step < warmup_steps, lr * (1.0 - k), lr)
    return lr

  return schedule


FROZEN, BACKBONE, HEAD = 'frozen', 'backbone', 'head'


def _stage_of(module: str) -> int | None:
  """0 for the stem's `conv1`, k for `layer{k}_*`, None for anything else."""
  if module == 'conv1':
    return 0
  if module.startswith('layer') and '_' in module:
    return int(module[len('layer') : module.index('_')])
  return None


def param_groups(params: Any, frozen_stages: int = -1) -> Any:
  """A pytree like `params` labelling each leaf FROZEN, BACKBONE or HEAD."""

  def label(path, _):
    names = [getattr(k, 'key', str(k)) for k in path]
    if names[0] != 'backbone':
      return HEAD
    stage = _stage_of(names[1]) if len(names) > 1 else None
    return FROZEN if stage is not None and stage <= frozen_stages else BACKBONE

  return jax.tree_util.tree_map_with_path(label, params)


def _torch_sgd(
  opt_config: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule
) -> list[optax.GradientTransformation]:
  """+ weight_decay * params -> momentum -> -lr: torch.optim.SGD's step."""
  parts = []
  if opt_config.weight_decay:
    parts.append(optax.add_decayed_weights(opt_config.weight_decay))
  parts.append(
    optax.sgd(learning_rate, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov)
  )
  return parts


def create_optimizer(
  opt_config: ml_collections.ConfigDict,
  learning_rate: optax.ScalarOrSchedule,
  frozen_stages: int = -1,
) -> optax.GradientTransformation:
  """clip (raw gradients) -> + weight_decay * params -> SGD momentum, in torch's order.

  Parameters of stages up to `frozen_stages` get no update at all; the backbone's update is
  scaled by `optimizer.backbone_lr_mult`. Clipping stays global over all parameters, as mmcv
  clips every gradient together (frozen gradients are exactly zero: the model stops them).
  """
  clip = [optax.clip_by_global_norm(opt_config.grad_clip_norm)] if opt_config.grad_clip_norm else []
  step = _torch_sgd(opt_config, learning_rate)
  lr_mult = float(opt_config.get('backbone_lr_mult', 1.0))
  if frozen_stages < 0 and lr_mult == 1.0:
    return optax.chain(*clip, *step)
  groups = {
    FROZEN: optax.set_to_zero(),
    HEAD: optax.chain(*step),
    BACKBONE: optax.chain(*step, optax.scale(lr_mult)),
  }
  return optax.chain(
    *clip, optax.multi_transform(groups, lambda params: param_groups(params, frozen_stages))
  )
