"""The layout of a training workdir, in one place.

WORKDIR/config.json                     the resolved config of the run
WORKDIR/checkpoints/<step>/{state,meta}  orbax checkpoints (see saving.py)
WORKDIR/manifests/<split>.manifest.json the manifests of the dataset splits used
WORKDIR/test_<split>_{scores.npz,summary.json}, TensorBoard events, ...
"""

from __future__ import annotations

import json

import ml_collections

from cost_jax import storage
from cost_jax.weights import saved

CONFIG_FILE = 'config.json'
CHECKPOINTS = 'checkpoints'
MANIFESTS = 'manifests'


def config_path(workdir: str) -> str:
  return storage.join(workdir, CONFIG_FILE)


def checkpoints_dir(workdir: str) -> str:
  return storage.join(workdir, CHECKPOINTS)


def manifest_path(workdir: str, split: str) -> str:
  return storage.join(workdir, MANIFESTS, f'{split}.manifest.json')


def has_checkpoint(workdir: str) -> bool:
  """Whether the workdir holds a finished checkpoint step (a run to resume)."""
  return any(name.isdigit() for name in storage.listdir(checkpoints_dir(workdir)))


def find_workdir(path: str) -> str | None:
  """The workdir that `path` (a workdir, its checkpoints directory or a step) belongs to."""
  for candidate in (path, storage.dirname(path), storage.dirname(storage.dirname(path))):
    if storage.isfile(config_path(candidate)) and storage.isdir(checkpoints_dir(candidate)):
      return candidate
  return None


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config the trainer wrote to `workdir/config.json` (lists back to tuples)."""
  path = config_path(workdir)
  try:
    data = json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  for key in ('model', 'data'):
    if key not in data:
      raise ValueError(f'{path}: no {key!r} section; not a cost_jax trainer config')
  return ml_collections.ConfigDict(saved.lists_to_tuples(data))
