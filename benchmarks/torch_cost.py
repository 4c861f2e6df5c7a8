"""Plain-PyTorch mirror of the official CoST model (MMAction2 0.24.1), for benchmarks only.

`Recognizer3D(ResNet3dCoST, I3DHead)` as hikvision-research/cost builds it, in NCDHW, without
mmcv / mmaction: every `ConvModule` is Conv3d (no bias) -> BatchNorm3d -> optional ReLU, the
bottlenecks are 'pytorch' style (the stride sits on conv2), and the CoST layers compute their
three views from one shared (Cout, Cin, 1, k, k) weight as three `conv3d` calls, as the official
`CoSTa` / `CoSTb` modules do. Module names follow the MMAction2 state-dict keys, so a state dict
from `cost_jax.weights.mmaction2.variables_to_state_dict` loads with `strict=True` (see
`load_mmaction2_state_dict`, which adds BatchNorm's `num_batches_tracked` counters).

The model is built from a `cost_jax` model config (`configs.base.get_model_config(arch)`), so the
blocks that hold a CoST layer are exactly those of the JAX model. Torch is an optional dependency
(`requirements-bench.txt`); only the benchmarks import this module.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# The block layout is the JAX model's own (a benchmark may import the package).
from cost_jax.models.recognizer import backbone_architecture
from cost_jax.models.resnet3d import ARCHS, EXPANSION, STAGE_BLOCKS, block_convs, expand_inflate


def _triple(v) -> tuple[int, int, int]:
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def view_convolutions(
  x: torch.Tensor, weight: torch.Tensor, stride, padding: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
  """The H-W, T-W and T-H views of `x` (N, C, T, H, W) with one (Cout, Cin, 1, k, k) weight.

  The shared (k, k) kernel runs over (H, W) in the first view, (T, W) in the second and (T, H) in
  the third: the weight is used as (1, k, k), (k, 1, k) and (k, k, 1) 3D kernels, each padded by
  `padding` along its two kernel axes only.
  """
  kernel = weight[:, :, 0]  # (Cout, Cin, k, k)
  p = padding
  hw = F.conv3d(x, kernel[:, :, None], None, stride, (0, p, p))
  tw = F.conv3d(x, kernel[:, :, :, None], None, stride, (p, 0, p))
  th = F.conv3d(x, kernel[:, :, :, :, None], None, stride, (p, p, 0))
  return hw, tw, th


class CoSTa(nn.Module):
  """CoST(a): the three views mixed by softmax coefficients learned per output channel."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1):
    super().__init__()
    self.stride, self.padding = _triple(stride), padding
    self.alpha = nn.Parameter(torch.empty(3, out_channels))
    self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, kernel_size, kernel_size))
    with torch.no_grad():
      self.alpha[0].fill_(0.7)
      self.alpha[1:].fill_(-0.7)
    nn.init.kaiming_normal_(self.weight, mode='fan_out', nonlinearity='relu')

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    hw, tw, th = view_convolutions(x, self.weight, self.stride, self.padding)
    coeff = torch.softmax(self.alpha, dim=0)[:, :, None, None, None]  # (3, C, 1, 1, 1)
    return hw * coeff[0] + tw * coeff[1] + th * coeff[2]


class CoSTb(nn.Module):
  """CoST(b): the three views mixed by softmax coefficients predicted per sample and channel.

  Each view is max-pooled over (T, H, W); the pooled (N, C) vectors of the three views, stacked
  view after view into (3N, C), go through the shared `fc1` (C -> C); the result is regrouped so
  that each (sample, channel) row holds its three view scores, `fc2` (3 -> 3) mixes them, and a
  softmax over the views gives the coefficients of the weighted sum.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1):
    super().__init__()
    self.out_channels = out_channels
    self.stride, self.padding = _triple(stride), padding
    self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, kernel_size, kernel_size))
    self.max_pool = nn.AdaptiveMaxPool3d(1)
    self.fc1 = nn.Linear(out_channels, out_channels, bias=False)
    self.fc2 = nn.Linear(3, 3, bias=False)
    nn.init.kaiming_normal_(self.weight, mode='fan_out', nonlinearity='relu')
    nn.init.normal_(self.fc1.weight, std=0.01)
    nn.init.normal_(self.fc2.weight, std=0.01)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    views = view_convolutions(x, self.weight, self.stride, self.padding)
    n, c = views[0].shape[:2]
    pooled = torch.cat([self.max_pool(v).flatten(1) for v in views], dim=0)  # (3N, C)
    scores = self.fc1(pooled).reshape(3, n * c).t()  # (N*C, 3): the views of one (n, c) per row
    logits = self.fc2(scores).t().reshape(3, n, c, 1, 1, 1)
    coeff = torch.softmax(logits, dim=0)
    return views[0] * coeff[0] + views[1] * coeff[1] + views[2] * coeff[2]


class ConvModule(nn.Module):
  """mmcv's `ConvModule` as ResNet3d uses it: conv (no bias) -> BatchNorm3d -> optional ReLU."""

  def __init__(
    self,
    in_channels: int,
    out_channels: int,
    kernel_size=1,
    stride=1,
    padding=0,
    relu: bool = True,
    cost_variant: str | None = None,
  ):
    super().__init__()
    if cost_variant == 'costa':
      self.conv = CoSTa(in_channels, out_channels, 3, stride, 1)
    elif cost_variant == 'costb':
      self.conv = CoSTb(in_channels, out_channels, 3, stride, 1)
    else:
      self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
      nn.init.kaiming_normal_(self.conv.weight, mode='fan_out', nonlinearity='relu')
    self.bn = nn.BatchNorm3d(out_channels)
    self.activate = nn.ReLU(inplace=True) if relu else None

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.bn(self.conv(x))
    return self.activate(x) if self.activate is not None else x


