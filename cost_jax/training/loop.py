"""Training: `train_and_evaluate` reads straight down.

validate the config -> read the dataset manifests -> resolve the initial weights -> build model,
optimiser, state -> resume from the latest checkpoint (state and input position) -> for each step:
jitted update, then `plan_step` decides whether to log, validate and save; `bookkeeping.py` keeps
the metrics window, the best validation and the checkpoint metadata. The numerics live in
`steps.py`, `optim.py` and `metrics.py`; the test protocol in `evaluate.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from cost_jax import storage
from cost_jax.checkpoints import saving
from cost_jax.checkpoints import workdir as layout
from cost_jax.data import input_pipeline
from cost_jax.models import create_model
from cost_jax.runtime import distributed, shared_storage, xla_options
from cost_jax.training import (
  bookkeeping,
  config_checks,
  evaluate,
  init_weights,
  optim,
  sharding,
  steps,
)
from cost_jax.training import metrics as metrics_lib
from cost_jax.training.state import TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """What to do after a finished step."""

  log: bool
  validate: bool
  save: bool
  stop: bool


def plan_step(
  done: int,
  *,
  steps_per_epoch: int,
  total_steps: int,
  log_every_steps: int,
  eval_every_epochs: int,
  checkpoint_every_epochs: int,
  checkpoint_every_steps: int = 0,
  preempted: bool = False,
) -> StepPlan:
  """Log, validate and save decisions for step `done` (1-based count of finished steps).

  The last step and a preempted one always log and save; the last step validates; every
  validation is followed by a save (so the best checkpoint exists).
  """
  last = done == total_steps
  epoch_end = done % steps_per_epoch == 0
  epoch = done // steps_per_epoch
  validate = last or (epoch_end and epoch % eval_every_epochs == 0)
  periodic_save = (epoch_end and epoch % checkpoint_every_epochs == 0) or bool(
    checkpoint_every_steps and done % checkpoint_every_steps == 0
  )
  return StepPlan(
    log=last or preempted or done % log_every_steps == 0,
    validate=validate,
    save=last or preempted or validate or periodic_save,
    stop=preempted,
  )


def steps_per_epoch(config: ml_collections.ConfigDict, train_info: dict[str, Any]) -> int:
  if config.steps_per_epoch > 0:
    return int(config.steps_per_epoch)
  return train_info['num_examples'] // config.batch_size


def _create_writers(config, workdir: str, start_step: int, total_steps: int):
  """The metric writer (hyperparameters written at a fresh start) and the progress reporter."""
  writer = _create_writer(workdir)
  if start_step == 0:
    writer.write_hparams(
      {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
    )
  progress = periodic_actions.ReportProgress(
    num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps
  )
  return writer, progress


def _create_writer(workdir: str) -> metric_writers.MetricWriter:
  if evaluate.is_main_process():
    return metric_writers.create_default_writer(workdir, asynchronous=False)
  return metric_writers.MultiWriter([])


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


def initial_state(config, model, tx, mesh, init_source) -> TrainState:
  """The state of step 0, replicated over `mesh` (`init_source`: None for random weights)."""
  variables = init_weights.initial_variables(config, init_source, seed=config.seed)
  build = jax.jit(_state_builder(config, model, tx), out_shardings=sharding.replicated(mesh))
  return build(jax.random.PRNGKey(config.seed), variables)


def jit_train_step(config, model, tx, schedule, mesh) -> Callable[..., tuple[TrainState, Any]]:
  """The jitted update: state replicated and donated, batches from `device_batch`."""
  repl = sharding.replicated(mesh)
  return xla_options.jit(
    functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=schedule, data_config=config.data
    ),
    in_shardings=(repl, sharding.batch_sharding(mesh, batch_axis=1)),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )


def device_batch(host_batch: dict[str, np.ndarray], config, mesh) -> dict[str, jax.Array]:
  """This process's (B / processes, ...) train batch -> the global (grad_accum_steps, B /
  grad_accum_steps, ...) batch: micro-batch a holds rows a * m .. (a + 1) * m - 1 of every
  process's part (m = B / processes / grad_accum_steps), processes in order."""
  return sharding.host_to_global(
    sharding.split_micro_batches(host_batch, config.grad_accum_steps), mesh, batch_axis=1
  )


