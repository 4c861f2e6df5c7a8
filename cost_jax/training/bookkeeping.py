"""The train loop's per-step bookkeeping: the train-metrics window between log lines, the best
validation so far, and the metadata saved with each checkpoint."""

from __future__ import annotations

import time
from typing import Any

import ml_collections
import numpy as np

from cost_jax.runtime import distributed
from cost_jax.training import sharding


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; training stops and keeps the last good checkpoint."""


class MetricsWindow:
  """Train metrics between two log lines. Each step's device metrics are read one step late,
  so that the host does not wait for the device; a non-finite loss stops the run."""

  def __init__(self):
    self.pending: list[tuple[int, Any]] = []
    self.values: list[dict[str, float]] = []
    self.start = time.monotonic()

  def add(self, step: int, device_metrics: Any, last_checkpoint: int | None) -> None:
    self.drain(last_checkpoint)
    self.pending.append((step, device_metrics))

  def drain(self, last_checkpoint: int | None) -> None:
    for step, device_metrics in self.pending:
      host = {k: float(v) for k, v in sharding.to_host(device_metrics).items()}
      bad = {k: host[k] for k in ('loss', 'param_norm') if not np.isfinite(host[k])}
      if bad:
        raise NonFiniteLossError(
          f'non-finite loss at step {step} ({bad}); stopping. The last checkpoint '
          f'(step {last_checkpoint}) is intact: lower optimizer.base_lr, check the data, or '
          'keep optimizer.grad_clip_norm set.'
        )
      self.values.append(host)
    self.pending.clear()

  def summary(self, batch_size: int) -> dict[str, float]:
    """Means over the window, throughput; then starts a new window."""
    elapsed = max(time.monotonic() - self.start, 1e-9)
    scalars = {f'train/{k}': float(np.mean([m[k] for m in self.values])) for k in self.values[0]}
    scalars['train/clips_per_sec'] = len(self.values) * batch_size / elapsed
    self.values.clear()
    self.start = time.monotonic()
    return scalars


class RunRecord:
  """The last and the best validation of a run (the best among saved steps), carried in every
  checkpoint's metadata so that a resumed run continues them."""

  def __init__(
    self, config: ml_collections.ConfigDict, steps_per_epoch: int, meta: dict | None = None
  ):
    meta = meta or {}
    self.batch_size = config.batch_size
    self.steps_per_epoch = steps_per_epoch
    self.best: dict[str, Any] = dict(meta.get('best') or {'val_top1': None, 'step': None})
    self.val: dict[str, float] | None = meta.get('val')

  def validated(self, val: dict[str, float]) -> None:
    self.val = val

  def checkpoint_meta(self, step: int, step_val: dict[str, float] | None) -> dict[str, Any]:
    """The metadata of a checkpoint saved at `step`; `step_val` is this step's validation, if
    any, and becomes the best when its top-1 beats it."""
    if step_val is not None and (
      self.best['val_top1'] is None or step_val['top1'] > self.best['val_top1']
    ):
      self.best = {'val_top1': step_val['top1'], 'step': step}
    return {
      'step': step,
      'epoch': step / self.steps_per_epoch,
      'train_input_position': step,
      'batch_size': self.batch_size,
      'steps_per_epoch': self.steps_per_epoch,
      'topology': distributed.topology(),
      'best': dict(self.best),
      'val': self.val,
    }

  def summary(self, step: int, total_steps: int, interrupted: bool) -> dict[str, Any]:
    return {
      'interrupted': interrupted,
      'val': self.val,
      'best': dict(self.best),
      'step': step,
      'steps_per_epoch': self.steps_per_epoch,
      'total_steps': total_steps,
    }
