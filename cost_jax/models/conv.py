"""3D convolutions in NTHWC, computed as 2D convolutions wherever a kernel axis is 1.

XLA:CPU differentiates strided 3D convolutions slowly; a (1, kh, kw) kernel is exactly a 2D
convolution with T folded into the batch (a temporal stride becomes subsampling of T), a
(kt, 1, 1) kernel is a 1D convolution over T with H and W folded into the batch, and a (1, 1, 1)
kernel is a matmul over channels. `fold=False`
keeps plain 3D convolutions, for accelerators where they may win. Both give the same numbers.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cost_jax.models import custom_grads as custom_grads_lib
from cost_jax.models import params

Triple = tuple[int, int, int]

# Kaiming normal, fan_out, ReLU gain: mmcv's `kaiming_init` as ResNet3d applies it to convs.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

_DN2D = ('NHWC', 'HWIO', 'NHWC')
_DN3D = ('NDHWC', 'DHWIO', 'NDHWC')


def conv2d(
  x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]
) -> jax.Array:
  """NHWC x HWIO 2D convolution with explicit symmetric padding (PyTorch semantics)."""
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=tuple(strides),
    padding=[(p, p) for p in padding],
    dimension_numbers=_DN2D,
  )


def conv3d(
  x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]
) -> jax.Array:
  """NTHWC x THWIO 3D convolution with explicit symmetric padding (PyTorch semantics)."""
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=tuple(strides),
    padding=[(p, p) for p in padding],
    dimension_numbers=_DN3D,
  )


def fold_axis_into_batch(x: jax.Array, axis: int, stride: int) -> tuple[jax.Array, tuple]:
  """Subsamples `axis` (1..3 of NTHWC) by `stride` and moves it next to N, merged with it.

  Returns the (N*L, A, B, C) array, whose A, B are the remaining axes in order, and the
  information `unfold_axis` needs.
  """
  x = jax.lax.slice_in_dim(x, 0, None, stride, axis=axis)
  moved = jnp.moveaxis(x, axis, 1)
  n, length = moved.shape[:2]
  return moved.reshape((n * length,) + moved.shape[2:]), (n, length, axis)


def unfold_axis(y: jax.Array, info: tuple) -> jax.Array:
  """Inverse of `fold_axis_into_batch` for the convolution's output."""
  n, length, axis = info
  return jnp.moveaxis(y.reshape((n, length) + y.shape[1:]), 1, axis)


def conv3d_folded(
  x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple, custom_grads: bool = False
) -> jax.Array:
  """A 3D convolution (THWIO kernel) computed as a 2D one when some kernel axes are 1.

  `custom_grads`: gradients from `custom_grads` (same values, faster on XLA:CPU).
  """
  kt, kh, kw = kernel.shape[:3]
  st, sh, sw = strides
  if kernel.shape[:3] == (1, 1, 1) and tuple(padding) == (0, 0, 0):
    # A pointwise conv is a matmul over channels; XLA:CPU runs it (and its gradients) 2-3x
    # faster as a dot than as a convolution.
    x = x[:, ::st, ::sh, ::sw]
    if custom_grads:
      return custom_grads_lib.pointwise(x, kernel[0, 0, 0])
    return custom_grads_lib.contract(x, kernel[0, 0, 0], (-1, 0))
  if kt == 1 and padding[0] == 0:
    folded, info = fold_axis_into_batch(x, 1, st)
    return unfold_axis(conv2d(folded, kernel[0], (sh, sw), padding[1:]), info)
  if kh == 1 and kw == 1 and padding[1] == padding[2] == 0:
    x = x[:, :, ::sh, ::sw]
    n, t, h, w, c = x.shape
    cols = jnp.moveaxis(x, 1, 3).reshape(n * h * w, t, 1, c)  # (NHW, T, 1, C)
    y = conv2d(cols, kernel[:, 0], (st, 1), (padding[0], 0))
    return jnp.moveaxis(y.reshape(n, h, w, y.shape[1], y.shape[-1]), 3, 1)
  return conv3d(x, kernel, strides, padding)


class Conv3D(nn.Module):
  """Bias-free 3D convolution with PyTorch padding; kernel stored as (kt, kh, kw, Cin, Cout)."""

  features: int
  kernel_size: Triple
  strides: Triple = (1, 1, 1)
  padding: Triple = (0, 0, 0)
  fold: bool = True
  custom_grads: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = params.param(
      self, 'kernel', kaiming_fan_out, tuple(self.kernel_size) + (x.shape[-1], self.features)
    )
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.fold:
      return conv3d_folded(x, kernel, self.strides, self.padding, self.custom_grads)
    return conv3d(x, kernel, self.strides, self.padding)
