"""Checkpoints with orbax: the TrainState plus a small JSON record (input position, epoch, best).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when
complete, so a killed run never leaves a half-written checkpoint that restore would pick up). The
manager keeps the last `keep` checkpoints and, in addition, the one with the best val top-1.
"""

from __future__ import annotations

import logging as py_logging
import os
import signal
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

STATE = 'state'
META = 'meta'
BEST_METRIC = 'val_top1'


class _DropOrbaxInfo(py_logging.Filter):

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def quiet_orbax_logs() -> None:
  """Hides orbax's INFO lines (dozens per save) from the absl log; its warnings stay."""
  logging.get_absl_handler().addFilter(_DropOrbaxInfo())


def create_manager(directory: str, *, keep: int = 3, async_save: bool = True,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager for `directory` that keeps the `keep` latest and the best-by-val-top-1 steps."""
  preserve = policies.AnyPreservationPolicy([
      policies.LatestN(n=max(int(keep), 1)),
      policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                     keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preserve, enable_async_checkpointing=async_save, create=not read_only,
      read_only=read_only, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=(STATE, META))


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`'s arrays (what to restore into)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def save(manager: ocp.CheckpointManager, state: Any, meta: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None) -> None:
  """Starts saving `state` at `meta['step']`; returns once the arrays are copied off device."""
  manager.save(int(meta['step']), args=ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(dict(meta))}),
               metrics=dict(metrics) if metrics else None, force=True)


def restore(manager: ocp.CheckpointManager, template: Any,
            step: int | None = None) -> tuple[Any, dict[str, Any]]:
  """Restores step `step` (default: the latest) into the shapes/shardings of `template`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {manager.directory}')
  restored = manager.restore(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardRestore(abstract_like(template)), META: ocp.args.JsonRestore()}))
  return restored[STATE], dict(restored[META])


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON record saved with `step` (step, epoch, input position, best, last val)."""
  return dict(manager.restore(step, args=ocp.args.Composite(**{
      META: ocp.args.JsonRestore()}))[META])


def best_or_latest_step(directory: str) -> tuple[int, str]:
  """The step to evaluate in a checkpoint directory, and why.

  As the official `save_best='auto'`: the step with the best val top-1 recorded by the latest
  checkpoint, if it is still there; otherwise the latest step.
  """
  manager = create_manager(directory, read_only=True)
  latest = manager.latest_step()
  if latest is None:
    raise FileNotFoundError(f'{directory} holds no checkpoint (no finished step directory)')
  best = read_meta(manager, latest).get('best') or {}
  if best.get('step') is not None and best['step'] in manager.all_steps():
    return int(best['step']), f'best val top-1 ({best["val_top1"]:.4f}) of the run'
  if best.get('step') is not None:
    return latest, f'latest: the best step {best["step"]} is no longer on disk'
  return latest, 'latest: no validation recorded yet'


def restore_path(path: str, template: Any) -> tuple[Any, dict[str, Any]]:
  """Restores from a checkpoint directory (its latest step) or from one step's directory."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist')
  name = os.path.basename(path)
  if name.isdigit() and os.path.isdir(os.path.join(path, STATE)):
    manager = create_manager(os.path.dirname(path), read_only=True)
    return restore(manager, template, int(name))
  manager = create_manager(path, read_only=True)
  if manager.latest_step() is None:
    raise FileNotFoundError(f'{path!r} holds no checkpoint (expected numbered step directories)')
  return restore(manager, template)


class PreemptionFlag:
  """Records SIGTERM (preemption) so that training saves a checkpoint before exiting.

  With several processes, `agreed(step)` compares the flags of all processes every
  `sync_every_steps` steps (an all-gather), so that every process stops at the same step.
  """

  def __init__(self, sync_every_steps: int = 10):
    self.received = False
    self.sync_every_steps = max(int(sync_every_steps), 1)
    self._previous = None

  def __enter__(self) -> PreemptionFlag:
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption saves
      self._previous = None
    return self

  def _handle(self, signum, frame) -> None:
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping')
    self.received = True

  def agreed(self, step: int) -> bool:
    """True on every process once any process got SIGTERM (checked at synchronised steps)."""
    if jax.process_count() == 1:
      return self.received
    if step % self.sync_every_steps:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.received, np.int32))
    return bool(np.any(flags))

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
