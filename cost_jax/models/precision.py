"""The arithmetic policy of a model: `model.precision` in the config.

* `float32` (default): values, convolutions and matmuls in float32, each multiply at the
  precision the official fp32 runs had. They trained on RTX 3090s, where cuDNN computes float32
  convolutions in TensorFloat-32 by default; so on NVIDIA GPUs the convolutions and matmuls run
  at `jax.lax.Precision.DEFAULT` (TF32 on Ampere and later), on TPU at `Precision.HIGH` (three
  bfloat16 passes, at least as accurate as TF32; one pass, TPU's default, is much coarser) and on
  CPU at `Precision.HIGHEST` (XLA:CPU computes float32 at every level).
* `float32_full`: every multiply in full float32 (`Precision.HIGHEST`) on every platform, the
  arithmetic of the MMAction2 parity fixtures; several times slower on GPU and TPU.
* `bfloat16`: mixed precision. Activations, convolutions and matmuls of the backbone in
  bfloat16; parameters, optimiser state, BatchNorm statistics, CoST(b)'s view-weight network,
  the softmax view weights, the head and the loss in float32.

The level is fixed in the traced program (each dot and convolution carries it), so it does not
depend on `jax_default_matmul_precision` or on where the step is run from.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp

PRECISIONS = ('float32', 'float32_full', 'bfloat16')

# `jax.lax.Precision` of float32 convolutions and matmuls under the `float32` policy.
FLOAT32_LEVEL = {'gpu': 'default', 'cuda': 'default', 'rocm': 'default', 'tpu': 'high'}
FLOAT32_LEVEL_OTHER = 'highest'


def check_precision(precision: str) -> str:
  if precision not in PRECISIONS:
    raise ValueError(f'model.precision must be one of {PRECISIONS}, got {precision!r}')
  return precision


def compute_dtype(precision: str) -> jnp.dtype:
  """The dtype of activations and convolutions under `precision`."""
  return jnp.dtype(jnp.bfloat16 if check_precision(precision) == 'bfloat16' else jnp.float32)


def matmul_level(precision: str, platform: str | None = None) -> str:
  """The `jax.lax.Precision` name of convolutions and matmuls under `precision` on `platform`
  (default: JAX's default backend)."""
  if check_precision(precision) == 'float32_full':
    return 'highest'
  platform = platform or jax.default_backend()
  return FLOAT32_LEVEL.get(platform, FLOAT32_LEVEL_OTHER)


@contextlib.contextmanager
def scope(level: str) -> Iterator[None]:
  """Traces the convolutions and matmuls inside at `level` (a `jax.lax.Precision` name)."""
  with jax.default_matmul_precision(level):
    yield


def current_level() -> str | None:
  """The level `scope` set for what is being traced now (None outside any scope)."""
  return jax.config.jax_default_matmul_precision


def precision_of(model_config) -> str:
  """`model.precision`, read from configs saved before it existed (`model.dtype`) too."""
  if 'precision' in model_config:
    return check_precision(model_config['precision'])
  return 'bfloat16' if model_config.get('dtype') == 'bfloat16' else 'float32'
