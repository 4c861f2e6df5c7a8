"""The training state: a plain pytree, so that it can be jitted, donated and checkpointed."""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: optimiser steps taken so far (int32 scalar); also the train input position.
    params: float32 model parameters.
    batch_stats: BatchNorm running statistics.
    opt_state: optax state (momentum buffers, step count of the schedule).
    rng: raw uint32 PRNG key; dropout keys are folded in from it with the step.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def _structure_mismatch(name: str, expected: Any, got: Any) -> str | None:
  exp = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  new = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(got)}
  missing = sorted(set(exp) - set(new))
  extra = sorted(set(new) - set(exp))
  shapes = sorted(k for k in set(exp) & set(new) if tuple(exp[k]) != tuple(new[k]))
  if not (missing or extra or shapes):
    return None
  return (
    f'{name}: missing {missing[:5]}, unexpected {extra[:5]}, '
    f'shape mismatch {[(k, exp[k], new[k]) for k in shapes[:5]]}'
  )


def create_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  rng: jax.Array,
  sample_clips: jax.Array,
  variables: Mapping[str, Any] | None = None,
) -> TrainState:
  """Initialises the model (or takes `variables`, e.g. imported weights) and the optimiser.

  `sample_clips` only provides the input shape (float32 (N, T, H, W, 3)). `variables`, when
  given, must match the model's own variables in structure and shapes.
  """
  init_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
  initial = model.init({'params': init_rng, 'dropout': dropout_rng}, sample_clips, train=False)
  params, batch_stats = initial['params'], initial.get('batch_stats', {})
  if variables is not None:
    for name, own in (('params', params), ('batch_stats', batch_stats)):
      problem = _structure_mismatch(name, own, variables.get(name, {}))
      if problem:
        raise ValueError(f'initial weights do not fit the model: {problem}')
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables['params'])
    batch_stats = jax.tree.map(
      lambda a: jnp.asarray(a, jnp.float32), variables.get('batch_stats', {})
    )
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=state_rng,
  )
