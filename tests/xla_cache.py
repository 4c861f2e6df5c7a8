"""The directory of the tests' persistent XLA compilation cache, shared by the pytest workers
(tests/conftest.py) and the subprocesses they start (train_testlib.env). Importing this module
imports no JAX, so conftest can set the cache before JAX reads its settings."""

import os
import tempfile

XLA_CACHE = os.path.join(tempfile.gettempdir(), f'cost_jax_test_xla_cache_{os.getuid()}')
