"""Checkpoints with orbax: the TrainState plus a small JSON record (input position, epoch, best).

Saves are asynchronous and atomic: on a local disk orbax writes to a temporary directory and
renames it when complete; on a bucket (`gs://`, no rename) it marks a finished step with a
`commit_success.txt` object. Either way a killed run never leaves a half-written checkpoint that
restore would pick up, and the next manager removes such leftovers. The manager keeps the last
`keep` checkpoints and, in addition, the one with the best val top-1.

Faults: `restore_newest_intact` resumes from the newest checkpoint that restores, moving damaged
ones aside (`checkpoint_integrity`); a full disk during `save` or `finish` becomes one
`DiskFullError` naming the checkpoint and the space it needs (`disk_space`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from cost_jax import storage
from cost_jax.checkpoints import disk_space, integrity, orbax_quiet
from cost_jax.checkpoints.integrity import META, STATE

BEST_METRIC = 'val_top1'
TMP_SUFFIX = '.orbax-checkpoint-tmp'


def quiet_orbax_logs() -> None:
  """Hides orbax's INFO lines (dozens per save), the tracebacks it logs before re-raising, and
  tensorstore's "Event loop is closed" noise after a failed read; orbax's warnings stay."""
  orbax_quiet.install()


@dataclasses.dataclass
class KeepRecordedBest(policies.PreservationPolicy):
  """Preserves the best step by val top-1 that the newest readable checkpoint record names.

  The record (`meta['best']`) is saved with every checkpoint, so the best step stays preserved
  after a resume (orbax's BestN only knows the metrics of the saves of the current process).
  """

  directory: str

  def should_preserve(self, checkpoints, *, context):
    del context
    best = recorded_best_step(self.directory)
    return [info.step == best for info in checkpoints]


def newest_record(directory: str) -> dict[str, Any]:
  """The JSON record (`meta`) of the newest finished step whose record is readable; {} if none.
  Read without orbax, so before anything is set up."""
  for step in integrity.finished_steps(directory):
    try:
      record = storage.read_bytes(storage.join(directory, str(step), META, 'metadata'))
      meta = json.loads(record.decode('utf-8'))
    except (OSError, ValueError):
      continue
    if isinstance(meta, dict):
      return meta
  return {}


def recorded_best_step(directory: str) -> int | None:
  """`meta['best']['step']` of the newest finished step whose record is readable."""
  best = newest_record(directory).get('best') or {}
  step = best.get('step') if isinstance(best, dict) else None
  return int(step) if step is not None else None


def create_manager(
  directory: str, *, keep: int = 3, async_save: bool = True, read_only: bool = False
) -> ocp.CheckpointManager:
  """A manager for `directory` (local or gs://) that keeps the `keep` latest and the
  best-by-val-top-1 steps."""
  directory = storage.absolute(directory)
  preserve = policies.AnyPreservationPolicy(
    [policies.LatestN(n=max(int(keep), 1)), KeepRecordedBest(directory)]
  )
  # Temporary directories are made before `save` returns: made in the background, a failure
  # there (a full disk) leaves the array writers waiting for them for orbax's 300 s timeout.
  options = ocp.CheckpointManagerOptions(
    preservation_policy=preserve,
    enable_async_checkpointing=async_save,
    create=not read_only,
    read_only=read_only,
    cleanup_tmp_directories=not read_only,
    async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
  )
  return ocp.CheckpointManager(directory, options=options, item_names=(STATE, META))


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`'s arrays (what to restore into)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def save(
  manager: ocp.CheckpointManager,
  state: Any,
  meta: Mapping[str, Any],
  metrics: Mapping[str, float] | None = None,
) -> None:
  """Starts saving `state` at `meta['step']`; returns once the arrays are copied off device.

  Raises DiskFullError if this save, or the previous one still being written, ran out of space.
  """
  try:
    manager.wait_until_finished()  # the previous save's failure surfaces here, as its own
  except Exception as e:
    orbax_quiet.after_failure()
    full = _as_disk_full(e, manager, state)
    if full is None:
      raise
    raise full from e
  try:
    manager.save(
      int(meta['step']),
      args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(dict(meta))}
      ),
      metrics=dict(metrics) if metrics else None,
      force=True,
    )
  except Exception as e:
    orbax_quiet.after_failure()
    full = _as_disk_full(e, manager, state, default_step=int(meta['step']))
    if full is None:
      raise
    raise full from e


def finish(manager: ocp.CheckpointManager, state: Any = None) -> None:
  """Waits for the save in progress and closes `manager` (DiskFullError if it ran out of space)."""
  error = None
  for step in (manager.wait_until_finished, manager.close):  # close waits for metadata writes
    try:
      step()
    except Exception as e:
      error = error or e
  if error is not None:
    orbax_quiet.after_failure()
    full = _as_disk_full(error, manager, state)
    if full is None:
      raise error
    raise full from error


def _step_of(path: str, directory: str) -> int | None:
  """The step whose (temporary) directory holds `path`, if it is under `directory` (a local
  checkpoints directory: only a disk fills up)."""
  path = os.path.abspath(path)
  if not path.startswith(directory + os.sep):
    return None
  name = os.path.relpath(path, directory).split(os.sep)[0].split(TMP_SUFFIX)[0]
  return int(name) if name.isdigit() else None


def _as_disk_full(
  error: Exception, manager: ocp.CheckpointManager, state: Any, default_step: int | None = None
) -> disk_space.DiskFullError | None:
  """A DiskFullError for `error` if it is ENOSPC (naming the step directory), else None."""
  directory = os.fspath(manager.directory)
  if storage.is_remote(directory):  # a bucket has no disk to fill
    return None
  file = disk_space.failed_path(error)
  step = _step_of(file, directory) if file else None
  if step is None:  # the save left its temporary directory behind
    names = os.listdir(directory) if os.path.isdir(directory) else []
    unfinished = [
      _step_of(os.path.join(directory, name), directory) for name in names if TMP_SUFFIX in name
    ]
    unfinished = [s for s in unfinished if s is not None]
    step = max(unfinished) if unfinished else default_step
  finished = integrity.finished_steps(directory)
  if finished:
    needed = disk_space.directory_bytes(os.path.join(directory, str(finished[0])))
  elif state is not None:
    needed = sum(int(getattr(x, 'nbytes', 0)) for x in jax.tree.leaves(state))
  else:
    needed = None
  target = os.path.join(directory, str(step)) if step is not None else directory
  return disk_space.disk_full_error(error, target, needed)


def restore(
  manager: ocp.CheckpointManager, template: Any, step: int | None = None
) -> tuple[Any, dict[str, Any]]:
  """Restores step `step` (default: the latest) into the shapes/shardings of `template`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {manager.directory}')
  orbax_quiet.quiet_event_loops()
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      **{STATE: ocp.args.StandardRestore(abstract_like(template)), META: ocp.args.JsonRestore()}
    ),
  )
  return restored[STATE], dict(restored[META])


