"""The measured XLA options: applied on CPU only, accepted by this jaxlib, same numbers."""

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest

from cost_jax.runtime import xla_options


def test_options_only_on_measured_platform_and_jaxlib(monkeypatch):
  options = xla_options.compiler_options('cpu')
  assert options == {
    'xla_cpu_experimental_ynn_fusion_type': ','.join(xla_options.CPU_YNN_FUSION_TYPES)
  }
  assert xla_options.compiler_options('gpu') is None
  assert xla_options.compiler_options('tpu') is None
  assert xla_options.compiler_options('cpu', tuned=False) is None
  monkeypatch.setattr(jaxlib, '__version__', '0.11.0')
  assert xla_options.compiler_options('cpu') is None


def _conv(x, kernel):
  dims = ('NHWC', 'HWIO', 'NHWC')
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=dims)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the options are for XLA:CPU')
def test_options_take_convolutions_out_of_the_library_fusions():
  # Compiled only: layer1's 3x3 convolution (YNN skips tiny ones by its cost model).
  x = jax.ShapeDtypeStruct((16, 56, 56, 64), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)
  default_hlo = jax.jit(_conv).lower(x, kernel).compile().as_text()
  tuned_hlo = xla_options.jit(_conv).lower(x, kernel).compile().as_text()
  assert '__ynn_fusion' in default_hlo  # what jaxlib 0.10 does by default
  assert '__ynn_fusion' not in tuned_hlo and 'convolution(' in tuned_hlo


def test_jit_with_options_gives_the_same_numbers():
  # A convolution, its gradients and a BatchNorm-like reduction: the ops the options move.
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))

  def loss(x, kernel):
    y = _conv(x, kernel)
    y = (y - y.mean((0, 1, 2))) / (y.std((0, 1, 2)) + 1e-5)
    return jnp.sum(jax.nn.relu(y) ** 2)

  fn = jax.value_and_grad(loss, argnums=(0, 1))
  tuned = xla_options.jit(fn)
  value, grads = tuned(x, kernel)
  want_value, want_grads = jax.jit(fn)(x, kernel)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
