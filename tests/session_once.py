"""A guard for module fixtures that must be built once per test session."""

from __future__ import annotations

import os

import pytest


def claim(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
  """Fails if another pytest-xdist worker of this session already built fixture `name`: its
  file's tests were split between workers, and each built it again (pyproject.toml's
  `--dist=loadfile` keeps a file on one worker)."""
  if 'PYTEST_XDIST_WORKER' not in os.environ:
    return  # one process: a module fixture is built once
  shared = tmp_path_factory.getbasetemp().parent  # pytest-N/, above each worker's popen-gwK/
  try:
    os.close(os.open(shared / f'built-once-{name}', os.O_CREAT | os.O_EXCL | os.O_WRONLY))
  except FileExistsError:
    raise AssertionError(
      f'fixture {name!r} was built by two pytest-xdist workers: run with --dist=loadfile'
    ) from None
