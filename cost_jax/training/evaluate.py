"""Inference over a whole split (val during training, the official test protocol) and
`run_test_protocol`, the `--mode=test` entry point.

The test protocol: test_num_clips x 3 crops per video, scores averaged per `config.test_average`
('prob', as the official code), top-1 / top-5 / mean class accuracy. Its weights come through the
inference loader (no optimiser is built): by default the run's best step by val top-1.
"""

from __future__ import annotations

import functools
import io
import json
import time
from typing import Any, Callable, Iterable

import jax
import ml_collections
import numpy as np
from absl import logging

from cost_jax import storage
from cost_jax.checkpoints import workdir as layout
from cost_jax.data import input_pipeline
from cost_jax.inference import builtin_labels, loading
from cost_jax.models import create_model
from cost_jax.runtime import shared_storage, xla_options
from cost_jax.training import config_checks, sharding, steps
from cost_jax.training import metrics as metrics_lib
from cost_jax.weights.mmaction2 import import_mmaction2

Batch = dict[str, np.ndarray]
MMACTION2_FILE = 'the MMAction2 file given'


def is_main_process() -> bool:
  return jax.process_index() == 0


def write_json(path: str, obj: Any) -> None:
  """Publishes `obj` whole (local or gs://), on the main process only."""
  if is_main_process():
    storage.write_json(path, obj)


def write_run_info(
  config: ml_collections.ConfigDict, workdir: str, infos: dict[str, dict[str, Any]]
) -> None:
  """The resolved config and the manifests of the splits used, next to the results."""
  write_json(layout.config_path(workdir), json.loads(config.to_json_best_effort()))
  for split, info in infos.items():
    write_json(layout.manifest_path(workdir, split), info['manifest'])


def split_info(
  config: ml_collections.ConfigDict, split: str, *, min_examples: int = 1
) -> dict[str, Any]:
  """The manifest summary of a split, checked against the config (ConfigError if it cannot)."""
  info = input_pipeline.get_dataset_info(config.data.data_dir, split)
  config_checks.check_dataset(config, split, info, min_examples=min_examples)
  return info


def inference_fn(step: Callable[..., jax.Array], mesh) -> Callable[..., tuple]:
  """Jits step(variables, batch) -> (scores, label, mask, index), all replicated on output."""

  def run(variables, batch):
    return step(variables, batch), batch['label'], batch['mask'], batch['index']

  return xla_options.jit(
    run,
    in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
    out_shardings=sharding.replicated(mesh),
  )


def infer_split(
  step_fn: Callable[..., tuple],
  variables: Any,
  batches: Iterable[Batch],
  num_batches: int,
  mesh,
  expected: int,
) -> dict[str, np.ndarray]:
  """Runs an `inference_fn` step over a split's (padded, masked) batches.

  Returns the scores, labels and indices of the real videos, sorted by index, after checking
  that every video of the split was seen exactly once.
  """
  outputs = []
  for _, host_batch in zip(range(num_batches), batches):
    batch = sharding.host_to_global(
      {k: host_batch[k] for k in ('clips', 'label', 'mask', 'index')}, mesh
    )
    outputs.append(step_fn(variables, batch))
  scores, labels, masks, indices = (
    np.concatenate(parts) for parts in zip(*sharding.to_host(outputs))
  )
  keep = masks.astype(bool)
  scores, labels, indices = scores[keep], labels[keep], indices[keep]
  if len(np.unique(indices)) != len(indices) or len(indices) != expected:
    raise RuntimeError(
      f'inference saw {len(indices)} videos ({len(np.unique(indices))} '
      f'distinct) but the split has {expected}'
    )
  order = np.argsort(indices)
  return {'index': indices[order], 'label': labels[order], 'scores': scores[order]}


