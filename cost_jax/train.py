"""Orchestration of training (`train_and_evaluate`) and of the official test protocol (`test`).

The flow: validate the config -> read the dataset manifests -> build model, optimiser, state ->
resume from the latest checkpoint (state and input position) -> jitted steps over the device
mesh -> metrics, logs, checkpoints. The numerics live in `steps.py`, `optim.py`, `metrics.py`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from cost_jax import checkpointing, config_checks, init_weights, metrics as metrics_lib, optim
from cost_jax import sharding, steps
from cost_jax.inference import loading
from cost_jax.weights.mmaction2 import import_mmaction2
from cost_jax.data import input_pipeline
from cost_jax.data import schema
from cost_jax.models import create_model
from cost_jax.state import TrainState, create_train_state

CHECKPOINT_DIR = 'checkpoints'


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; training stops and keeps the last good checkpoint."""


# ----------------------------------------------------------------------------- setup helpers


def _is_main() -> bool:
  return jax.process_index() == 0


def _write_json(path: str, obj: Any) -> None:
  if _is_main():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    schema.write_json_atomic(path, obj)


def _save_run_info(config: ml_collections.ConfigDict, workdir: str,
                   infos: dict[str, dict[str, Any]]) -> None:
  """The resolved config and the manifests of the splits used, next to the results."""
  _write_json(os.path.join(workdir, 'config.json'), json.loads(config.to_json_best_effort()))
  for split, info in infos.items():
    _write_json(os.path.join(workdir, 'manifests', f'{split}.manifest.json'), info['manifest'])


def _create_writer(workdir: str) -> metric_writers.MetricWriter:
  if _is_main():
    return metric_writers.create_default_writer(workdir, asynchronous=False)
  return metric_writers.MultiWriter([])


def _dataset_info(config: ml_collections.ConfigDict, split: str, *,
                  min_examples: int = 1) -> dict[str, Any]:
  info = input_pipeline.get_dataset_info(config.data.data_dir, split)
  config_checks.check_dataset(config, split, info, min_examples=min_examples)
  return info


def _state_builder(config, model, tx) -> Callable[..., TrainState]:
  sample = jnp.zeros((1, config.data.clip_len, 32, 32, 3), jnp.float32)

  def build(rng, variables=None):
    return create_train_state(model, tx, rng, sample, variables)
  return build


