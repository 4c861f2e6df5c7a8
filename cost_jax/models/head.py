"""MMAction2's `I3DHead`: global average pool -> dropout -> linear."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


class I3DHead(nn.Module):
  """Logits from backbone features (N, T, H, W, C); no softmax."""

  num_classes: int
  dropout_ratio: float = 0.5
  init_std: float = 0.01

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> jax.Array:
    x = jnp.mean(features.astype(jnp.float32), axis=(1, 2, 3))
    if self.dropout_ratio:
      x = nn.Dropout(self.dropout_ratio, deterministic=not train)(x)
    return nn.Dense(
      self.num_classes,
      kernel_init=nn.initializers.normal(self.init_std),
      bias_init=nn.initializers.zeros,
      name='fc_cls',
    )(x)