def _check_topology(config, workdir: str, resuming: bool) -> None:
  """`check_batching` on this topology. Resuming keeps the global batch, so a failure then
  names the topology the run was saved on and this one, without suggesting another batch."""
  try:
    config_checks.check_batching(
      config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
  except config_checks.ConfigError as e:
    if not resuming:
      raise
    saved = saving.newest_record(layout.checkpoints_dir(workdir)).get('topology')
    problem = str(e).split('; ')[0]  # without the advice to change the batch size
    raise config_checks.ConfigError(
      f'cannot resume {workdir} on {distributed.describe(distributed.topology())}: {problem}. '
      f'The run was saved on {distributed.describe(saved) if saved else "another topology"} '
      f'with batch_size={config.batch_size}, which a resume keeps: resume on processes and '
      'devices that divide it, or use a new --workdir'
    ) from None


def _validate(
  val_step, state: TrainState, val_ds, val_batches: int, mesh, num_videos: int
) -> dict[str, float]:
  out = evaluate.infer_split(
    val_step,
    steps.inference_variables(state),
    input_pipeline.numpy_batches(val_ds),
    val_batches,
    mesh,
    num_videos,
  )
  return metrics_lib.classification_metrics(out['scores'], out['label'])


def _check_run(config: ml_collections.ConfigDict, workdir: str) -> tuple[bool, dict[str, Any]]:
  """Fails fast, before anything is written, read from the videos or compiled: the config, the
  topology, the dataset manifests and the shared workdir. Returns (resuming, split infos)."""
  config_checks.check_model_and_optimizer(config)
  resuming = layout.has_checkpoint(workdir)
  _check_topology(config, workdir, resuming)
  config_checks.check_data_dir(config)
  config_checks.check_crops(config.data, 'train')
  config_checks.check_crops(config.data, 'val')
  min_train = config.batch_size if config.steps_per_epoch <= 0 else 1
  infos = {
    config.data.train_split: evaluate.split_info(
      config, config.data.train_split, min_examples=min_train
    ),
    config.data.val_split: evaluate.split_info(config, config.data.val_split),
  }
  # every process must see the same workdir and data (a marker of process 0; one line if not)
  shared_storage.check_shared(workdir, config.data.data_dir)
  return resuming, infos


def _restore(config, workdir: str, model, tx, mesh, epoch_steps: int):
  """The newest intact checkpoint's state and metadata; damaged newer checkpoints are moved
  aside (logged), never deleted."""
  state, meta = saving.restore_newest_intact(
    layout.checkpoints_dir(workdir), _abstract_state(config, model, tx, mesh)
  )
  if meta.get('batch_size') != config.batch_size:
    raise config_checks.ConfigError(
      f'{workdir} holds a run with batch_size={meta.get("batch_size")}; resume it with the '
      'same batch_size or use a new --workdir'
    )
  logging.info('Resumed from step %d (epoch %.2f)', int(state.step), int(state.step) / epoch_steps)
  logging.info(
    '%s', distributed.resume_note(meta.get('topology'), distributed.topology(), config.batch_size)
  )
  return state, meta


def _datasets(config: ml_collections.ConfigDict, start_step: int):
  """This host's train batches (from `start_step` on) and its validation dataset."""
  processes = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = input_pipeline.numpy_batches(
    input_pipeline.create_train_dataset(
      config.data,
      batch_size=config.batch_size // jax.process_count(),
      seed=config.seed,
      start_step=start_step,
      **processes,
    )
  )
  val_ds, val_batches = input_pipeline.create_eval_dataset(
    config.data,
    split=config.data.val_split,
    batch_size=config.eval_batch_size // jax.process_count(),
    mode='val',
    **processes,
  )
  return train_iter, val_ds, val_batches


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from the checkpoint there if any.

  Returns a summary: final step, last val metrics, best val top-1 and its step, and whether
  training was interrupted (by SIGTERM, after saving a checkpoint).
  """
  workdir = storage.absolute(workdir, '--workdir')
  resuming, infos = _check_run(config, workdir)
  init_source = None if resuming else init_weights.resolve(config)  # may download

  storage.makedirs(workdir)
  evaluate.write_run_info(config, workdir, infos)
  mesh = sharding.create_mesh()
  epoch_steps = steps_per_epoch(config, infos[config.data.train_split])
  total_steps = config.num_epochs * epoch_steps
  num_val_videos = infos[config.data.val_split]['num_examples']
  model = create_model(config.model)
  schedule = optim.create_learning_rate_schedule(
    config.optimizer, global_batch_size=config.batch_size, steps_per_epoch=epoch_steps
  )
  tx = optim.create_optimizer(config.optimizer, schedule, config.model.frozen_stages)
  if resuming:
    state, meta = _restore(config, workdir, model, tx, mesh, epoch_steps)
  else:
    state, meta = initial_state(config, model, tx, mesh, init_source), None
  record = bookkeeping.RunRecord(config, epoch_steps, meta)
  start_step = int(sharding.to_host(state.step))
  manager = saving.create_manager(layout.checkpoints_dir(workdir), keep=config.keep_checkpoints)
  train_iter, val_ds, val_batches = _datasets(config, start_step)
  train_step = jit_train_step(config, model, tx, schedule, mesh)
  val_step = evaluate.inference_fn(
    functools.partial(steps.eval_step, model=model, data_config=config.data), mesh
  )

  writer, progress = _create_writers(config, workdir, start_step, total_steps)
  window = bookkeeping.MetricsWindow()
  last_saved = manager.latest_step()
  interrupted = False
  try:
    with saving.PreemptionFlag() as preemption:
      for step in range(start_step, total_steps):
        state, step_metrics = train_step(state, device_batch(next(train_iter), config, mesh))
        done = step + 1
        window.add(done, step_metrics, last_saved)
        progress(done)
        plan = plan_step(
          done,
          steps_per_epoch=epoch_steps,
          total_steps=total_steps,
          log_every_steps=config.log_every_steps,
          eval_every_epochs=config.eval_every_epochs,
          checkpoint_every_epochs=config.checkpoint_every_epochs,
          checkpoint_every_steps=config.checkpoint_every_steps,
          preempted=preemption.agreed(done),
        )
        if plan.log or plan.save:
          window.drain(last_saved)  # this step's loss is checked before any save
        if plan.log:
          scalars = window.summary(config.batch_size)
          writer.write_scalars(done, dict(scalars, **{'train/epoch': done / epoch_steps}))
        step_val = None
        if plan.validate:
          with progress.timed('eval'):
            step_val = _validate(val_step, state, val_ds, val_batches, mesh, num_val_videos)
          writer.write_scalars(done, {f'val/{k}': v for k, v in step_val.items()})
          record.validated(step_val)
        if plan.save:
          metrics = {saving.BEST_METRIC: step_val['top1']} if step_val else None
          with progress.timed('checkpoint'):
            saving.save(manager, state, record.checkpoint_meta(done, step_val), metrics=metrics)
          last_saved = done
        if plan.stop:
          interrupted = True
          logging.warning('Stopped by SIGTERM after step %d; checkpoint saved', done)
          break
  finally:
    saving.finish(manager, state)  # DiskFullError if the last save ran out of space
    writer.flush()
  summary = record.summary(int(sharding.to_host(state.step)), total_steps, interrupted)
  logging.info(
    'Training stopped at step %d of %d; last val %s; best %s',
    summary['step'],
    total_steps,
    json.dumps(summary['val'], sort_keys=True),
    json.dumps(summary['best']),
  )
  return summary