def _on_all_processes(flag: bool) -> bool:
  """True where `flag` holds on every process (so that all take the same branch)."""
  if jax.process_count() == 1:
    return flag
  flags = multihost_utils.process_allgather(np.asarray(flag, np.int32))
  return bool(np.all(flags))


def restore_newest_intact(directory: str, template: Any) -> tuple[Any, dict[str, Any]]:
  """Restores the newest checkpoint of `directory` that can be restored into `template`.

  A newer one that cannot, and cannot be restored into its own shapes either, is damaged: it is
  logged in one line with the reason and renamed to `<step>.corrupt` (never deleted) once an
  intact one was restored. Raises NoIntactCheckpointError (nothing moved) if every checkpoint is
  damaged, TrainStateMismatchError if an intact one does not fit `template` (the config).
  """
  directory = storage.absolute(directory)
  manager = create_manager(directory, read_only=True)
  damaged: list[tuple[str, str]] = []
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      step_dir = storage.join(directory, str(step))
      try:
        state, meta = restore(manager, template, step)
        error = None
      except Exception as e:
        orbax_quiet.after_failure()
        error = e
      if _on_all_processes(error is None):
        break
      reason = integrity.verify_step(step_dir) if error is not None else None
      if _on_all_processes(reason is None):
        raise integrity.TrainStateMismatchError(
          f'checkpoint {step_dir} is intact but does not fit this config: '
          f'{integrity.short_reason(error, step_dir) if error else "see another process"}. '
          'Resume with the config of the run, or use a new --workdir'
        ) from None
      damaged.append((step_dir, reason or 'damaged on another process'))
    else:
      listing = '; '.join(f'{storage.basename(d)}: {r}' for d, r in damaged)
      raise integrity.NoIntactCheckpointError(
        f'no intact checkpoint in {directory} ({listing or "none finished"}); nothing was '
        'moved. Move the step directories away to train from scratch, or use a new --workdir'
      )
  finally:
    manager.close()
  for step_dir, reason in damaged:
    target = step_dir + integrity.CORRUPT_SUFFIX
    if jax.process_index() == 0:
      target = integrity.move_aside(step_dir)
    logging.warning('Checkpoint %s is damaged (%s); moved it to %s', step_dir, reason, target)
  if damaged and jax.process_count() > 1:
    multihost_utils.sync_global_devices('cost_jax:damaged checkpoints moved aside')
  if damaged:
    logging.warning('Resuming from step %s, the newest intact checkpoint', meta.get('step'))
  return state, meta


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON record saved with `step` (step, epoch, input position, best, last val)."""
  return dict(
    manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
  )


def best_or_latest_step(directory: str) -> tuple[int, str]:
  """The step to evaluate in a checkpoint directory, and why.

  As the official `save_best='auto'`: the step with the best val top-1 recorded by the latest
  checkpoint, if it is still there; otherwise the latest step.
  """
  manager = create_manager(directory, read_only=True)
  latest = manager.latest_step()
  if latest is None:
    raise FileNotFoundError(f'{directory} holds no checkpoint (no finished step directory)')
  try:
    best = read_meta(manager, latest).get('best') or {}
  except Exception as e:
    orbax_quiet.after_failure()
    step_dir = storage.join(storage.absolute(directory), str(latest))
    raise integrity.damaged_error(
      step_dir, integrity.verify_step(step_dir) or integrity.short_reason(e, step_dir)
    ) from None
  if best.get('step') is not None and best['step'] in manager.all_steps():
    return int(best['step']), f'best val top-1 ({best["val_top1"]:.4f}) of the run'
  if best.get('step') is not None:
    return latest, f'latest: the best step {best["step"]} is no longer on disk'
  return latest, 'latest: no validation recorded yet'


def restore_path(path: str, template: Any) -> tuple[Any, dict[str, Any]]:
  """Restores from a checkpoint directory (its latest step) or from one step's directory."""
  path = storage.absolute(path, '--checkpoint')
  if not storage.isdir(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist')
  name = storage.basename(path)
  if name.isdigit() and storage.isdir(storage.join(path, STATE)):
    manager = create_manager(storage.dirname(path), read_only=True)
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