def _abstract_state(config, model, tx, mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the train state, without computing it."""
  shapes = jax.eval_shape(_state_builder(config, model, tx), jax.random.PRNGKey(0))
  repl = sharding.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), shapes)


def _initial_state(config, model, tx, mesh, init_source) -> TrainState:
  variables = init_weights.initial_variables(config, init_source, seed=config.seed)
  build = jax.jit(_state_builder(config, model, tx), out_shardings=sharding.replicated(mesh))
  return build(jax.random.PRNGKey(config.seed), variables)


class _SigtermFlag:
  """Records SIGTERM (preemption) so that the loop can save before exiting."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption saves
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping')
    self.received = True

  def agreed(self) -> bool:
    """True on every process as soon as any process got SIGTERM."""
    if jax.process_count() == 1:
      return self.received
    flags = multihost_utils.process_allgather(np.asarray(self.received, np.int32))
    return bool(np.any(flags))

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------- inference


def _infer(step_fn, variables, batches: Iterable[dict[str, np.ndarray]], num_batches: int,
           mesh, expected: int) -> dict[str, np.ndarray]:
  """Runs a jitted (variables, batch) -> (scores, label, mask, index) step over a split.

  Returns the scores, labels and indices of the real (unmasked) videos, sorted by index, after
  checking that every video of the split was seen exactly once.
  """
  outputs = []
  for _, host_batch in zip(range(num_batches), batches):
    batch = sharding.host_to_global(
        {k: host_batch[k] for k in ('clips', 'label', 'mask', 'index')}, mesh)
    outputs.append(step_fn(variables, batch))
  scores, labels, masks, indices = (
      np.concatenate(parts) for parts in zip(*sharding.to_host(outputs)))
  keep = masks.astype(bool)
  scores, labels, indices = scores[keep], labels[keep], indices[keep]
  if len(np.unique(indices)) != len(indices) or len(indices) != expected:
    raise RuntimeError(f'inference saw {len(indices)} videos ({len(np.unique(indices))} '
                       f'distinct) but the split has {expected}')
  order = np.argsort(indices)
  return {'index': indices[order], 'label': labels[order], 'scores': scores[order]}


def _inference_fn(step, mesh):
  """Jits step(variables, batch) -> (scores, label, mask, index), all replicated on output."""
  def run(variables, batch):
    return step(variables, batch), batch['label'], batch['mask'], batch['index']
  return jax.jit(run, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


# ----------------------------------------------------------------------------- training


def _has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _steps_per_epoch(config: ml_collections.ConfigDict, train_info: dict[str, Any]) -> int:
  if config.steps_per_epoch > 0:
    return int(config.steps_per_epoch)
  return train_info['num_examples'] // config.batch_size


def _check_finite(step: int, metrics: dict[str, float], last_checkpoint: int | None) -> None:
  """Stops on a NaN/inf loss, or on parameters that overflowed in the update of `step`."""
  bad = {k: metrics[k] for k in ('loss', 'param_norm') if not np.isfinite(metrics[k])}
  if bad:
    raise NonFiniteLossError(
        f'non-finite loss at step {step} ({bad}); stopping. The last checkpoint '
        f'(step {last_checkpoint}) is intact: lower optimizer.base_lr, check the data, or keep '
        'optimizer.grad_clip_norm set.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from the checkpoint there if any.

  Returns a summary: final step, last val metrics, and whether training was interrupted (by
  SIGTERM, after saving a checkpoint).
  """
  workdir = os.path.abspath(workdir)
  # -- fail fast: nothing below this block reads video data or compiles anything
  config_checks.check_model_and_optimizer(config)
  config_checks.check_batching(config, num_devices=jax.device_count(),
                               num_processes=jax.process_count())
  config_checks.check_data_dir(config)
  train_split, val_split = config.data.train_split, config.data.val_split
  min_train = config.batch_size if config.steps_per_epoch <= 0 else 1
  infos = {train_split: _dataset_info(config, train_split, min_examples=min_train)}
  infos[val_split] = _dataset_info(config, val_split)
  # The weights to start from are resolved (downloaded) now, unless the run resumes.
  init_source = None if _has_checkpoint(workdir) else init_weights.resolve(config)

  os.makedirs(workdir, exist_ok=True)
  _save_run_info(config, workdir, infos)
  mesh = sharding.create_mesh()
  steps_per_epoch = _steps_per_epoch(config, infos[train_split])
  total_steps = config.num_epochs * steps_per_epoch
  accum = config.grad_accum_steps
  host_batch = config.batch_size // jax.process_count()

  model = create_model(config.model)
  schedule = optim.create_learning_rate_schedule(
      config.optimizer, global_batch_size=config.batch_size, steps_per_epoch=steps_per_epoch)
  tx = optim.create_optimizer(config.optimizer, schedule, config.model.frozen_stages)

  manager = checkpointing.create_manager(os.path.join(workdir, CHECKPOINT_DIR),
                                         keep=config.keep_checkpoints)
  best = {'val_top1': None, 'step': None}
  summary_val = None
  if manager.latest_step() is not None:
    state, meta = checkpointing.restore(manager, _abstract_state(config, model, tx, mesh))
    if meta.get('batch_size') != config.batch_size:
      raise config_checks.ConfigError(
          f'{workdir} holds a run with batch_size={meta.get("batch_size")}; resume it with the '
          'same batch_size or use a new --workdir')
    best = meta.get('best', best)
    if meta.get('val'):
      summary_val = meta['val']
    logging.info('Resumed from step %d (epoch %.2f)', int(state.step),
                 int(state.step) / steps_per_epoch)
  else:
    state = _initial_state(config, model, tx, mesh, init_source)
  start_step = int(sharding.to_host(state.step))

  train_ds = input_pipeline.create_train_dataset(
      config.data, batch_size=host_batch, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  val_ds, val_batches = input_pipeline.create_eval_dataset(
      config.data, split=val_split, batch_size=config.eval_batch_size // jax.process_count(),
      mode='val', process_index=jax.process_index(), process_count=jax.process_count())

  repl = sharding.replicated(mesh)
  train_step = jax.jit(
      functools.partial(steps.train_step, model=model, tx=tx, learning_rate_fn=schedule,
                        data_config=config.data),
      in_shardings=(repl, sharding.batch_sharding(mesh, batch_axis=1)),
      out_shardings=(repl, repl), donate_argnums=(0,))
  val_step = _inference_fn(
      functools.partial(steps.eval_step, model=model, data_config=config.data), mesh)

  writer = _create_writer(workdir)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in config.to_dict().items()
                          if isinstance(v, (int, float, str, bool))})
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.log_every_steps)
  summary: dict[str, Any] = {'interrupted': False, 'val': summary_val}
  last_saved = manager.latest_step()

  def evaluate(done: int) -> dict[str, float]:
    with progress.timed('eval'):
      out = _infer(val_step, steps.inference_variables(state), val_ds.as_numpy_iterator(),
                   val_batches, mesh, infos[val_split]['num_examples'])
      result = metrics_lib.classification_metrics(out['scores'], out['label'])
    writer.write_scalars(done, {f'val/{k}': v for k, v in result.items()})
    return result

  def save(done: int, val: dict[str, float] | None) -> None:
    nonlocal last_saved
    if val is not None and (best['val_top1'] is None or val['top1'] > best['val_top1']):
      best.update(val_top1=val['top1'], step=done)
    meta = {'step': done, 'epoch': done / steps_per_epoch, 'train_input_position': done,
            'batch_size': config.batch_size, 'steps_per_epoch': steps_per_epoch,
            'best': dict(best), 'val': summary['val']}
    with progress.timed('checkpoint'):
      checkpointing.save(manager, state, meta,
                         metrics={'val_top1': val['top1']} if val is not None else None)
    last_saved = done

  pending: list[tuple[int, Any]] = []     # (step, device metrics) not yet checked on host
  window: list[dict[str, float]] = []
  window_start = time.monotonic()

  def drain() -> None:
    for step_done, device_metrics in pending:
      host = {k: float(v) for k, v in sharding.to_host(device_metrics).items()}
      _check_finite(step_done, host, last_saved)
      window.append(host)
    pending.clear()

  train_iter = train_ds.as_numpy_iterator()
  try:
    with _SigtermFlag() as sigterm:
      for step in range(start_step, total_steps):
        batch = sharding.host_to_global(
            sharding.split_micro_batches(next(train_iter), accum), mesh, batch_axis=1)
        state, step_metrics = train_step(state, batch)
        done = step + 1
        # Check the previous step's loss while this one runs; this step's before any save.
        if len(pending) > 0:
          drain()
        pending.append((done, step_metrics))
        progress(done)

        epoch_end = done % steps_per_epoch == 0
        epoch = done // steps_per_epoch
        last = done == total_steps
        stop = sigterm.agreed()
        if done % config.log_every_steps == 0 or last or stop:
          drain()
          elapsed = max(time.monotonic() - window_start, 1e-9)
          scalars = {f'train/{k}': float(np.mean([m[k] for m in window])) for k in window[0]}
          scalars['train/clips_per_sec'] = len(window) * config.batch_size / elapsed
          scalars['train/epoch'] = done / steps_per_epoch
          writer.write_scalars(done, scalars)
          window.clear()
          window_start = time.monotonic()
        val = None
        if last or (epoch_end and epoch % config.eval_every_epochs == 0):
          drain()
          val = evaluate(done)
          summary['val'] = val
        if (last or stop or val is not None
            or (epoch_end and epoch % config.checkpoint_every_epochs == 0)
            or (config.checkpoint_every_steps and done % config.checkpoint_every_steps == 0)):
          drain()
          save(done, val)
        if stop:
          summary['interrupted'] = True
          logging.warning('Stopped by SIGTERM after step %d; checkpoint saved', done)
          break
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.flush()
  summary.update(step=int(sharding.to_host(state.step)), best=dict(best),
                 steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  logging.info('Training stopped at step %d of %d; last val %s; best %s', summary['step'],
               total_steps, json.dumps(summary.get('val'), sort_keys=True), json.dumps(best))
  return summary


# ----------------------------------------------------------------------------- test protocol


def _load_variables(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None,
                    mesh) -> tuple[Any, dict[str, Any]]:
  """Model variables to test, and where they came from.

  An MMAction2 .pth/.npz, one step's directory, a checkpoints directory or (default) the
  workdir: of a run, the best step by val top-1 (the official `save_best` checkpoint).
  """
  path = os.path.abspath(checkpoint or workdir)
  if os.path.isfile(path):
    _, variables = import_mmaction2(path, config)
    source = {'checkpoint': path, 'reason': 'the MMAction2 file given'}
  else:
    if not checkpoint and not _has_checkpoint(workdir):
      raise FileNotFoundError(f'{workdir} holds no checkpoint: train first (--mode=train) or '
                              'pass --checkpoint')
    step_dir, why = loading.select_step_directory(path)
    variables = loading.restore_train_state_variables(step_dir, config.model)
    step = int(os.path.basename(step_dir))
    source = {'checkpoint': f'{step_dir} (step {step}: {why})', 'step': step, 'reason': why}
  logging.info('Testing %s', source['checkpoint'])
  return jax.device_put(variables, sharding.replicated(mesh)), source


def test(config: ml_collections.ConfigDict, workdir: str,
         checkpoint: str | None = None) -> dict[str, Any]:
  """The official test protocol on `config.data.test_split`: test_num_clips x test_num_crops
  views per video, scores averaged per `config.test_average`; top-1/top-5/mean class accuracy.

  Writes `test_{split}_scores.npz` (index, label, scores per video) and
  `test_{split}_summary.json` (metrics, protocol, checkpoint, dataset manifest) in `workdir`.
  """
  workdir = os.path.abspath(workdir)
  config_checks.check_model_and_optimizer(config)
  config_checks.check_batching(config, num_devices=jax.device_count(),
                               num_processes=jax.process_count(), mode='test')
  config_checks.check_data_dir(config)
  if checkpoint and not os.path.exists(checkpoint):
    raise FileNotFoundError(f'--checkpoint {checkpoint!r} does not exist')
  split = config.data.test_split
  info = _dataset_info(config, split)
  mesh = sharding.create_mesh()
  model = create_model(config.model)
  variables, source = _load_variables(config, workdir, checkpoint, mesh)
  os.makedirs(workdir, exist_ok=True)

  dataset, num_batches = input_pipeline.create_eval_dataset(
      config.data, split=split, batch_size=config.test_batch_size // jax.process_count(),
      mode='test', process_index=jax.process_index(), process_count=jax.process_count())
  step = _inference_fn(functools.partial(
      steps.test_step, model=model, data_config=config.data,
      views_per_chunk=config.test_views_per_chunk, average=config.test_average), mesh)
  start = time.monotonic()
  out = _infer(step, variables, dataset.as_numpy_iterator(), num_batches, mesh,
               info['num_examples'])
  result = metrics_lib.classification_metrics(out['scores'], out['label'])
  summary = {
      'split': split, 'metrics': result, 'num_videos': int(len(out['index'])),
      'num_views': config.data.test_num_clips * config.data.test_num_crops,
      'num_clips': config.data.test_num_clips, 'num_crops': config.data.test_num_crops,
      'average': config.test_average, **source,
      'seconds': time.monotonic() - start, 'manifest': info['manifest'],
  }
  if _is_main():
    np.savez(os.path.join(workdir, f'test_{split}_scores.npz'), **out)
    _write_json(os.path.join(workdir, f'test_{split}_summary.json'), summary)
    _write_json(os.path.join(workdir, 'manifests', f'{split}.manifest.json'), info['manifest'])
  logging.info('Test on %s (%d videos x %d views): top1 %.4f, top5 %.4f, mean class %.4f',
               split, summary['num_videos'], summary['num_views'], result['top1'],
               result['top5'], result['mean_class_accuracy'])
  return summary
