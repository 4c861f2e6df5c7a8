"""Paths and loaders for the MMAction2 reference data in ../shared/fixtures/mmaction2."""

from __future__ import annotations

import os

import numpy as np

FIXTURES = os.environ.get(
    'COST_JAX_FIXTURES',
    os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'fixtures', 'mmaction2'))
ARCHS = ('c2d', 'i3d', 'costa', 'costb')


def path(name: str) -> str:
  full = os.path.join(FIXTURES, name)
  if not os.path.exists(full):
    raise FileNotFoundError(f'reference fixture {full} is missing (set COST_JAX_FIXTURES)')
  return full


def load(name: str) -> dict[str, np.ndarray]:
  with np.load(path(name)) as data:
    return {k: data[k] for k in data.files}


def ncthw_to_nthwc(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 2, 3, 4, 1))
