"""The correspondence between MMAction2 state-dict keys and Flax variables.

A torch key such as ``backbone.layer2.0.conv2.conv.weight`` names a Flax leaf
``('params', 'backbone', 'layer2_0', 'conv2', 'conv', 'kernel')`` and a layout conversion.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

Path = tuple[str, ...]

_BLOCK = re.compile(r'^layer(\d+)\.(\d+)$')

# torch leaf name -> (collection, flax leaf name)
_BN_LEAVES = {
  'weight': ('params', 'scale'),
  'bias': ('params', 'bias'),
  'running_mean': ('batch_stats', 'mean'),
  'running_var': ('batch_stats', 'var'),
}
IGNORED_SUFFIXES = ('.num_batches_tracked',)


def conv_kernel_to_flax(w: np.ndarray) -> np.ndarray:
  """torch (O, I, kt, kh, kw) -> Flax (kt, kh, kw, I, O)."""
  return np.transpose(w, (2, 3, 4, 1, 0))


def conv_kernel_to_torch(k: np.ndarray) -> np.ndarray:
  return np.transpose(k, (4, 3, 0, 1, 2))


def cost_kernel_to_flax(w: np.ndarray) -> np.ndarray:
  """CoST torch (O, I, 1, k, k) -> Flax (k, k, I, O)."""
  if w.ndim != 5 or w.shape[2] != 1:
    raise ValueError(f'a CoST kernel must be (O, I, 1, k, k), got {w.shape}')
  return np.transpose(w[:, :, 0], (2, 3, 1, 0))


def cost_kernel_to_torch(k: np.ndarray) -> np.ndarray:
  return np.transpose(k, (3, 2, 0, 1))[:, :, None]


def _module_path(parts: list[str]) -> Path:
  """'backbone.layer1.0.conv2' parts -> ('backbone', 'layer1_0', 'conv2')."""
  out = []
  i = 0
  while i < len(parts):
    if i + 1 < len(parts) and _BLOCK.match(f'{parts[i]}.{parts[i + 1]}'):
      out.append(f'{parts[i]}_{parts[i + 1]}')
      i += 2
    else:
      out.append(parts[i])
      i += 1
  return tuple(out)


def torch_to_flax(key: str, is_cost_conv: bool) -> tuple[str, Path, Callable] | None:
  """Maps one torch key to (collection, Flax path, numpy converter); None if it has no place.

  `is_cost_conv`: the key's module is a CoST layer (its `conv.weight` is a shared 2D kernel).
  """
  if key.endswith(IGNORED_SUFFIXES):
    return None
  parts = key.split('.')
  leaf, module = parts[-1], parts[:-1]
  identity = lambda a: a
  if module and module[-1] == 'bn' and leaf in _BN_LEAVES:
    collection, name = _BN_LEAVES[leaf]
    return collection, _module_path(module) + (name,), identity
  if module and module[-1] in ('fc1', 'fc2', 'fc_cls'):
    if leaf == 'weight':
      return 'params', _module_path(module) + ('kernel',), lambda a: np.ascontiguousarray(a.T)
    if leaf == 'bias':
      return 'params', _module_path(module) + ('bias',), identity
    return None
  if module and module[-1] == 'conv':
    if leaf == 'alpha':
      return 'params', _module_path(module) + ('alpha',), identity
    if leaf == 'weight':
      convert = cost_kernel_to_flax if is_cost_conv else conv_kernel_to_flax
      return 'params', _module_path(module) + ('kernel',), convert
    if leaf == 'bias':
      return 'params', _module_path(module) + ('bias',), identity
  return None


def flax_to_torch_key(collection: str, path: Path) -> str:
  """The MMAction2 key of a Flax leaf (inverse of `torch_to_flax`)."""
  *module, leaf = path
  torch_module = '.'.join(
    m.replace('_', '.') if _BLOCK.match(m.replace('_', '.')) else m for m in module
  )
  if collection == 'batch_stats':
    return f'{torch_module}.{"running_mean" if leaf == "mean" else "running_var"}'
  if module[-1] == 'bn':
    return f'{torch_module}.{"weight" if leaf == "scale" else "bias"}'
  if leaf == 'kernel':
    return f'{torch_module}.weight'
  return f'{torch_module}.{leaf}'