class Bottleneck3d(nn.Module):
  """`Bottleneck3dCoST`, 'pytorch' style: 1x1x1 (or 3x1x1) -> spatial / CoST (strided) -> 1x1x1."""

  def __init__(
    self,
    in_channels: int,
    planes: int,
    stride: tuple[int, int, int],
    arch: str,
    inflated: bool,
    downsample: nn.Module | None,
  ):
    super().__init__()
    convs = block_convs(arch, inflated)
    self.conv1 = ConvModule(in_channels, planes, **convs['conv1'])
    self.conv2 = ConvModule(planes, planes, stride=stride, **convs['conv2'])
    self.conv3 = ConvModule(planes, planes * EXPANSION, relu=False)
    self.downsample = downsample
    self.relu = nn.ReLU(inplace=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.conv3(self.conv2(self.conv1(x)))
    return self.relu(out + identity)


class ResNet3dCoST(nn.Module):
  """The backbone: stem conv1 + maxpool, layer1, pool2 (temporal), layer2..layer4."""

  def __init__(
    self,
    arch: str = 'costb',
    depth: int = 50,
    base_channels: int = 64,
    conv1_kernel=(1, 7, 7),
    conv1_stride_t: int = 1,
    pool1_stride_t: int = 1,
    with_pool2: bool = True,
    inflate=0,
    spatial_strides=(1, 2, 2, 2),
    temporal_strides=(1, 1, 1, 1),
  ):
    super().__init__()
    if arch not in ARCHS:
      raise ValueError(f'unknown arch {arch!r}; expected one of {ARCHS}')
    self.with_pool2 = with_pool2
    kt, kh, kw = conv1_kernel
    self.conv1 = ConvModule(
      3,
      base_channels,
      tuple(conv1_kernel),
      (conv1_stride_t, 2, 2),
      ((kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2),
    )
    # ResNet3dCoST rebuilds ResNet3d's max-pool with a temporal kernel of 1 when it has no stride.
    pool1_kt = 1 if pool1_stride_t == 1 else 2
    self.maxpool = nn.MaxPool3d((pool1_kt, 3, 3), (pool1_stride_t, 2, 2), (0, 1, 1))
    self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1), (0, 0, 0))
    self.res_layers = []
    in_channels = base_channels
    for stage, flags in enumerate(expand_inflate(inflate, STAGE_BLOCKS[depth])):
      planes = base_channels * 2**stage
      stride = (temporal_strides[stage], spatial_strides[stage], spatial_strides[stage])
      downsample = None
      if stride != (1, 1, 1) or in_channels != planes * EXPANSION:
        downsample = ConvModule(in_channels, planes * EXPANSION, 1, stride, 0, relu=False)
      blocks = []
      for i, flag in enumerate(flags):
        blocks.append(
          Bottleneck3d(
            in_channels,
            planes,
            stride if i == 0 else (1, 1, 1),
            arch,
            bool(flag),
            downsample if i == 0 else None,
          )
        )
        in_channels = planes * EXPANSION
      name = f'layer{stage + 1}'
      self.add_module(name, nn.Sequential(*blocks))
      self.res_layers.append(name)
    self.feat_dim = in_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.conv1(x))
    for i, name in enumerate(self.res_layers):
      x = getattr(self, name)(x)
      if i == 0 and self.with_pool2:
        x = self.pool2(x)
    return x


class I3DHead(nn.Module):
  """Global average pool -> dropout -> `fc_cls`; returns logits."""

  def __init__(self, num_classes: int, in_channels: int, dropout_ratio: float = 0.5):
    super().__init__()
    self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
    self.dropout = nn.Dropout(p=dropout_ratio) if dropout_ratio else None
    self.fc_cls = nn.Linear(in_channels, num_classes)
    nn.init.normal_(self.fc_cls.weight, std=0.01)
    nn.init.zeros_(self.fc_cls.bias)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.avg_pool(x)
    if self.dropout is not None:
      x = self.dropout(x)
    return self.fc_cls(x.flatten(1))


class Recognizer3D(nn.Module):
  """Clips (N, 3, T, H, W), normalised -> logits (N, num_classes)."""

  def __init__(self, backbone: ResNet3dCoST, cls_head: I3DHead):
    super().__init__()
    self.backbone = backbone
    self.cls_head = cls_head

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.cls_head(self.backbone(x))


def build_model(model_config: Mapping[str, Any]) -> Recognizer3D:
  """The torch mirror of the model a `cost_jax` model config describes."""
  cfg = dict(model_config)
  backbone = ResNet3dCoST(**backbone_architecture(cfg))
  head = I3DHead(cfg['num_classes'], backbone.feat_dim, cfg.get('dropout_ratio', 0.5))
  return Recognizer3D(backbone, head)


def load_mmaction2_state_dict(model: nn.Module, state_dict: Mapping[str, np.ndarray]) -> None:
  """`model.load_state_dict(state_dict, strict=True)` for an MMAction2-layout state dict.

  `variables_to_state_dict` has no `num_batches_tracked` counters (nothing in the JAX model
  holds them, and MMAction2's BatchNorm momentum makes them unused); they are filled with zeros
  here, and every other key must match exactly.
  """
  tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()}
  for key, value in model.state_dict().items():
    if key.endswith('.num_batches_tracked') and key not in tensors:
      tensors[key] = torch.zeros_like(value)
  model.load_state_dict(tensors, strict=True)


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
