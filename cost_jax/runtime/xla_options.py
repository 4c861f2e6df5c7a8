"""XLA compiler options chosen by measurement, for the platform a function is compiled for.

jaxlib 0.10's XLA:CPU hands convolutions (and dots, reductions, elementwise fusions) to the YNN
kernel library by default. For this model's 2D convolutions that is the slow choice: measured on
a 2-core x86 CPU at ResNet-50 shapes (benchmarks/README.md), XLA's own convolution
emitter runs the forward pass 1.1-1.9x and the kernel gradient 1.2-4.4x faster (56x56, 64
channels, 16 frames: 25 -> 14 and 105 -> 24 ms); the input gradient 1.8x faster at stride 1 on
56x56 maps, though up to 1.7x slower in the stride-2 layers. YNN keeps the single matmuls and the
reductions (BatchNorm's statistics), where it was measured faster than without it.

The options are applied only where they were measured (CPU, jaxlib 0.10.x); elsewhere XLA's
defaults stand. `tuned=False` gives XLA's defaults everywhere, for comparisons.
"""

from __future__ import annotations

import jax
import jaxlib

# Library fusions YNN may take on CPU; convolutions are left out (see above).
CPU_YNN_FUSION_TYPES = ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT', 'LIBRARY_FUSION_TYPE_REDUCE')
MEASURED_JAXLIB = (0, 10)  # the option and its values are experimental: other releases differ


def compiler_options(platform: str | None = None, tuned: bool = True) -> dict[str, str] | None:
  """`compiler_options` for `jax.jit` on `platform` (default: JAX's default backend)."""
  if not tuned or (platform or jax.default_backend()) != 'cpu':
    return None
  if tuple(int(v) for v in jaxlib.__version__.split('.')[:2]) != MEASURED_JAXLIB:
    return None
  return {'xla_cpu_experimental_ynn_fusion_type': ','.join(CPU_YNN_FUSION_TYPES)}


def jit(fun, *, tuned: bool = True, **jit_kwargs):
  """`jax.jit` with the measured compiler options of JAX's default backend."""
  return jax.jit(fun, compiler_options=compiler_options(tuned=tuned), **jit_kwargs)
