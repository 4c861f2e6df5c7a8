"""A model's variables ({'params', 'batch_stats'}) from its config: initialised or only shaped."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from cost_jax.models.recognizer import create_model


def example_clips(model_config: Mapping[str, Any]) -> jax.ShapeDtypeStruct:
  """The smallest input `init` accepts: one clip of 8 frames past the stem's strides, 32x32."""
  frames = 8 * model_config['conv1_stride_t'] * model_config['pool1_stride_t']
  return jax.ShapeDtypeStruct((1, frames, 32, 32, 3), jnp.float32)


def init_variables(model_config: Mapping[str, Any], rng: jax.Array) -> dict[str, Any]:
  """Freshly initialised {'params', 'batch_stats'} (jit it: eager init is slow)."""
  clips = example_clips(model_config)
  variables = create_model(model_config).init({'params': rng}, jnp.zeros(clips.shape, clips.dtype))
  return {k: variables[k] for k in ('params', 'batch_stats')}


def abstract_variables(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """Shapes and dtypes of a model's {'params', 'batch_stats'}, without allocating them."""
  return jax.eval_shape(lambda: init_variables(model_config, jax.random.key(0)))
