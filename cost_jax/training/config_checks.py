"""Fail-fast validation: every check runs before any data is read or any model is compiled, and
each error says which config key to change and to what."""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from cost_jax import storage
from cost_jax.models.precision import PRECISIONS
from cost_jax.models.recognizer import CONV_IMPLS
from cost_jax.training.metrics import VIEW_AVERAGES, num_test_views

INIT_FIELDS = ('resnet2d', 'mmaction2', 'checkpoint')


class ConfigError(ValueError):
  """A configuration that cannot work; the message says what to change."""


def _divisible(what: str, value: int, by: int, by_what: str, fix: str = '') -> None:
  if by <= 0 or value % by:
    fix = fix or f'set {what.split("=")[0]} to a multiple of {by}'
    raise ConfigError(f'{what}={value} is not divisible by {by_what}={by}; {fix}')


def check_batching(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int,
  num_processes: int = 1,
  mode: str = 'train',
) -> None:
  """Batch sizes vs devices, processes, gradient accumulation and BatchNorm groups.

  mode 'train' checks the train and val batches, mode 'test' the test protocol's.
  """
  if mode == 'train':
    accum, batch, group = config.grad_accum_steps, config.batch_size, config.model.bn_group_size
    if accum < 1:
      raise ConfigError(f'grad_accum_steps={accum} must be >= 1')
    if group < 0:
      raise ConfigError(f'model.bn_group_size={group} must be >= 0 (0 = whole batch)')
    _divisible('batch_size', batch, accum, 'grad_accum_steps')
    micro = f'the micro-batch (batch_size / grad_accum_steps = {batch}/{accum})'
    _divisible(
      micro,
      batch // accum,
      num_devices,
      'the device count',
      f'set batch_size to a multiple of {accum * num_devices}',
    )
    _divisible('batch_size', batch, num_processes * accum, 'process count x grad_accum_steps')
    if group:
      _divisible(
        micro,
        batch // accum,
        group,
        'model.bn_group_size',
        f'set batch_size to a multiple of {accum * group} or change model.bn_group_size',
      )
    _divisible('eval_batch_size', config.eval_batch_size, num_devices, 'the device count')
    _divisible('eval_batch_size', config.eval_batch_size, num_processes, 'the process count')
    return
  _divisible('test_batch_size', config.test_batch_size, num_devices, 'the device count')
  _divisible('test_batch_size', config.test_batch_size, num_processes, 'the process count')
  views = num_test_views(config.data)
  _divisible(
    'data.test_num_clips x 3 crops',
    views,
    config.test_views_per_chunk,
    'test_views_per_chunk',
    'set test_views_per_chunk to a divisor of it',
  )


def check_model_and_optimizer(config: ml_collections.ConfigDict, mode: str = 'train') -> None:
  """Choices and ranges of the model, optimiser, schedule and init settings. The start weights
  (`config.init`) are checked in 'train' mode only: 'test' takes its weights from the workdir or
  --checkpoint."""
  if config.model.precision not in PRECISIONS:
    raise ConfigError(f'model.precision={config.model.precision!r} is not one of {PRECISIONS}')
  if config.model.conv_impl not in CONV_IMPLS:
    raise ConfigError(f'model.conv_impl={config.model.conv_impl!r} is not one of {CONV_IMPLS}')
  if config.test_average not in VIEW_AVERAGES:
    raise ConfigError(f'test_average={config.test_average!r} is not one of {VIEW_AVERAGES}')
  if list(config.optimizer.lr_decay_epochs) != sorted(config.optimizer.lr_decay_epochs):
    raise ConfigError(
      f'optimizer.lr_decay_epochs={config.optimizer.lr_decay_epochs} must be increasing'
    )
  for key in (
    'num_epochs',
    'log_every_steps',
    'eval_every_epochs',
    'checkpoint_every_epochs',
    'keep_checkpoints',
  ):
    if config[key] < 1:
      raise ConfigError(f'{key}={config[key]} must be >= 1')
  if config.checkpoint_every_steps < 0:
    raise ConfigError(
      f'checkpoint_every_steps={config.checkpoint_every_steps} must be >= 0 '
      '(0 = only at epoch ends)'
    )
  if config.model.frozen_stages < -1 or config.model.frozen_stages > 4:
    raise ConfigError(
      f'model.frozen_stages={config.model.frozen_stages} must be -1 (none), 0 '
      '(the stem) or 1..4 (the stem and layer1..k)'
    )
  if config.optimizer.backbone_lr_mult < 0:
    raise ConfigError(
      f'optimizer.backbone_lr_mult={config.optimizer.backbone_lr_mult} must be >= 0'
    )
  key = chosen_init_field(config)
  if mode != 'train':
    return
  if key is None and config.init.get('required', False):
    raise ConfigError(
      'this config fine-tunes: set init.mmaction2 (a .pth or its URL) or '
      'init.checkpoint (a cost_jax workdir) to the weights to start from'
    )
  path = config.init[key] if key else ''
  if path:
    check_init_location(f'init.{key}', path)


