"""The MMAction2 reference data the parity tests read (tests/testdata/mmaction2/).

`COST_JAX_FIXTURES` points the tests at another folder of the same layout, for example one just
written by `tests/testdata/regenerate_mmaction2.py`.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np

from cost_jax.weights.torch_pickle import load_state_dict

FIXTURES = os.environ.get('COST_JAX_FIXTURES') or os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'testdata', 'mmaction2'
)
ARCHS = ('c2d', 'i3d', 'costa', 'costb')


def path(name: str) -> str:
  full = os.path.join(FIXTURES, name)
  if not os.path.exists(full):
    raise FileNotFoundError(f'reference data {full} is missing (COST_JAX_FIXTURES={FIXTURES})')
  return full


def load(name: str) -> dict[str, np.ndarray]:
  with np.load(path(name)) as data:
    return {k: data[k] for k in data.files}


def load_json(name: str) -> Any:
  with open(path(name)) as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def _io() -> dict[str, np.ndarray]:
  return load('io.npz')


def io(arch: str) -> dict[str, np.ndarray]:
  """Input and MMAction2 outputs of one arch: `input`, `eval_logits`, `train_bn_after:<key>`..."""
  data = _io()
  prefix = f'{arch}/'
  out = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
  out['input'] = data['input']
  return out


def state_dict(arch: str) -> dict[str, np.ndarray]:
  """The tensors of `{arch}.pth`, read with the project's own safe reader."""
  return load_state_dict(path(f'{arch}.pth'))[0]


def inflation(arch: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(report, tensors) of MMAction2's inflation of resnet2d_tv.pth into `arch`.

  The tensors file stores a key once when every arch inflated it to the same values, and as
  `{arch}/{key}` where they differ.
  """
  report = load_json('inflation.json')[arch]
  stored = load('inflation.npz')
  tensors = {k: stored.get(f'{arch}/{k}', stored.get(k)) for k in report['from_2d']}
  missing = [k for k, v in tensors.items() if v is None]
  if missing:
    raise KeyError(f'inflation.npz has no tensor for {arch}: {missing[:5]}')
  return report, tensors


def ncthw_to_nthwc(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 2, 3, 4, 1))


def checkpoint_with_classes(directory: str, arch: str, num_classes: int, seed: int = 0) -> str:
  """`{arch}.pth`'s tensors with a random `num_classes`-way head, as an MMAction2-layout `.npz`
  in `directory` (e.g. a stand-in for an official 400-class Kinetics checkpoint)."""
  state = dict(state_dict(arch))
  width = state['cls_head.fc_cls.weight'].shape[1]
  rng = np.random.default_rng(seed)
  state['cls_head.fc_cls.weight'] = rng.normal(0, 1, (num_classes, width)).astype(np.float32)
  state['cls_head.fc_cls.bias'] = rng.normal(0, 1, (num_classes,)).astype(np.float32)
  path = os.path.join(directory, f'{arch}_{num_classes}_classes.npz')
  np.savez(path, **state)
  return path
