r"""Time from `python -m cost_jax.main` to the first training step, without and with JAX's
persistent compilation cache.

  python benchmarks/first_step.py [--config configs/costb_k400.py] [--batch 2] [--json PATH]

Writes a few 256x320 videos as TFRecords, then starts the trainer three times on them, each in a
new workdir: with the cache turned off, with an empty cache (it fills it) and with that cache
filled. Each run is timed from the process start to its first training log line (step 1 done:
start-up, data pipeline, state init, compilation and one step) and killed there. The model is
the config's (full size: R50 at 8x224x224) with `--batch` clips, from random weights (no
download).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from cost_jax import storage  # noqa: E402
from tests import tfrecord_factory  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('a', 'b')
FIRST_STEP = re.compile(r'\[1\] .*train/loss')
STARTED = 'JAX process'


def write_dataset(data_dir: str, videos: int = 4) -> None:
  clips = [
    (tfrecord_factory.pattern_video(24, 256, 320, i), i % len(CLASSES)) for i in range(videos)
  ]
  for split in ('train', 'val'):
    tfrecord_factory.write_split(data_dir, split, clips, CLASSES, num_shards=1)


def time_first_step(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
  """Seconds from the start of `command` to its start-up line and to its first step's line."""
  start = time.monotonic()
  proc = subprocess.Popen(
    command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  marks: dict[str, float] = {}
  tail: list[str] = []
  timer = threading.Timer(timeout, proc.kill)
  timer.start()
  try:
    for line in proc.stdout:
      tail = (tail + [line])[-20:]
      if STARTED in line and 'started' not in marks:
        marks['started'] = time.monotonic() - start
      if FIRST_STEP.search(line):
        marks['first_step'] = time.monotonic() - start
        break
  finally:
    timer.cancel()
    proc.kill()
    proc.wait()
  if 'first_step' not in marks:
    raise RuntimeError('the trainer stopped before its first step:\n' + ''.join(tail))
  return marks


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/costb_k400.py')
  parser.add_argument('--batch', type=int, default=2, help='clips per step (one device)')
  parser.add_argument('--size', type=int, default=224, help='crop size')
  parser.add_argument('--timeout', type=float, default=1800)
  parser.add_argument('--json', default='benchmarks/results/first_step.json')
  args = parser.parse_args()

  work = tempfile.mkdtemp(prefix='first_step_')
  data_dir = os.path.join(work, 'data')
  write_dataset(data_dir)
  cache = os.path.join(work, 'compilation_cache')
  overrides = [
    f'--config.data.data_dir={data_dir}',
    f'--config.model.num_classes={len(CLASSES)}',
    f'--config.model.bn_group_size={args.batch}',
    f'--config.batch_size={args.batch}',
    f'--config.eval_batch_size={args.batch}',
    f'--config.optimizer.base_batch_size={args.batch}',
    f'--config.data.crop_size={args.size}',
    '--config.init.resnet2d=',
    '--config.log_every_steps=1',
    '--config.data.shuffle_buffer=4',
  ]
  runs = [('cache off', {'JAX_ENABLE_COMPILATION_CACHE': 'false'})]
  runs += [('empty cache', {}), ('filled cache', {})]
  rows = []
  for name, extra in runs:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, TF_CPP_MIN_LOG_LEVEL='2', **extra)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    workdir = os.path.join(work, name.replace(' ', '_'))
    command = [sys.executable, '-m', 'cost_jax.main', f'--config={args.config}']
    command += [f'--workdir={workdir}', *overrides]
    marks = time_first_step(command, env, args.timeout)
    files = sum(len(f) for _, _, f in os.walk(cache)) if os.path.isdir(cache) else 0
    rows.append(dict(run=name, **marks, cache_files=files))
    print(f'  {name}: first step after {marks["first_step"]:.1f} s', flush=True)

  cold = rows[0]['first_step']
  lines = [
    '| run | start-up line (s) | first step (s) | vs cache off | cache files |',
    '| --- | ---: | ---: | ---: | ---: |',
  ]
  for r in rows:
    lines.append(
      f'| {r["run"]} | {r.get("started", float("nan")):.1f} | {r["first_step"]:.1f} | '
      f'{r["first_step"] / cold:.2f}x | {r["cache_files"]} |'
    )
  print('\n'.join(lines))
  import jax

  storage.write_json(
    args.json,
    dict(
      config=args.config,
      batch=args.batch,
      size=args.size,
      platform=jax.default_backend(),
      device=jax.devices()[0].device_kind,
      cpu_count=os.cpu_count(),
      machine=platform.machine(),
      rows=rows,
      load_average=list(np.round(os.getloadavg(), 2)),
    ),
  )


if __name__ == '__main__':
  main()
