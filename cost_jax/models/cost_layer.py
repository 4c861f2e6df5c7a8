"""The CoST layer: one shared 2D kernel over the H-W, T-W and T-H views of a clip.

The kernel is stored as (k, k, Cin, Cout); its first axis runs over H in the H-W view and over T
in the other two, its second axis over W, W and H respectively (MMAction2's `weight[:, :, 0]`
used as (1,k,k), (k,1,k) and (k,k,1) 3D kernels). The three outputs are mixed by softmax weights
over the views: learned per output channel (CoST(a)) or predicted per sample and channel from
the views' global max-pooled responses (CoST(b)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from cost_jax.models import conv as conv_lib
from cost_jax.models import params

VIEWS = ('hw', 'tw', 'th')
# Which NTHWC axis each view folds into the batch (its kernel has size 1 there).
_FOLDED_AXIS = {'hw': 1, 'tw': 2, 'th': 3}


def costa_alpha_init(key, shape, dtype=jnp.float32):
  """MMAction2/CoST default: row 0 (H-W) at 0.7, rows 1 and 2 at -0.7."""
  del key
  return jnp.broadcast_to(jnp.array([0.7, -0.7, -0.7], dtype)[:, None], shape)


def view_convolutions(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int], padding: int, fold: bool
) -> dict[str, jax.Array]:
  """The three raw view convolutions of `x` (NTHWC) with the shared kernel (k, k, Cin, Cout)."""
  st, sh, sw = strides
  p = padding
  if fold:
    view_strides = {'hw': (sh, sw), 'tw': (st, sw), 'th': (st, sh)}
    outputs = {}
    for view in VIEWS:
      axis = _FOLDED_AXIS[view]
      folded, info = conv_lib.fold_axis_into_batch(x, axis, strides[axis - 1])
      y = conv_lib.conv2d(folded, kernel, view_strides[view], (p, p))
      outputs[view] = conv_lib.unfold_axis(y, info)
    return outputs
  return {
    'hw': conv_lib.conv3d(x, kernel[None], strides, (0, p, p)),
    'tw': conv_lib.conv3d(x, kernel[:, None], strides, (p, 0, p)),
    'th': conv_lib.conv3d(x, kernel[:, :, None], strides, (p, p, 0)),
  }


class CoSTConv(nn.Module):
  """`CoSTa` / `CoSTb` of the official code, in NTHWC.

  Attributes:
    features: output channels.
    variant: 'costa' (per-channel learned coefficients) or 'costb' (predicted per sample).
    strides: (t, h, w) strides shared by the three views.
    kernel_size, padding: spatial size of the shared kernel and its padding.
    use_bias: add a bias after the mix (off inside the backbone).
    fold: compute each view as a 2D convolution with its third axis folded into the batch.
  """

  features: int
  variant: str = 'costb'
  strides: tuple[int, int, int] = (1, 1, 1)
  kernel_size: int = 3
  padding: int = 1
  use_bias: bool = False
  fold: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.variant not in ('costa', 'costb'):
      raise ValueError(f"CoSTConv.variant must be 'costa' or 'costb', got {self.variant!r}")
    k = self.kernel_size
    kernel = params.param(
      self, 'kernel', conv_lib.kaiming_fan_out, (k, k, x.shape[-1], self.features)
    )
    x = x.astype(self.dtype)
    views = view_convolutions(x, kernel.astype(self.dtype), self.strides, self.padding, self.fold)
    self.sow('cost_views', 'views', views)  # raw views, for tests and figures

    if self.variant == 'costa':
      alpha = params.param(self, 'alpha', costa_alpha_init, (3, self.features))
      weights = jax.nn.softmax(alpha, axis=0).T  # (C, 3)
      per_view = [weights[:, i] for i in range(3)]  # each (C,)
    else:
      pooled = jnp.stack([jnp.max(views[v], axis=(1, 2, 3)) for v in VIEWS], axis=1)
      small_normal = nn.initializers.normal(0.01)
      fc1 = nn.Dense(self.features, use_bias=False, name='fc1', kernel_init=small_normal)
      fc2 = nn.Dense(3, use_bias=False, name='fc2', kernel_init=small_normal)
      scores = fc1(pooled.astype(jnp.float32))  # (N, 3, C)
      logits = fc2(jnp.moveaxis(scores, 1, -1))  # (N, C, 3)
      weights = jax.nn.softmax(logits, axis=-1)
      per_view = [weights[:, None, None, None, :, i] for i in range(3)]  # each (N,1,1,1,C)
    self.sow('intermediates', 'view_weights', weights)
    out = sum(views[v] * w.astype(self.dtype) for v, w in zip(VIEWS, per_view))
    if self.use_bias:
      bias = params.param(self, 'bias', nn.initializers.zeros, (self.features,))
      out = out + bias.astype(self.dtype)
    return out
