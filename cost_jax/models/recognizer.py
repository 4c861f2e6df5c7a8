"""`Recognizer3D` (backbone + head) and its construction from a model config."""

from __future__ import annotations

from typing import Any, Mapping

import jax
from flax import linen as nn

from cost_jax.models import precision as precision_lib
from cost_jax.models.head import I3DHead
from cost_jax.models.resnet3d import ResNet3d

# How convolutions (and their gradients) are computed; every one gives the same numbers.
#   fold2d: kernel axes of 1 folded into the batch, CoST views as 2D convolutions; XLA's gradients.
#   fold2d_custom_grads: fold2d, with the gradients of pointwise convolutions and max-pooling
#     written by hand (`custom_grads`); fastest on CPU (benchmarks/vs_pytorch.py).
#   conv3d: plain 3D convolutions.
#   auto: the fastest measured for the platform the model runs on.
CONV_IMPLS = ('auto', 'fold2d', 'fold2d_custom_grads', 'conv3d')
# Measured on CPU only; the GPU/TPU choice is unmeasured (today's fold2d) until a device run.
AUTO_CONV_IMPL = {'cpu': 'fold2d_custom_grads'}


def resolve_conv_impl(conv_impl: str, platform: str | None = None) -> str:
  """The formulation `conv_impl` stands for on `platform` (default: JAX's default backend)."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'model.conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}')
  if conv_impl != 'auto':
    return conv_impl
  return AUTO_CONV_IMPL.get(platform or jax.default_backend(), 'fold2d')


class Recognizer3D(nn.Module):
  """Clips (N, T, H, W, 3) float32, already normalised -> logits (N, num_classes) float32.

  `matmul_level`: the `jax.lax.Precision` its convolutions and matmuls are traced at
  (`precision.matmul_level`).
  """

  backbone: ResNet3d
  cls_head: I3DHead
  matmul_level: str = 'highest'

  def __call__(self, clips: jax.Array, train: bool = False) -> jax.Array:
    with precision_lib.scope(self.matmul_level):
      return self.cls_head(self.backbone(clips, train), train)


def backbone_architecture(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """The fields of a model config that fix the backbone's layers and weights, with defaults."""
  cfg = model_config
  return dict(
    arch=cfg['arch'],
    depth=cfg['depth'],
    stage_blocks=tuple(cfg.get('stage_blocks', ())),
    base_channels=cfg['base_channels'],
    conv1_kernel=tuple(cfg.get('conv1_kernel', (1, 7, 7))),
    conv1_stride_t=cfg.get('conv1_stride_t', 1),
    pool1_stride_t=cfg.get('pool1_stride_t', 1),
    with_pool2=cfg.get('with_pool2', True),
    inflate=cfg['inflate'],
    spatial_strides=tuple(cfg.get('spatial_strides', (1, 2, 2, 2))),
    temporal_strides=tuple(cfg.get('temporal_strides', (1, 1, 1, 1))),
  )


def create_model(model_config: Mapping[str, Any]) -> Recognizer3D:
  """Builds the recognizer described by `config.model` (see configs/base.py)."""
  cfg = dict(model_config)
  conv_impl = resolve_conv_impl(cfg.get('conv_impl', 'auto'))
  precision = precision_lib.precision_of(cfg)
  backbone = ResNet3d(
    **backbone_architecture(cfg),
    fold=conv_impl != 'conv3d',
    custom_grads=conv_impl == 'fold2d_custom_grads',
    bn_group_size=cfg.get('bn_group_size', 0),
    remat=cfg.get('remat', False),
    frozen_stages=cfg.get('frozen_stages', -1),
    norm_eval=cfg.get('norm_eval', False),
    dtype=precision_lib.compute_dtype(precision),
    parent=None,
  )
  head = I3DHead(cfg['num_classes'], cfg.get('dropout_ratio', 0.5), parent=None)
  return Recognizer3D(
    backbone=backbone, cls_head=head, matmul_level=precision_lib.matmul_level(precision)
  )


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