def load_test_variables(
  config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Variables to test and where they came from ({'checkpoint', 'reason'[, 'step']}).

  `checkpoint`: an MMAction2 .pth/.npz, one step's directory or a checkpoints directory;
  default the workdir, whose best step by val top-1 is the official `save_best` checkpoint.
  """
  if checkpoint and not storage.exists(storage.check(checkpoint, '--checkpoint')):
    raise FileNotFoundError(f'--checkpoint {checkpoint!r} does not exist')
  path = storage.absolute(checkpoint or workdir)
  if storage.isfile(path):
    _, variables = import_mmaction2(path, config)
    return variables, {'checkpoint': path, 'reason': MMACTION2_FILE}
  if not checkpoint and not layout.has_checkpoint(workdir):
    raise FileNotFoundError(
      f'{workdir} holds no checkpoint: train first (--mode=train) or pass --checkpoint'
    )
  step_dir, why = loading.select_step_directory(path)
  variables = loading.restore_train_state_variables(step_dir, config.model)
  step = int(storage.basename(step_dir))
  return variables, {'checkpoint': f'{step_dir} (step {step}: {why})', 'step': step, 'reason': why}


def run_test_protocol(
  config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None = None
) -> dict[str, Any]:
  """The official test protocol on `config.data.test_split`.

  Writes `test_{split}_scores.npz` (index, label, scores per video) and
  `test_{split}_summary.json` (metrics, protocol, checkpoint and why, dataset manifest) in
  `workdir`, and returns the summary.
  """
  workdir = storage.absolute(workdir, '--workdir')
  config_checks.check_model_and_optimizer(config, mode='test')
  config_checks.check_batching(
    config, num_devices=jax.device_count(), num_processes=jax.process_count(), mode='test'
  )
  config_checks.check_data_dir(config)
  config_checks.check_crops(config.data, 'test')
  split = config.data.test_split
  info = split_info(config, split)
  shared_storage.check_shared(workdir, config.data.data_dir)
  mesh = sharding.create_mesh()
  model = create_model(config.model)
  variables, source = load_test_variables(config, workdir, checkpoint)
  logging.info('Testing %s', source['checkpoint'])
  if source['reason'] == MMACTION2_FILE:
    warning = builtin_labels.order_warning(info['label_map'])
    if warning:
      logging.warning('%s: %s', config.data.data_dir, warning)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  storage.makedirs(workdir)

  dataset, num_batches = input_pipeline.create_eval_dataset(
    config.data,
    split=split,
    batch_size=config.test_batch_size // jax.process_count(),
    mode='test',
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  step = inference_fn(
    functools.partial(
      steps.test_step,
      model=model,
      data_config=config.data,
      views_per_chunk=config.test_views_per_chunk,
      average=config.test_average,
    ),
    mesh,
  )
  start = time.monotonic()
  out = infer_split(
    step, variables, input_pipeline.numpy_batches(dataset), num_batches, mesh, info['num_examples']
  )
  result = metrics_lib.classification_metrics(out['scores'], out['label'])
  summary = {
    'split': split,
    'metrics': result,
    'num_videos': int(len(out['index'])),
    'num_views': metrics_lib.num_test_views(config.data),
    'num_clips': config.data.test_num_clips,
    'num_crops': metrics_lib.NUM_TEST_CROPS,
    'average': config.test_average,
    **source,
    'seconds': time.monotonic() - start,
    'manifest': info['manifest'],
  }
  if is_main_process():
    scores = io.BytesIO()
    np.savez(scores, **out)
    storage.write_bytes(storage.join(workdir, f'test_{split}_scores.npz'), scores.getvalue())
  write_json(storage.join(workdir, f'test_{split}_summary.json'), summary)
  write_json(layout.manifest_path(workdir, split), info['manifest'])
  logging.info(
    'Test on %s (%d videos x %d views): top1 %.4f, top5 %.4f, mean class %.4f',
    split,
    summary['num_videos'],
    summary['num_views'],
    result['top1'],
    result['top5'],
    result['mean_class_accuracy'],
  )
  return summary
