"""Max-pooling and pointwise convolutions with hand-written gradients, for XLA:CPU.

XLA:CPU differentiates both slowly inside a ResNet's train step:

- `reduce_window` max-pooling's gradient (argmax bookkeeping with iotas and a scatter) takes
  ~20x its forward pass. Here the gradient compares the window's shifted strided slices with the
  output and routes the output gradient to the first slice that holds the maximum (as
  `select_and_scatter` and PyTorch do: ties go to the first element of the window in row-major
  order) through padding with interior zeros. The pooled input is kept as one stored array
  (an optimisation barrier): recomputed inside the backward pass, it could round differently and
  no slice would equal the output.
- the weight gradient of a 1x1x1 convolution (a matmul) needs the output gradient transposed;
  XLA fuses that transposition into BatchNorm's backward pass, where it runs several times
  slower than on its own. An optimisation barrier keeps them apart.

Forward values and gradients equal the plain operations up to float summation order. The
backward matmuls run at the precision the forward one was traced at (`models/precision.py`).
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


def _window_slices(
  x: jax.Array, window: Sequence[int], strides: Sequence[int], padding: Sequence[tuple]
) -> tuple[list[jax.Array], tuple]:
  """The strided slices of `x` (padded with -inf) that each window position takes, in
  row-major window order, and the padding that was applied."""
  pads = [(0, 0)] + [tuple(p) for p in padding] + [(0, 0)]
  x_padded = jnp.pad(x, pads, constant_values=-jnp.inf)
  spatial = x_padded.shape[1:-1]
  out = [(size - k) // s + 1 for size, k, s in zip(spatial, window, strides)]
  slices = []
  for offset in _ndindex(window):
    start = (0,) + offset + (0,)
    limit = (x.shape[0],) + tuple(o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out))
    slices.append(
      jax.lax.slice(x_padded, start, limit + (x.shape[-1],), (1,) + tuple(strides) + (1,))
    )
  return slices, pads


def _ndindex(shape: Sequence[int]) -> list[tuple[int, ...]]:
  """Every offset inside a window of `shape`, in row-major order."""
  return list(itertools.product(*(range(size) for size in shape)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: tuple, strides: tuple, padding: tuple) -> jax.Array:
  """`flax.linen.max_pool` (same values) with the gradient below."""
  return _max_pool_forward(x, window, strides, padding)


def _max_pool_forward(x, window, strides, padding):
  # Windows that tile the input without overlap or padding (pool2's (2, 1, 1)) are the maximum
  # of their strided slices: one elementwise pass. Overlapping windows keep reduce_window.
  if tuple(window) == tuple(strides) and all(tuple(p) == (0, 0) for p in padding):
    return functools.reduce(jnp.maximum, _window_slices(x, window, strides, padding)[0])
  return nn.max_pool(x, window, strides, padding)


def _max_pool_fwd(x, window, strides, padding):
  # The barrier makes the residual one stored array: XLA may otherwise recompute `x` (fused
  # BatchNorm and ReLU) inside the backward pass, rounded differently from the forward's.
  x = jax.lax.optimization_barrier(x)
  return _max_pool_forward(x, window, strides, padding), x


def _max_pool_bwd(window, strides, padding, x, grad):
  slices, pads = _window_slices(x, window, strides, padding)
  out = functools.reduce(jnp.maximum, slices)
  padded_shape = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pads))
  dx_padded = jnp.zeros(padded_shape, grad.dtype)
  taken = jnp.zeros(out.shape, bool)
  zero = jnp.zeros((), grad.dtype)
  for offset, piece in zip(_ndindex(window), slices):
    hit = (piece == out) & ~taken
    taken = taken | hit
    routed = jnp.where(hit, grad, zero)
    # Transpose of the strided slice: interior zeros between elements, then shift by `offset`.
    config = [(0, 0, 0)]
    for axis, (o, s) in enumerate(zip(offset, strides), start=1):
      used = o + s * (routed.shape[axis] - 1) + 1
      config.append((o, padded_shape[axis] - used, s - 1))
    config.append((0, 0, 0))
    dx_padded = dx_padded + jax.lax.pad(routed, zero, config)
  crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, pads))
  return (dx_padded[crop],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def contract(
  a: jax.Array, b: jax.Array, axes: tuple[int, int], precision: str | None = None
) -> jax.Array:
  """`a` and `b` summed over axis `axes[0]` of `a` and `axes[1]` of `b` (no batch axes), in
  their result type: the one `dot_general` that `jnp.einsum` lowers these contractions to,
  without einsum's trace-time cost (a contraction-path search and a nested jit per call: a tiny
  train step traced in 1.37 s with einsum, 1.20 s without)."""
  dtype = jnp.result_type(a, b)
  numbers = (((axes[0] % a.ndim,), (axes[1] % b.ndim,)), ((), ()))
  return jax.lax.dot_general(a, b, numbers, precision, preferred_element_type=dtype)


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x (..., C) @ kernel (C, D): a 1x1x1 convolution."""
  # The backward pass is traced outside the model's precision scope: hand it the level now.
  return _pointwise(x, kernel, jax.config.jax_default_matmul_precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x: jax.Array, kernel: jax.Array, level: str | None) -> jax.Array:
  return contract(x, kernel, (-1, 0), level)


def _pointwise_fwd(x, kernel, level):
  return _pointwise(x, kernel, level), (x, kernel)


def _pointwise_bwd(level, residuals, grad):
  x, kernel = residuals
  dx = contract(grad, kernel, (-1, 1), level)
  # The barrier keeps XLA:CPU from fusing the producer of `grad` (BatchNorm's backward) with the
  # transposed copy the weight-gradient matmul needs; fused, that copy runs several times slower.
  x2d, g2d = jax.lax.optimization_barrier(
    (x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1]))
  )
  dkernel = contract(x2d, g2d, (0, 0), level)
  return dx, dkernel


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)
