"""BatchNorm with PyTorch semantics and per-group batch statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from cost_jax.models import params


def _shifted_moments(xg: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance over axes 1 and 2 of (groups, rows, columns, C), in one pass.

  The sums are of `xg` minus the mean of its first row (for a clip, its first frame), which is
  close to each channel's mean (the shifted-data algorithm): E[d^2] - E[d]^2 then does not
  cancel, and the statistics are as accurate as mean-then-centred, more so when a channel's mean
  dwarfs its spread. The shift is a constant to differentiation (the statistics do not depend
  on it).
  """
  shift = jax.lax.stop_gradient(jnp.mean(xg[:, :1], axis=(1, 2), keepdims=True))
  d = xg - shift
  mean_d = jnp.mean(d, axis=(1, 2))
  var = jnp.maximum(jnp.mean(jnp.square(d), axis=(1, 2)) - jnp.square(mean_d), 0.0)
  return mean_d + shift[:, 0, 0], var


class BatchNorm(nn.Module):
  """`torch.nn.BatchNorm3d` over the last (channel) axis.

  In training the batch is split into groups of `group_size` consecutive examples, each group is
  normalised with its own biased statistics (as per-GPU BatchNorm over 8 clips in the official
  recipe), and the running statistics move by the mean of the groups' updates, using the
  unbiased variance as torch does. `group_size=0` uses the whole batch. The result does not
  depend on how the batch is spread over devices.

  Attributes:
    group_size: examples per statistics group; 0 = the whole batch.
    momentum: torch's momentum (new = (1 - m) * old + m * batch).
    epsilon: added to the variance.
    dtype: dtype of the output; statistics and the normalisation are computed in float32.
  """

  group_size: int = 0
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    channels = x.shape[-1]
    scale = params.param(self, 'scale', nn.initializers.ones, (channels,))
    bias = params.param(self, 'bias', nn.initializers.zeros, (channels,))
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), jnp.float32)

    if not train:
      mul = scale * jax.lax.rsqrt(running_var.value + self.epsilon)
      add = bias - running_mean.value * mul
      # In float32 whatever x's dtype: in bfloat16, x * mul and add can be large and nearly
      # cancel (a channel whose mean is far from zero), leaving only a few bits of the result.
      return (x.astype(jnp.float32) * mul + add).astype(self.dtype)

    batch = x.shape[0]
    group = self.group_size or batch
    if batch % group:
      raise ValueError(f'BatchNorm: batch of {batch} is not divisible by bn_group_size={group}')
    # (groups, rows, columns, C): XLA:CPU reduces over two axes ~70x faster than over one long
    # axis (in the gradient, where the reduction is fused with a product), same values.
    rows = group * (x.shape[1] if x.ndim > 2 else 1)
    xg = x.astype(jnp.float32).reshape(batch // group, rows, -1, channels)
    mean, var = _shifted_moments(xg)  # (groups, C) each; var biased, as torch normalises
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    # x * mul + (bias - mean * mul), as PyTorch's CPU kernel: no centred copy to store for the
    # gradient, whose autodiff is then one reduction and one elementwise pass.
    y = xg * mul[:, None, None] + (bias - mean * mul)[:, None, None]
    if not self.is_initializing():
      count = xg.shape[1] * xg.shape[2]
      unbiased = var * (count / max(count - 1, 1))
      m = self.momentum
      running_mean.value = (1 - m) * running_mean.value + m * jnp.mean(mean, axis=0)
      running_var.value = (1 - m) * running_var.value + m * jnp.mean(unbiased, axis=0)
    return y.reshape(x.shape).astype(self.dtype)
