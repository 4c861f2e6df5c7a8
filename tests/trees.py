"""Leaf-by-leaf comparisons of two pytrees that first check the trees have the same structure.

`zip` over two leaf lists pairs leaves by position only: it pairs up leaves of different trees
(another key order, a missing or extra entry) and drops the extra leaves of the longer list,
without a word.
"""

from __future__ import annotations

from typing import Any

import jax


def same_structure(a: Any, b: Any) -> bool:
  return jax.tree.structure(a) == jax.tree.structure(b)


def _difference(a: Any, b: Any) -> str:
  paths = [
    [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(t)]
    for t in (a, b)
  ]
  only = [[p for p in paths[i] if p not in set(paths[1 - i])] for i in (0, 1)]
  if only[0] or only[1]:
    return f'leaves only in the first: {only[0][:5]}, only in the second: {only[1][:5]}'
  return f'same leaf paths, other nodes: {jax.tree.structure(a)} vs {jax.tree.structure(b)}'


def leaf_pairs(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
  """(key path, leaf of `a`, leaf of `b`) for every leaf, in order; an AssertionError (saying
  what differs) unless `a` and `b` have the same tree structure."""
  if not same_structure(a, b):
    raise AssertionError(f'the trees differ: {_difference(a, b)}'[:3000])
  return [
    (jax.tree_util.keystr(path), x, y)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b))
  ]
