"""Settings of the test session, made before any test module imports JAX.

XLA compiles with the tests' flags (tests/xla_cache.py), as the tests' subprocesses do. Every
compiled program also goes to the persistent cache that the pytest workers and the subprocesses
share, so a program one of them compiled is loaded, not compiled again, by the others.
"""

import os

from tests import garbage_collector
from tests.xla_cache import XLA_CACHE, XLA_TEST_FLAGS

for _flag in XLA_TEST_FLAGS:
  if _flag not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_flag}'.strip()
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', XLA_CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# pytest-xdist hands whole files to its workers (`--dist=loadfile` in pyproject.toml), so that a
# file's module fixtures (a training run, a converted dataset, a GCS emulator) are built once, and
# in this order: the longest files first, so that no worker is left with one of them at the end.
LONGEST_FIRST = (
  'test_pod_scale.py',
  'test_cloud_storage.py',
  'test_models.py',
  'test_train_distributed.py',
  'test_faults.py',
  'test_finetune.py',
  'test_train_resume.py',
  'test_train_devices.py',
  'test_weights.py',
  'test_device_check.py',
)


def pytest_collection_modifyitems(items: list) -> None:
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def pytest_collection_finish(session) -> None:
  del session
  garbage_collector.quiet()  # the test modules have imported the libraries
