"""Pure step functions; `loop.py` jits them over the device mesh.

* `train_step`: gradient accumulation over the micro-batch axis of the batch, one optimiser
  update, running BatchNorm statistics threaded through the micro-batches in order.
* `eval_step`: logits of single-clip views (val protocol).
* `test_step`: multi-view scores (test protocol), views pushed through the model in chunks.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from cost_jax.data import transforms
from cost_jax.training import metrics as metrics_lib
from cost_jax.training.state import TrainState

Batch = Mapping[str, jax.Array]
Variables = Mapping[str, Any]


def inference_variables(state: TrainState) -> dict[str, Any]:
  """The model variables of a train state, as `eval_step` / `test_step` take them."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


def prepare_clips(clips: jax.Array, data_config: ml_collections.ConfigDict) -> jax.Array:
  """uint8 clips are normalised here (on device); float clips arrive already normalised."""
  if clips.dtype == jnp.uint8:
    return transforms.normalize(clips, data_config.mean, data_config.std)
  return clips.astype(jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy (I3DHead's loss_cls)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  model: nn.Module,
  tx: optax.GradientTransformation,
  learning_rate_fn: Callable[[Any], Any],
  data_config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on `batch` = {'clips': (A, M, T, H, W, 3), 'label': (A, M)}.

  The gradient is the mean over the A micro-batches of the mean loss of each, i.e. the gradient
  of the mean loss over all A*M clips. Each micro-batch updates the BatchNorm statistics in turn.
  """
  num_micro = batch['label'].shape[0]
  step_rng = jax.random.fold_in(state.rng, state.step)

  def micro_step(carry, xs):
    grad_sum, batch_stats, loss_sum, correct_sum = carry
    clips, labels, index = xs

    def loss_fn(params):
      logits, mutated = model.apply(
        {'params': params, 'batch_stats': batch_stats},
        prepare_clips(clips, data_config),
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': jax.random.fold_in(step_rng, index)},
      )
      return cross_entropy(logits, labels), (logits, mutated['batch_stats'])

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (grad_sum, new_stats, loss_sum + loss, correct_sum + correct), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  carry = (zeros, state.batch_stats, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
  xs = (batch['clips'], batch['label'], jnp.arange(num_micro))
  if num_micro == 1:
    carry, _ = micro_step(carry, jax.tree.map(lambda x: x[0], xs))
  else:
    carry, _ = jax.lax.scan(micro_step, carry, xs)
  grad_sum, batch_stats, loss_sum, correct_sum = carry
  grads = jax.tree.map(lambda g: g / num_micro, grad_sum)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  metrics = {
    'loss': loss_sum / num_micro,
    'accuracy': correct_sum / batch['label'].size,
    'grad_norm': optax.global_norm(grads),
    'param_norm': optax.global_norm(params),
    'learning_rate': jnp.asarray(learning_rate_fn(state.step), jnp.float32),
  }
  return new_state, metrics


def eval_step(
  variables: Variables, batch: Batch, *, model: nn.Module, data_config: ml_collections.ConfigDict
) -> jax.Array:
  """Float32 logits (B, K) of `batch['clips']` (B, T, H, W, 3), BatchNorm in inference mode.

  `variables` = {'params', 'batch_stats'} (see `inference_variables`).
  """
  logits = model.apply(variables, prepare_clips(batch['clips'], data_config), train=False)
  return logits.astype(jnp.float32)


def test_step(
  variables: Variables,
  batch: Batch,
  *,
  model: nn.Module,
  data_config: ml_collections.ConfigDict,
  views_per_chunk: int,
  average: str = 'prob',
) -> jax.Array:
  """Video scores (B, K) from `batch['clips']` (B, V, T, H, W, 3), averaged over the V views.

  'prob' averages softmax probabilities (CoST / MMAction2), 'score' averages logits. Only
  B * views_per_chunk clips go through the model at once.
  """
  num_views = batch['clips'].shape[1]
  if num_views % views_per_chunk:
    raise ValueError(f'{num_views} views are not divisible by views_per_chunk={views_per_chunk}')

  def chunk_scores(chunk_index):
    chunk = jax.lax.dynamic_slice_in_dim(
      batch['clips'], chunk_index * views_per_chunk, views_per_chunk, axis=1
    )
    b, c = chunk.shape[:2]
    flat = prepare_clips(chunk.reshape((b * c,) + chunk.shape[2:]), data_config)
    logits = model.apply(variables, flat, train=False).reshape(b, c, -1)
    return jnp.sum(metrics_lib.view_scores(logits, average), axis=1)

  total = chunk_scores(0)
  if num_views > views_per_chunk:
    total, _ = jax.lax.scan(
      lambda acc, i: (acc + chunk_scores(i), None),
      total,
      jnp.arange(1, num_views // views_per_chunk),
    )
  return total / num_views