# Schemes each init field reads (besides local paths); http(s) and torchvision go through the
# download cache, gs:// objects are copied into it.
_INIT_SCHEMES = {
  'checkpoint': storage.REMOTE_SCHEMES,
  'resnet2d': ('torchvision', 'http', 'https', 'file', *storage.REMOTE_SCHEMES),
  'mmaction2': ('http', 'https', 'file', *storage.REMOTE_SCHEMES),
}


def check_init_location(field: str, path: str) -> None:
  """The init reference's scheme is one the field reads, and a local or bucket file exists
  (downloads are checked when fetched, still before anything is compiled)."""
  found = storage.scheme(path)
  allowed = _INIT_SCHEMES[field.split('.', 1)[1]]
  if found and found not in allowed:
    raise ConfigError(
      f'{field}={path!r}: unsupported scheme {found}:// (use '
      + ', '.join(f'{s}://' for s in allowed)
      + ' or a local path)'
    )
  if (not found or found in storage.REMOTE_SCHEMES) and not storage.exists(path):
    raise ConfigError(f'{field}={path!r}: no such file or directory')


def chosen_init_field(config: ml_collections.ConfigDict) -> str | None:
  """The one `config.init` field that is set (`INIT_FIELDS`), or None."""
  chosen = [k for k in INIT_FIELDS if config.init.get(k, '')]
  if len(chosen) > 1:
    raise ConfigError(
      'set only one of '
      + ', '.join(f'init.{k}' for k in INIT_FIELDS)
      + '; got '
      + ', '.join(f'init.{k}={config.init[k]!r}' for k in chosen)
    )
  return chosen[0] if chosen else None


def check_crops(data: ml_collections.ConfigDict, mode: str) -> None:
  """Crops fit the resized short side (ThreeCrop: equal it, as MMAction2 asserts).

  mode 'train' checks RandomCrop against the smallest rescale, 'val' CenterCrop, 'test' ThreeCrop.
  """

  def fits(crop_key: str, side_key: str, same: bool = False) -> None:
    crop, side = data[crop_key], data[side_key]
    shortest = min(side) if isinstance(side, (tuple, list)) else side
    if crop > shortest or (same and crop != shortest):
      relation = 'equal' if same else 'be at most'
      raise ConfigError(f'data.{crop_key}={crop} must {relation} data.{side_key} ({side})')

  if mode == 'train':
    fits('crop_size', 'train_scale_range')
  elif mode == 'val':
    fits('crop_size', 'val_short_side')
  elif mode == 'test':
    fits('test_crop_size', 'test_short_side', same=True)
  else:
    raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")


def check_data_dir(config: ml_collections.ConfigDict) -> None:
  storage.check(config.data.data_dir, 'data.data_dir')
  if not storage.isdir(config.data.data_dir):
    raise ConfigError(
      f'data.data_dir={config.data.data_dir!r} does not exist; run data_prep '
      'or set data.data_dir to the TFRecord directory'
    )


def check_dataset(
  config: ml_collections.ConfigDict, split: str, info: Mapping[str, Any], *, min_examples: int = 1
) -> None:
  """The split's label count must equal the model's class count."""
  if info['num_classes'] != config.model.num_classes:
    raise ConfigError(
      f'split {split!r} of {config.data.data_dir!r} has {info["num_classes"]} classes but '
      f'model.num_classes={config.model.num_classes}; set model.num_classes='
      f'{info["num_classes"]}'
    )
  if info['num_examples'] < min_examples:
    raise ConfigError(
      f'split {split!r} of {config.data.data_dir!r} has {info["num_examples"]} '
      f'videos; at least {min_examples} are needed'
    )
