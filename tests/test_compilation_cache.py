"""The command-line tools turn on JAX's persistent compilation cache (runtime/compilation_cache)."""

import os
import subprocess
import sys

from tests import train_testlib

SCRIPT = """
import jax, jax.numpy as jnp
from cost_jax.runtime import compilation_cache
print('dir=' + str(compilation_cache.enable()))
print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum())
"""


def _run(tmp_path, **env_overrides):
  env = train_testlib.env()
  for key in ('JAX_COMPILATION_CACHE_DIR', 'JAX_ENABLE_COMPILATION_CACHE'):
    env.pop(key, None)
  env.update(HOME=str(tmp_path / 'home'), **env_overrides)
  out = subprocess.run(
    [sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.split('dir=', 1)[1].split('\n', 1)[0]


def _entries(directory):
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_the_default_cache_is_under_the_home_cache_and_fills_once(tmp_path):
  default = str(tmp_path / 'home' / '.cache' / 'cost_jax' / 'compilation')
  assert _run(tmp_path) == default
  first = _entries(default)
  assert first  # the program was written ...
  assert _run(tmp_path) == default
  assert _entries(default) == first  # ... and read back, not compiled and written again


def test_jax_settings_choose_the_directory_or_turn_it_off(tmp_path):
  chosen = str(tmp_path / 'chosen')
  assert _run(tmp_path, JAX_COMPILATION_CACHE_DIR=chosen) == chosen
  assert _entries(chosen)
  assert _run(tmp_path, JAX_ENABLE_COMPILATION_CACHE='false') == 'None'
  assert not os.path.exists(tmp_path / 'home' / '.cache')
