"""Class-name files: one reader for data_prep (label maps) and for prediction (label files).

A label file is plain text with one class name per line (line i = class i; trailing blank lines
are ignored), or a ``.json`` file holding a list of names or an ``{"0": name, ...}`` object.
"""

from __future__ import annotations

import json
from typing import Sequence

from cost_jax import storage


def check_label_names(names: Sequence[str], where: str = 'label names') -> None:
  """Raises ValueError if `names` is empty or a name is blank, repeated or holds a newline."""
  if not names:
    raise ValueError(f'{where}: no class names')
  seen: dict[str, int] = {}
  for i, name in enumerate(names):
    if not isinstance(name, str) or not name.strip() or '\n' in name or '\r' in name:
      raise ValueError(f'{where}: class {i} (line {i + 1}) has an invalid name {name!r}')
    if name in seen:
      raise ValueError(f'{where}: class name {name!r} is used by classes {seen[name]} and {i}')
    seen[name] = i


def _json_names(path: str, text: str) -> list[str]:
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  if isinstance(data, dict):
    try:
      data = [data[str(i)] for i in range(len(data))]
    except KeyError as e:
      raise ValueError(f'{path}: keys must be 0..{len(data) - 1}, {e} is missing') from None
  if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
    raise ValueError(f'{path}: expected a JSON list of class names')
  return data


def read_label_names(path: str) -> list[str]:
  """Class names from a text file (line i = class i) or a JSON list / {index: name} object.

  Raises FileNotFoundError for a missing file and ValueError (naming the file and the class)
  for an empty file or a blank, repeated or multi-line name.
  """
  if not storage.isfile(storage.check(path, 'label file')):
    raise FileNotFoundError(f'label file {path!r} does not exist')
  text = storage.read_text(path)
  if path.endswith('.json'):
    names = _json_names(path, text)
  else:
    names = text.splitlines()
    while names and not names[-1].strip():
      names.pop()
  check_label_names(names, path)
  return names
