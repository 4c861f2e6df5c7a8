"""The class names of the official CoST models, shipped with the package (`labels/`).

* `kinetics400.txt`: the 400 Kinetics-400 classes in MMAction2's order (its
  `tools/data/kinetics/label_map_k400.txt` at v0.24.1: the names sorted), which is also the order
  `data_prep.kinetics400` numbers them in.
* `moments_in_time.txt`: the 339 Moments in Time (v1) classes in the order of the dataset's
  `moments_categories.txt` (MMAction2's `tools/data/mit/label_map.txt` at v0.24.1), which is the
  order `data_prep.mit` numbers them in.

A model with 400 or 339 classes and no label map of its own gets these names; `--labels=none`
keeps the `class_<i>` names (a model fine-tuned on another dataset of that size).
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import Sequence

from cost_jax.data.labels import check_label_names


@dataclasses.dataclass(frozen=True)
class BuiltinLabels:
  dataset: str  # e.g. 'Kinetics-400'
  file: str  # under cost_jax/inference/labels/
  num_classes: int


BUILTIN = (
  BuiltinLabels('Kinetics-400', 'kinetics400.txt', 400),
  BuiltinLabels('Moments in Time', 'moments_in_time.txt', 339),
)


def path(entry: BuiltinLabels) -> str:
  """The file of `entry` inside the installed package."""
  return str(resources.files('cost_jax.inference').joinpath('labels', entry.file))


@functools.lru_cache(maxsize=None)
def _read(file: str, num_classes: int) -> tuple[str, ...]:
  text = resources.files('cost_jax.inference').joinpath('labels', file).read_text('utf-8')
  names = text.splitlines()
  check_label_names(names, f'built-in label file {file}')
  if len(names) != num_classes:  # a damaged installation, not a user's mistake
    raise RuntimeError(f'built-in label file {file}: {len(names)} names, expected {num_classes}')
  return tuple(names)


def names(entry: BuiltinLabels) -> list[str]:
  """The class names of `entry`, line i = class i."""
  return list(_read(entry.file, entry.num_classes))


def for_num_classes(num_classes: int) -> BuiltinLabels | None:
  """The built-in list for a model with `num_classes` classes, or None."""
  return next((b for b in BUILTIN if b.num_classes == num_classes), None)


def order_warning(label_map: Sequence[str]) -> str | None:
  """A warning when `label_map` holds exactly the names of a built-in list in another order:
  class i of the official checkpoints is then not class i of that data."""
  entry = for_num_classes(len(label_map))
  if entry is None:
    return None
  official = names(entry)
  if list(label_map) == official or set(label_map) != set(official):
    return None
  first = next(i for i, (a, b) in enumerate(zip(label_map, official)) if a != b)
  return (
    f'the label map holds the {entry.dataset} classes in another order than the official '
    f'checkpoints (class {first}: {label_map[first]!r} here, {official[first]!r} there): '
    'the official weights would score the wrong classes'
  )
