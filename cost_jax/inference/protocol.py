"""The test protocol: how a video becomes views (sampling, resizing, cropping, normalisation) and
how their scores are averaged. `OFFICIAL_PROTOCOL` is the official CoST one; configs take it."""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from cost_jax.models.defaults import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from cost_jax.training import metrics

# 8 frames every 8th; val: short side 256, centre crop 224; test: 10 clips x ThreeCrop of 256.
OFFICIAL_PROTOCOL = dict(
  clip_len=8,
  frame_interval=8,
  test_num_clips=10,
  val_short_side=256,
  crop_size=224,  # RandomCrop (train) and CenterCrop (val)
  test_short_side=256,
  test_crop_size=256,  # ThreeCrop
  mean=IMAGENET_MEAN_RGB,
  std=IMAGENET_STD_RGB,
)
PROTOCOL_FIELDS = tuple(OFFICIAL_PROTOCOL)


def default_protocol(config: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The test protocol of a full config (its `data` fields), or the official one."""
  data = config['data'] if config is not None else OFFICIAL_PROTOCOL
  protocol = ml_collections.ConfigDict({k: data[k] for k in PROTOCOL_FIELDS})
  protocol.views_per_chunk = int(config.get('test_views_per_chunk', 10)) if config else 10
  protocol.average = str(config.get('test_average', 'prob')) if config else 'prob'
  return protocol


def check_protocol(protocol: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the protocol field that cannot work."""
  for key in (
    'clip_len',
    'frame_interval',
    'test_num_clips',
    'val_short_side',
    'crop_size',
    'test_short_side',
    'test_crop_size',
    'views_per_chunk',
  ):
    if int(protocol[key]) < 1:
      raise ValueError(f'protocol.{key}={protocol[key]!r} must be >= 1')
  if protocol.test_short_side != protocol.test_crop_size:
    raise ValueError(
      f'ThreeCrop needs test_short_side == test_crop_size, got {protocol.test_short_side} '
      f'and {protocol.test_crop_size}'
    )
  if protocol.crop_size > protocol.val_short_side:
    raise ValueError(
      f'protocol.crop_size={protocol.crop_size} exceeds val_short_side={protocol.val_short_side}'
    )
  if protocol.average not in metrics.VIEW_AVERAGES:
    raise ValueError(f'protocol.average={protocol.average!r} is not one of {metrics.VIEW_AVERAGES}')
