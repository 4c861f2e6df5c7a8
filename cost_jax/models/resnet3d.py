"""MMAction2 0.24's `ResNet3d` / `ResNet3dCoST` backbone in Flax, NTHWC.

Module names follow the MMAction2 state-dict keys (`layer2_0` for `layer2.0`), so weight import is
a renaming. Each `ConvModule` (conv -> BN -> optional ReLU) is a `ConvBN` named like its torch
counterpart, holding `conv` and `bn`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cost_jax.models import custom_grads as custom_grads_lib
from cost_jax.models.conv import Conv3D
from cost_jax.models.cost_layer import CoSTConv
from cost_jax.models.norm import BatchNorm

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
ARCHS = ('c2d', 'i3d', 'costa', 'costb', '3x3x3')
EXPANSION = 4


def blocks_per_stage(depth: int, stage_blocks: Sequence[int] = ()) -> tuple[int, ...]:
  """Bottleneck blocks of each stage: `stage_blocks` if given (as MMAction2's ResNet3d argument of
  that name), else the depth's."""
  if stage_blocks:
    if len(stage_blocks) != 4 or min(stage_blocks) < 1:
      raise ValueError(f'stage_blocks {tuple(stage_blocks)}: expected 4 stages of >= 1 block')
    return tuple(int(n) for n in stage_blocks)
  if depth not in STAGE_BLOCKS:
    raise ValueError(f'unknown depth {depth}; expected one of {sorted(STAGE_BLOCKS)}')
  return STAGE_BLOCKS[depth]


def expand_inflate(inflate, blocks: Sequence[int]) -> tuple[tuple[int, ...], ...]:
  """Per-block inflate flags for stages of `blocks` blocks: an int per stage is repeated over its
  blocks (as MMAction2)."""
  if isinstance(inflate, int):
    inflate = (inflate,) * len(blocks)
  if len(inflate) != len(blocks):
    raise ValueError(f'inflate has {len(inflate)} stages; the network has {len(blocks)}')
  out = []
  for stage, (flags, n) in enumerate(zip(inflate, blocks)):
    flags = (flags,) * n if isinstance(flags, int) else tuple(flags)
    if len(flags) != n:
      raise ValueError(
        f'inflate of stage {stage + 1} has {len(flags)} flags, the stage has {n} blocks'
      )
    out.append(tuple(int(f) for f in flags))
  return tuple(out)


class ConvBN(nn.Module):
  """MMAction2's `ConvModule`: conv (no bias) -> BatchNorm -> optional ReLU."""

  features: int
  kernel_size: tuple[int, int, int] = (1, 1, 1)
  strides: tuple[int, int, int] = (1, 1, 1)
  padding: tuple[int, int, int] = (0, 0, 0)
  cost_variant: str | None = None  # 'costa' / 'costb': the conv is a CoST layer
  relu: bool = True
  fold: bool = True
  custom_grads: bool = False
  bn_group_size: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.cost_variant:
      x = CoSTConv(
        self.features,
        self.cost_variant,
        self.strides,
        fold=self.fold,
        dtype=self.dtype,
        name='conv',
      )(x)
    else:
      x = Conv3D(
        self.features,
        self.kernel_size,
        self.strides,
        self.padding,
        fold=self.fold,
        custom_grads=self.custom_grads,
        dtype=self.dtype,
        name='conv',
      )(x)
    x = BatchNorm(self.bn_group_size, dtype=self.dtype, name='bn')(x, train)
    return nn.relu(x) if self.relu else x


def block_convs(arch: str, inflated: bool) -> dict:
  """Kernel/padding of conv1 and conv2 of a bottleneck (`Bottleneck3dCoST`)."""
  spatial = dict(kernel_size=(1, 3, 3), padding=(0, 1, 1))
  pointwise = dict(kernel_size=(1, 1, 1), padding=(0, 0, 0))
  if not inflated or arch == 'c2d':
    return dict(conv1=pointwise, conv2=spatial)
  if arch == 'i3d':
    return dict(conv1=dict(kernel_size=(3, 1, 1), padding=(1, 0, 0)), conv2=spatial)
  if arch == '3x3x3':
    return dict(conv1=pointwise, conv2=dict(kernel_size=(3, 3, 3), padding=(1, 1, 1)))
  return dict(conv1=pointwise, conv2=dict(cost_variant=arch))


