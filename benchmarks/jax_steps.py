"""The JAX functions the model benchmarks time: eval forward and one SGD train step.

The optimiser is the official recipe's at a fixed learning rate: gradient clipping at global
norm 40, weight decay 1e-4, SGD with momentum 0.9 (`vs_pytorch.py` gives torch the same).
"""

from __future__ import annotations

from typing import Callable

import jax
import optax
from flax import linen as nn

LR, MOMENTUM, WEIGHT_DECAY, CLIP_NORM = 0.01, 0.9, 1e-4, 40.0

# A benchmark's `--impls` entry is a `model.conv_impl`, compiled with cost_jax's measured XLA
# options (`cost_jax.runtime.xla_options.jit`), or with this suffix: with XLA's defaults, for
# comparison.
XLA_DEFAULT_SUFFIX = ':xla-default'


def parse_impl(label: str) -> tuple[str, bool]:
  """'fold2d' -> ('fold2d', True); 'fold2d:xla-default' -> ('fold2d', False)."""
  if label.endswith(XLA_DEFAULT_SUFFIX):
    return label[: -len(XLA_DEFAULT_SUFFIX)], False
  return label, True


def official_tx() -> optax.GradientTransformation:
  return optax.chain(
    optax.clip_by_global_norm(CLIP_NORM),
    optax.add_decayed_weights(WEIGHT_DECAY),
    optax.sgd(LR, momentum=MOMENTUM),
  )


def forward_fn(model: nn.Module) -> Callable:
  """(variables, clips) -> eval-mode logits."""

  def forward(variables, clips):
    return model.apply(variables, clips, train=False)

  return forward


def train_step_fn(model: nn.Module, tx: optax.GradientTransformation) -> Callable:
  """(params, batch_stats, opt_state, clips, labels, dropout key) -> the three updated."""

  def train_step(params, batch_stats, opt_state, clips, labels, key):
    def loss_fn(params):
      logits, new_state = model.apply(
        {'params': params, 'batch_stats': batch_stats},
        clips,
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': key},
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, new_state['batch_stats']

    grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state

  return train_step
