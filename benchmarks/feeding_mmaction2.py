"""MMAction2 0.24.1's own input pipeline, timed for `benchmarks/feeding.py` (its worker).

Runs in a separate venv with the official stack (torch, mmcv 1.6.1, mmaction2 0.24.1, decord),
installed from `tests/testdata/requirements-mmaction2.txt`; it imports nothing from cost_jax.
`feeding.py` starts it as

  MMACTION2_PYTHON benchmarks/feeding_mmaction2.py SPEC_JSON

with SPEC_JSON naming the videos, the recipe, the modes to time, the batch sizes and the number
of DataLoader workers; it prints one JSON line (the last line of stdout) with, per mode, the
items timed, wall seconds and CPU seconds of this process and its DataLoader workers.

The pipelines are the released CoST config's (`configs/cost/costb_r50_8x8x1_160e_kinetics400_rgb.py`
of the official code), built through MMAction2's registry as its `VideoDataset` and
`build_dataloader` build them:

* train: DecordInit, SampleFrames(clip_len, frame_interval, 1), DecordDecode,
  RandomRescale(scale_range), RandomCrop(crop), Flip(0.5), Normalize, FormatShape('NCTHW'),
  Collect, ToTensor; batches of `train_batch` clips;
* test: DecordInit, SampleFrames(..., num_clips, test_mode=True), DecordDecode,
  Resize(-1, short_side), ThreeCrop(crop), Normalize, FormatShape('NCTHW'), Collect, ToTensor;
  one video per batch (the official test_dataloader).

Threads as the official tools set them (`mmaction.utils.setup_multi_processes`): OpenCV's
thread pool off (`cv2.setNumThreads(0)`), decord 1 thread (DecordInit's default), torch 1 thread;
`workers` = 0 decodes in this process, otherwise in that many DataLoader worker processes. The
process pins itself to the CPUs `cpus` of the spec before anything else starts a thread.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import tempfile
import types
from typing import Any

import feeding_common  # benchmarks/, the script's own folder


def _torchvision_stand_in() -> None:
  """mmcv 1.6.1 imports torchvision at module level (for `torchvision://` checkpoint names, never
  used here); the stack is installed without it, so an empty module takes its place."""
  if 'torchvision' in sys.modules:
    return
  for name in ('torchvision', 'torchvision.models'):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    sys.modules[name] = module
  sys.modules['torchvision'].__version__ = '0.13.0'
  sys.modules['torchvision'].models = sys.modules['torchvision.models']


def _pipelines(recipe: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
  norm = dict(mean=recipe['mean'], std=recipe['std'], to_bgr=False)
  tail = [
    dict(type='Normalize', **norm),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
  ]
  train = [
    dict(type='DecordInit'),
    dict(
      type='SampleFrames',
      clip_len=recipe['clip_len'],
      frame_interval=recipe['frame_interval'],
      num_clips=1,
    ),
    dict(type='DecordDecode'),
    dict(type='RandomRescale', scale_range=tuple(recipe['train_scale_range'])),
    dict(type='RandomCrop', size=recipe['crop_size']),
    dict(type='Flip', flip_ratio=recipe['flip_ratio']),
    *tail,
    dict(type='ToTensor', keys=['imgs', 'label']),
  ]
  test = [
    dict(type='DecordInit'),
    dict(
      type='SampleFrames',
      clip_len=recipe['clip_len'],
      frame_interval=recipe['frame_interval'],
      num_clips=recipe['test_num_clips'],
      test_mode=True,
    ),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, recipe['test_short_side'])),
    dict(type='ThreeCrop', crop_size=recipe['test_crop_size']),
    *tail,
    dict(type='ToTensor', keys=['imgs']),
  ]
  return {'train': train, 'test': test}


def run(spec: dict[str, Any]) -> dict[str, Any]:
  os.sched_setaffinity(0, spec['cpus'])
  _torchvision_stand_in()
  import cv2
  import decord
  import mmaction
  import mmcv
  import torch
  from mmaction.datasets import build_dataloader, build_dataset
  from mmaction.utils import setup_multi_processes

  workers = int(spec['workers'])
  setup_multi_processes(mmcv.Config(dict(data=dict(workers_per_gpu=max(workers, 1)))))
  cv2.setNumThreads(0)
  torch.set_num_threads(1)
  pipelines = _pipelines(spec['recipe'])
  result: dict[str, Any] = {
    'versions': {
      'mmaction2': mmaction.__version__,
      'mmcv': mmcv.__version__,
      'torch': torch.__version__,
      'decord': decord.__version__,
      'opencv': cv2.__version__,
    },
    'workers': workers,
    'cores': sorted(os.sched_getaffinity(0)),
    'modes': {},
  }
  with tempfile.TemporaryDirectory() as tmp:
    ann_file = os.path.join(tmp, 'list.txt')
    # Many passes over the videos in one epoch: no epoch boundary (worker restart) while timed.
    with open(ann_file, 'w') as f:
      for _ in range(int(spec['list_repeats'])):
        f.writelines(f'{path} 0\n' for path in spec['videos'])
    for mode in spec['modes']:
      dataset = build_dataset(
        dict(
          type='VideoDataset',
          ann_file=ann_file,
          data_prefix=None,
          pipeline=pipelines[mode],
          test_mode=mode != 'train',
        )
      )
      batch = int(spec['train_batch']) if mode == 'train' else 1
      loader = build_dataloader(
        dataset,
        videos_per_gpu=batch,
        workers_per_gpu=workers,
        dist=False,
        shuffle=mode == 'train',
        seed=0,
        pin_memory=False,
        persistent_workers=workers > 0,
      )
      iterator = iter(loader)

      def next_item(iterator=iterator, batch=batch):
        next(iterator)
        return batch

      counts = spec['counts'][mode]
      result['modes'][mode] = feeding_common.timed(next_item, counts['items'], counts['warmup'])
      del iterator, loader
  return result


def main() -> None:
  feeding_common.emit(run(json.loads(sys.argv[1])))


if __name__ == '__main__':
  main()
