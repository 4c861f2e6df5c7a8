"""JAX's persistent compilation cache, on by default for the command-line tools.

Compiling the full R50 train step takes most of the time to the first step. With the cache, a
resumed run, `--mode=test` after training, a re-run of `predict` and the tests load compiled
programs instead of compiling them again (entries are keyed by the program, the devices, the
compile options and the JAX version, so a stale one is never used).

JAX's own settings decide: `JAX_COMPILATION_CACHE_DIR` (a local path or gs://) picks the
directory, `JAX_ENABLE_COMPILATION_CACHE=false` turns it off. When neither is set, the cache is
`~/.cache/cost_jax/compilation`.
"""

from __future__ import annotations

import os

DEFAULT_DIR = '~/.cache/cost_jax/compilation'


def enable() -> str | None:
  """Points JAX's persistent compilation cache at its directory; returns it (None when off)."""
  import jax

  if not jax.config.jax_enable_compilation_cache:
    return None
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(DEFAULT_DIR))
  return jax.config.jax_compilation_cache_dir
