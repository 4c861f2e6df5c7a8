"""Where training starts (`config.init`): an inflated ImageNet ResNet (the official recipe), an
MMAction2 / CoST checkpoint, a cost_jax checkpoint, or random weights.

`resolve` runs before anything is compiled: it picks the one field that is set and turns its
reference into a local file (downloading a remote one into the cache), so that an offline machine
fails at once with one line. `initial_variables` then builds the variables. A checkpoint trained
for another number of classes keeps its backbone and gets a new head (fine-tuning); every other
mismatch stays an error that lists the keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from cost_jax import storage
from cost_jax.inference import loading
from cost_jax.models.head import I3DHead
from cost_jax.training import config_checks
from cost_jax.training.config_checks import ConfigError
from cost_jax.weights import download
from cost_jax.weights.inflate import inflate_resnet2d
from cost_jax.weights.mmaction2 import check_against, import_mmaction2


@dataclasses.dataclass(frozen=True)
class InitSource:
  """The `config.init` field in use and the local file or directory it resolved to."""

  field: str
  path: str


def resolve(config: ml_collections.ConfigDict) -> InitSource | None:
  """The local weights to start from, downloaded if remote (raises WeightsUnavailableError)."""
  field = config_checks.chosen_init_field(config)
  if field is None:
    logging.warning(
      'config.init is empty: training starts from RANDOM weights. The official '
      "recipe starts from ImageNet: init.resnet2d='torchvision://resnet50'."
    )
    return None
  ref = config.init[field]
  if field == 'checkpoint':
    config_checks.check_init_location('init.checkpoint', ref)
    return InitSource(field, storage.absolute(ref))
  if field == 'mmaction2' and ref.startswith('torchvision://'):
    raise ConfigError(
      f'init.mmaction2={ref!r}: torchvision:// names 2D ImageNet ResNets; set init.resnet2d instead'
    )
  return InitSource(field, download.resolve_weights(ref, field=f'init.{field}'))


def replace_head(
  variables: dict[str, Any], model_config: ml_collections.ConfigDict, source: str, seed: int = 0
) -> dict[str, Any]:
  """`variables` with a freshly initialised head for `model_config.num_classes` classes."""
  old = variables['params']['cls_head']['fc_cls']['kernel'].shape  # (features, classes)
  head = I3DHead(int(model_config.num_classes), model_config.dropout_ratio)
  fresh = head.init(jax.random.key(seed), jnp.zeros((1, 1, 1, 1, old[0])), train=False)
  backbone = variables['params']['backbone']
  logging.warning(
    '%s: kept the backbone (%d parameter tensors, %d BatchNorm statistics); re-initialised the '
    'head cls_head.fc_cls for %d classes (the checkpoint has %d)',
    source,
    len(jax.tree_util.tree_leaves(backbone)),
    len(jax.tree_util.tree_leaves(variables.get('batch_stats', {}))),
    int(model_config.num_classes),
    old[1],
  )
  return {
    'params': {**variables['params'], 'cls_head': fresh['params']},
    'batch_stats': variables.get('batch_stats', {}),
  }


def _from_cost_jax(
  path: str, model_config: ml_collections.ConfigDict
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  bundle = loading.load_bundle(path)
  check_against(bundle.model_config, model_config, path, ignore=('num_classes',))
  logging.info('init.checkpoint: starting from %s', bundle.source)
  return bundle.model_config, bundle.variables


def initial_variables(
  config: ml_collections.ConfigDict, source: InitSource | None, seed: int = 0
) -> dict[str, Any] | None:
  """{'params', 'batch_stats'} to start from (None: the model's own random init)."""
  if source is None:
    return None
  if source.field == 'resnet2d':
    return inflate_resnet2d(source.path, config.model)
  if source.field == 'mmaction2':
    found_config, variables = import_mmaction2(source.path, config, any_num_classes=True)
  else:
    found_config, variables = _from_cost_jax(source.path, config.model)
  if int(found_config.num_classes) != int(config.model.num_classes):
    variables = replace_head(variables, config.model, source.path, seed)
  return variables