class Bottleneck(nn.Module):
  """`Bottleneck3dCoST`, 'pytorch' style: the stride sits on conv2."""

  planes: int
  strides: tuple[int, int, int]
  arch: str
  inflated: bool
  downsample: bool
  fold: bool = True
  custom_grads: bool = False
  bn_group_size: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    common = dict(
      fold=self.fold,
      custom_grads=self.custom_grads,
      bn_group_size=self.bn_group_size,
      dtype=self.dtype,
    )
    convs = block_convs(self.arch, self.inflated)
    out = ConvBN(self.planes, **convs['conv1'], **common, name='conv1')(x, train)
    out = ConvBN(self.planes, strides=self.strides, **convs['conv2'], **common, name='conv2')(
      out, train
    )
    out = ConvBN(self.planes * EXPANSION, relu=False, **common, name='conv3')(out, train)
    if self.downsample:
      x = ConvBN(
        self.planes * EXPANSION, strides=self.strides, relu=False, **common, name='downsample'
      )(x, train)
    return nn.relu(out + x)


class ResNet3d(nn.Module):
  """The backbone; returns layer4's features (N, T', H', W', 8 * 4 * base_channels).

  Stage outputs are sown into the 'intermediates' collection (stem after the max-pool, and each
  layer; layer2's includes the temporal pool2 that precedes it).

  As MMAction2's `frozen_stages`, stage 0 (the stem) to `frozen_stages` get no gradient (it stops
  at their output) and keep BatchNorm in inference mode while training; `norm_eval` puts every
  BatchNorm in inference mode while training.
  """

  arch: str = 'costb'
  depth: int = 50
  stage_blocks: tuple[int, ...] = ()  # blocks per stage instead of the depth's (MMAction2's)
  base_channels: int = 64
  conv1_kernel: tuple[int, int, int] = (1, 7, 7)
  conv1_stride_t: int = 1
  pool1_stride_t: int = 1
  with_pool2: bool = True
  inflate: Sequence = 0
  spatial_strides: tuple[int, ...] = (1, 2, 2, 2)
  temporal_strides: tuple[int, ...] = (1, 1, 1, 1)
  fold: bool = True
  custom_grads: bool = False
  bn_group_size: int = 0
  remat: bool = False
  frozen_stages: int = -1
  norm_eval: bool = False
  dtype: jnp.dtype = jnp.float32

  def _stage_trains(self, stage: int, train: bool) -> bool:
    """Whether BatchNorm of `stage` (0 = stem) uses batch statistics."""
    return train and not self.norm_eval and stage > self.frozen_stages

  def _max_pool(self, x: jax.Array, window: tuple, strides: tuple, padding: tuple) -> jax.Array:
    if self.custom_grads:
      return custom_grads_lib.max_pool(x, window, strides, padding)
    return nn.max_pool(x, window, strides, padding)

  def _end_of_stage(self, x: jax.Array, stage: int) -> jax.Array:
    return jax.lax.stop_gradient(x) if stage <= self.frozen_stages else x

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.arch not in ARCHS:
      raise ValueError(f'unknown arch {self.arch!r}; expected one of {ARCHS}')
    blocks = blocks_per_stage(self.depth, self.stage_blocks)
    common = dict(
      fold=self.fold,
      custom_grads=self.custom_grads,
      bn_group_size=self.bn_group_size,
      dtype=self.dtype,
    )
    kt, kh, kw = self.conv1_kernel
    x = ConvBN(
      self.base_channels,
      tuple(self.conv1_kernel),
      (self.conv1_stride_t, 2, 2),
      ((kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2),
      **common,
      name='conv1',
    )(x, self._stage_trains(0, train))
    pool1_kt = 1 if self.pool1_stride_t == 1 else 2  # as ResNet3dCoST rebuilds its maxpool
    x = self._max_pool(x, (pool1_kt, 3, 3), (self.pool1_stride_t, 2, 2), ((0, 0), (1, 1), (1, 1)))
    self.sow('intermediates', 'maxpool', x)
    x = self._end_of_stage(x, 0)

    block_cls = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
    inflate = expand_inflate(self.inflate, blocks)
    in_channels = self.base_channels
    for stage, flags in enumerate(inflate):
      planes = self.base_channels * 2**stage
      strides = (
        self.temporal_strides[stage],
        self.spatial_strides[stage],
        self.spatial_strides[stage],
      )
      for i, flag in enumerate(flags):
        block_strides = strides if i == 0 else (1, 1, 1)
        needs_downsample = i == 0 and (
          block_strides != (1, 1, 1) or in_channels != planes * EXPANSION
        )
        x = block_cls(
          planes,
          block_strides,
          self.arch,
          bool(flag),
          needs_downsample,
          **common,
          name=f'layer{stage + 1}_{i}',
        )(x, self._stage_trains(stage + 1, train))
        in_channels = planes * EXPANSION
      if stage == 0 and self.with_pool2:
        self.sow('intermediates', 'layer1', x)
        x = self._max_pool(x, (2, 1, 1), (2, 1, 1), ((0, 0),) * 3)
      else:
        self.sow('intermediates', f'layer{stage + 1}', x)
      x = self._end_of_stage(x, stage + 1)
    return x
