"""The tests' XLA settings, shared by the pytest workers (tests/conftest.py) and the processes
they start (train_testlib.env, the notebook and device-check tests): the directory of the
persistent compilation cache, and the compiler flags. Importing this module imports no JAX, so
conftest can set them before JAX reads its settings.

The tests check numbers, not speed, so XLA compiles for the least compile time: LLVM at -O0, and
the elemental emitters instead of XLA:CPU's MLIR fusion emitters, which at -O0 still run their
own optimisation pipeline (a tiny train step: 2.4 s -> 0.9 s to compile). Neither reorders
floating-point arithmetic; the emitters' math functions (exp, log, ...) may round differently in
the last bit.
"""

import os
import tempfile

XLA_CACHE = os.path.join(tempfile.gettempdir(), f'cost_jax_test_xla_cache_{os.getuid()}')
XLA_TEST_FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false')
