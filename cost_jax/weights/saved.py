"""A model on disk: `model_config.json` plus an orbax checkpoint of its variables.

This is what `cost_jax.tools.import_mmaction2` writes and what prediction and export read.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import ml_collections
import orbax.checkpoint as ocp

from cost_jax import storage

CONFIG_FILE = 'model_config.json'
VARIABLES_DIR = 'variables'


def _plain(value):
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def save_model(directory: str, model_config: Mapping[str, Any], variables: Mapping) -> str:
  """Writes the model config and variables under `directory` (local or gs://); returns its
  path."""
  directory = storage.absolute(directory, 'output')
  storage.makedirs(directory)
  config = {k: _plain(v) for k, v in dict(model_config).items()}
  storage.write_text(storage.join(directory, CONFIG_FILE), json.dumps(config, indent=2))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(
      storage.join(directory, VARIABLES_DIR),
      {k: variables[k] for k in ('params', 'batch_stats')},
      force=True,
    )
  return directory


def lists_to_tuples(value):
  """JSON lists back to the tuples configs use (recursively, also inside dicts)."""
  if isinstance(value, list):
    return tuple(lists_to_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: lists_to_tuples(v) for k, v in value.items()}
  return value


def load_model(directory: str) -> tuple[ml_collections.ConfigDict, dict]:
  """Reads what `save_model` wrote: (model_config, variables)."""
  directory = storage.absolute(directory)
  config_path = storage.join(directory, CONFIG_FILE)
  if not storage.exists(config_path):
    raise FileNotFoundError(f'{config_path} is missing: {directory} is not a saved cost_jax model')
  model_config = ml_collections.ConfigDict(lists_to_tuples(storage.read_json(config_path)))
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(storage.join(directory, VARIABLES_DIR))
  return model_config, variables
