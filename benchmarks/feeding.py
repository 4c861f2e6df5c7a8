"""Feeding an accelerator: input-pipeline clips/s per host core, ours against MMAction2 0.24.1's
own pipeline, and the host cores one GPU or TPU chip needs.

  python benchmarks/feeding.py [--mmaction2_python=/tmp/mmaction2-venv/bin/python]
      [--rounds=3] [--num_videos=4 --frames=300 --height=320 --width=568] [--gcs]
      [--gflops=TRAIN,FORWARD,TEST_VIEW] [--mfu=0.4] [--output=benchmarks/results/feeding.json]

What is timed, on the same generated videos (`data_prep.natural_video`: H.264 at 30 fps,
`--frames` long, x264's default settings, like a Kinetics clip resized to 320p), in the same run:

* ours: the TFRecords that `data_prep` makes from them (its defaults: short side 320, JPEG q90)
  read by `cost_jax.data.input_pipeline` exactly as training and testing read them, from a local
  disk and, with `--gcs`, from a gs:// bucket through the project's path layer, served by the
  fake-gcs-server emulator on 127.0.0.1 (`tests/gcs_emulator.py`; it measures the emulator and
  its loopback TLS proxy, not GCS);
* MMAction2: its own pipeline on the mp4 files (decord, then its transforms; DataLoader from its
  `build_dataloader`), run by `feeding_mmaction2.py` in the official stack's venv
  (`tests/testdata/requirements-mmaction2.txt`). Without `--mmaction2_python` (or
  `$COST_JAX_MMACTION2_PYTHON`) only ours is measured, and the JSON says so.

Modes: train (one clip: SampleFrames 8x8, decode, RandomRescale 256-320, RandomCrop 224, Flip:
the official CoST config's train pipeline; batches of 8) and test (the 30-view protocol: 10 clips
x ThreeCrop 256 after Resize 256, one video at a time). MMAction2's pipelines also normalise to
float32 on the host, as the official config does; ours ship uint8 and normalise on the device.

Each measurement runs in its own process, alternating sides, `--rounds` times; the tables give
medians. "One core": the process pinned to one CPU (`sched_setaffinity`), tf.data's private
thread pool of 1 and TensorFlow's op pools of 1 (ours), decoding in the process with decord,
OpenCV and torch on 1 thread (MMAction2); the orchestrator and the emulator are pinned to the
other CPUs meanwhile. "Whole host": all CPUs, tf.data's autotuning (ours), one DataLoader worker
per CPU (MMAction2). Rates per CPU-second count the CPU time of the worker's process tree (so
other jobs on the machine do not lower them), rates per wall second what the pinned process got.

Then the FLOPs per clip of the full R50 CoST(b) (`jax.jit(f).lower(...).compile()
.cost_analysis()` of the train step, forward + backward + SGD update, at batch 8, 8x224x224, and
of the forward at the test view size), and from them the host cores that keep one chip busy at
`--mfu`. Prints markdown tables and writes the JSON. `--gflops` skips the compilation.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, REPO)
import feeding_common  # noqa: E402  (benchmarks/, the script's own folder)

_MMACTION2_PYTHON = flags.DEFINE_string(
  'mmaction2_python',
  os.environ.get('COST_JAX_MMACTION2_PYTHON', ''),
  "python of a venv with tests/testdata/requirements-mmaction2.txt ('' = measure ours only)",
)
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'alternating rounds (medians over them)')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 4, 'generated videos')
_COPIES = flags.DEFINE_integer(
  'copies', 8, 'records per video in the TFRecords (shards of several records, as real ones)'
)
_FRAMES = flags.DEFINE_integer('frames', 300, 'frames per video (30 fps)')
_HEIGHT = flags.DEFINE_integer('height', 320, 'frame height')
_WIDTH = flags.DEFINE_integer('width', 568, 'frame width')
_RECIPE = flags.DEFINE_enum(
  'recipe', 'official', ['official', 'tiny'], 'official: the config; tiny: for tiny frames (tests)'
)
_TRAIN_CLIPS = flags.DEFINE_integer('train_clips', 64, 'train clips timed per core')
_TEST_VIDEOS = flags.DEFINE_integer('test_videos', 6, 'test videos (30 views each) timed per core')
_TRAIN_BATCH = flags.DEFINE_integer('train_batch', 8, 'clips per train batch (official: 8)')
_CORES = flags.DEFINE_list('cores', ['one', 'all'], "'one' (pinned) and/or 'all' (whole host)")
_GCS = flags.DEFINE_bool('gcs', True, 'also read ours from a gs:// bucket on the emulator')
_GCS_MODES = flags.DEFINE_list('gcs_modes', ['train', 'test'], 'modes timed from gs://')
_GFLOPS = flags.DEFINE_list(
  'gflops', [], 'TRAIN,FORWARD,TEST_VIEW GFLOPs per clip: skips the cost analysis'
)
_MFU = flags.DEFINE_float('mfu', 0.4, 'model FLOPs utilisation to feed')
_OUTPUT = flags.DEFINE_string(
  'output', os.path.join(REPO, 'benchmarks', 'results', 'feeding.json'), 'JSON results'
)
_WORKER_SPEC = flags.DEFINE_string('worker_spec', '', 'internal: run one measurement (JSON)')

# Published dense peaks per chip, TFLOP/s (data sheets quote tensor-core figures "with sparsity",
# twice the dense ones; the dense figure is used), at the arithmetic of the two `model.precision`
# policies (cost_jax/models/precision.py): `bfloat16` runs at the bf16 peak; `float32` multiplies
# in TF32 on NVIDIA GPUs (the dense TF32 tensor-core peak) and in three bf16 passes on TPU (a
# third of the bf16 peak: derived, no fp32 peak is published for TPUs).
# NVIDIA A100 Tensor Core GPU data sheet (SXM): BF16 312, TF32 156 dense (FP32 CUDA cores 19.5).
# NVIDIA H100 Tensor Core GPU data sheet (SXM): BF16 1,979 and TF32 989 with sparsity, so 989.4
# and 494.7 dense (FP32 CUDA cores 67). Google Cloud TPU documentation, "peak compute per chip
# (bf16)": v4 275, v5e 197, v5p 459.
CHIPS = (
  # (chip, bf16 peak, float32-policy peak)
  ('A100 SXM', 312.0, 156.0),
  ('H100 SXM', 989.4, 494.7),
  ('TPU v4', 275.0, 275.0 / 3),
  ('TPU v5e', 197.0, 197.0 / 3),
  ('TPU v5p', 459.0, 459.0 / 3),
)
POLICIES = ('bfloat16', 'float32')


TINY = dict(
  clip_len=4,
  frame_interval=2,
  train_scale_range=(40, 48),
  crop_size=32,
  val_short_side=40,
  test_num_clips=10,
  test_short_side=40,
  test_crop_size=40,
)
_RECIPE_KEYS = (
  'clip_len',
  'frame_interval',
  'train_scale_range',
  'crop_size',
  'flip_ratio',
  'val_short_side',
  'test_num_clips',
  'test_short_side',
  'test_crop_size',
  'mean',
  'std',
)
MODES = ('train', 'test')


def recipe(name: str) -> dict[str, Any]:
  from configs import base

  data = base.get_config().data
  out = {k: data[k] for k in _RECIPE_KEYS}
  if name == 'tiny':
    out.update(TINY)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# Data.


def _write_video(args: tuple[str, int, int, int, int, int]) -> str:
  import av

  from data_prep import natural_video

  path, num_frames, height, width, fps, seed = args
  frames = natural_video.natural_frames(num_frames, height, width, seed=seed)
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.height, stream.width = height, width
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())
  return path


def make_videos(root: str, num_videos: int, frames: int, height: int, width: int) -> list[str]:
  import multiprocessing

  os.makedirs(root, exist_ok=True)
  jobs = [
    (os.path.join(root, f'{i:03d}.mp4'), frames, height, width, 30, i) for i in range(num_videos)
  ]
  processes = min(len(os.sched_getaffinity(0)), num_videos)
  if processes == 1 or frames * height * width < 10**6:
    return [_write_video(job) for job in jobs]
  with multiprocessing.get_context('spawn').Pool(processes) as pool:
    return pool.map(_write_video, jobs)


def convert_videos(paths: list[str], data_dir: str, short_side: int, copies: int) -> dict[str, Any]:
  """data_prep with its defaults (JPEG q90, `short_side`), one worker, timed; every video
  `copies` times (under different names), so that a shard holds several records."""
  from data_prep import convert

  entries = [
    convert.Entry(p, i % 2, f'{c}_{os.path.basename(p)}')
    for c in range(copies)
    for i, p in enumerate(paths)
  ]
  start = time.perf_counter()
  convert.convert_split(
    entries,
    data_dir,
    'train',
    ['a', 'b'],
    convert.ConvertOptions(
      short_side=short_side, num_shards=min(4, len(entries)), workers=1, progress=False
    ),
    name='feeding',
  )
  seconds = time.perf_counter() - start
  from cost_jax.data import schema

  shard_bytes = sum(s['num_bytes'] for s in schema.read_manifest(data_dir, 'train')['shards'])
  mp4_bytes = sum(os.path.getsize(p) for p in paths)
  return {
    'records': len(entries),
    'shards': min(4, len(entries)),
    'seconds': seconds,
    'videos_per_s_per_worker': len(entries) / seconds,
    'shard_bytes': shard_bytes,
    'record_bytes': shard_bytes / len(entries),  # what a clip or a test video reads (ours)
    'mp4_bytes': mp4_bytes,
    'mp4_bytes_per_video': mp4_bytes / len(paths),  # at most what decord reads (MMAction2)
  }


def upload_tree(emulator, local_dir: str, prefix: str) -> str:
  for directory, _, files in os.walk(local_dir):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        emulator.upload(f'{prefix}/{os.path.relpath(path, local_dir)}', f.read())
  return f'gs://{emulator.bucket}/{prefix}'


# Workers (one measurement each, in a fresh process).


def _ours_worker(spec: dict[str, Any]) -> dict[str, Any]:
  os.sched_setaffinity(0, spec['cpus'])
  import tensorflow as tf

  one_core = len(spec['cpus']) == 1
  if one_core:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  from configs import base
  from cost_jax.data import input_pipeline

  cfg = base.get_config().data
  cfg.update({k: tuple(v) if isinstance(v, list) else v for k, v in spec['recipe'].items()})
  cfg.update(dict(train_split='train', test_split='train', shuffle_buffer=64))

  def pinned(ds):
    if not one_core:
      return ds
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)

  sources = {}
  for source, data_dir in spec['data_dirs'].items():
    cfg.data_dir = data_dir
    sources[source] = {}
    for mode in spec['modes'] if source == 'local' else spec['gcs_modes']:
      if mode == 'train':
        batch = int(spec['train_batch'])
        ds = input_pipeline.create_train_dataset(
          cfg, batch_size=batch, seed=0, process_index=0, process_count=1
        )
      else:
        batch = 1
        ds, _ = input_pipeline.create_eval_dataset(
          cfg, split='train', batch_size=1, mode='test', process_index=0, process_count=1
        )
        ds = ds.repeat()
      iterator = pinned(ds).as_numpy_iterator()

      def next_item(iterator=iterator, batch=batch):
        next(iterator)
        return batch

      counts = spec['counts'][mode]
      sources[source][mode] = feeding_common.timed(next_item, counts['items'], counts['warmup'])
  return {'tensorflow': tf.__version__, 'cpus': sorted(os.sched_getaffinity(0)), 'sources': sources}


def _run_worker(command: list[str], env: dict[str, str] | None, timeout: float) -> dict[str, Any]:
  proc = subprocess.run(
    command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO, check=False
  )
  if proc.returncode != 0:
    raise RuntimeError(
      f'worker {command[:2]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
      f'{proc.stderr[-3000:]}'
    )
  return feeding_common.parse(proc.stdout)


# FLOPs.


def model_gflops(rec: dict[str, Any]) -> dict[str, float]:
  """GFLOPs per clip of the full R50 CoST(b), 400 classes, from XLA's cost analysis of the
  compiled functions (a multiply-add counts 2): train step (forward + backward + SGD update,
  batch 8) and forward at the train crop and at the test view size."""
  import jax
  import jax.numpy as jnp
  import jax_steps

  from configs import base
  from cost_jax.models import create_model

  model = create_model(base.get_model_config('costb'))
  batch, frames = 8, rec['clip_len']  # the official 8 clips per device (BatchNorm groups of 8)

  def clips(size):
    return jax.ShapeDtypeStruct((batch, frames, size, size, 3), jnp.float32)

  variables = jax.eval_shape(
    lambda k: model.init({'params': k}, jnp.zeros((1, frames, 64, 64, 3))), jax.random.key(0)
  )
  tx = jax_steps.official_tx()
  opt_state = jax.eval_shape(tx.init, variables['params'])

  def flops(fn, *args):
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return float(analysis['flops']) / batch / 1e9

  crop, view = rec['crop_size'], rec['test_crop_size']
  forward = jax_steps.forward_fn(model)
  train = jax_steps.train_step_fn(model, tx)
  return {
    'train': flops(
      train,
      variables['params'],
      variables['batch_stats'],
      opt_state,
      clips(crop),
      jax.ShapeDtypeStruct((batch,), jnp.int32),
      jax.random.key(1),
    ),
    'forward': flops(forward, variables, clips(crop)),
    'test_view': flops(forward, variables, clips(view)),
  }


# Summary.


def _median(values: list[float]) -> float:
  return float(statistics.median(values)) if values else float('nan')


def summarise(runs: list[dict[str, Any]], all_cpus: int) -> list[dict[str, Any]]:
  """One row per (side, source, mode, cores): medians over rounds."""
  groups: dict[tuple, list[dict[str, float]]] = {}
  for run in runs:
    for (source, mode), m in run['measurements'].items():
      groups.setdefault((run['side'], source, mode, run['cores']), []).append(m)
  rows = []
  for (side, source, mode, cores), ms in sorted(groups.items()):
    n = 1 if cores == 'one' else all_cpus
    rows.append(
      {
        'side': side,
        'source': source,
        'mode': mode,
        'unit': 'clips' if mode == 'train' else 'videos (30 views)',
        'cores': cores,
        'cpus': n,
        'rounds': len(ms),
        'per_wall_s': _median([m['items'] / m['wall_s'] for m in ms]),
        'per_cpu_s': _median([m['items'] / m['cpu_s'] for m in ms]),
        'cpu_used': _median([m['cpu_s'] / m['wall_s'] for m in ms]),
        'all': ms,
      }
    )
  return rows


def cores_needed(
  rows: list[dict[str, Any]],
  gflops: dict[str, float],
  mfu: float,
  num_views: int,
  bytes_per_item: dict[str, float],
) -> list[dict[str, Any]]:
  """Host cores that feed one chip at `mfu`, from the one-core rates per CPU-second, and the
  bytes per second each side then reads (`bytes_per_item`: per clip or test video, by side)."""
  per_core = {
    (r['side'], r['source'], r['mode']): r['per_cpu_s'] for r in rows if r['cores'] == 'one'
  }
  out = []
  for (chip, bf16, f32), policy in ((c, p) for c in CHIPS for p in POLICIES):
    tflops = bf16 if policy == 'bfloat16' else f32
    flops = mfu * tflops * 1e12
    need = {
      'train': flops / (gflops['train'] * 1e9),  # clips/s
      'test': flops / (gflops['test_view'] * 1e9 * num_views),  # videos/s
    }
    row: dict[str, Any] = {
      'chip': chip,
      'precision': policy,
      'peak_tflops': tflops,
      'train_clips_per_s': need['train'],
      'test_videos_per_s': need['test'],
    }
    for (side, source, mode), rate in sorted(per_core.items()):
      row[f'cores_{mode}_{side}_{source}'] = need[mode] / rate
    for side, size in bytes_per_item.items():
      for mode in MODES:
        row[f'read_mb_per_s_{mode}_{side}'] = need[mode] * size / 1e6
    out.append(row)
  return out


LABELS = {
  ('ours', 'local'): 'ours, TFRecords on local disk',
  ('ours', 'gs'): 'ours, TFRecords on gs:// (emulator)',
  ('mmaction2', 'local'): 'MMAction2 0.24.1, mp4 on local disk',
}


def print_tables(result: dict[str, Any]) -> None:
  rows, ncpu = result['rows'], result['host']['cpus']
  print(
    f'\nInput pipeline, {result["host"]["cpu"]}, {ncpu} CPUs; medians of {_ROUNDS.value} rounds'
  )
  print(
    '| pipeline | mode | one core: per CPU-s | one core: per wall s | '
    f'whole host ({ncpu} CPUs): per wall s | whole host: CPUs busy |'
  )
  print('|---|---|---:|---:|---:|---:|')
  index = {(r['side'], r['source'], r['mode'], r['cores']): r for r in rows}
  for (side, source), label in LABELS.items():
    for mode in MODES:
      one, full = index.get((side, source, mode, 'one')), index.get((side, source, mode, 'all'))
      if not one and not full:
        continue
      unit = 'train clips/s' if mode == 'train' else 'test videos/s (30 views)'

      def fmt(r, key):
        return f'{r[key]:.2f}' if r else 'n/a'

      print(
        f'| {label} | {unit} | {fmt(one, "per_cpu_s")} | {fmt(one, "per_wall_s")} | '
        f'{fmt(full, "per_wall_s")} | {fmt(full, "cpu_used")} |'
      )
  c = result['data']['conversion']
  print(
    f'Read per train clip or test video: ours {c["record_bytes"] / 1e6:.2f} MB (the whole '
    f'record), MMAction2 at most {c["mp4_bytes_per_video"] / 1e6:.2f} MB (the mp4). data_prep: '
    f'{c["videos_per_s_per_worker"]:.2f} videos/s per worker (once)'
  )
  g = result['gflops']
  print(
    f'\nCoST(b) R50 GFLOPs per clip ({g["source"]}): train step {g["train"]:.1f}, forward '
    f'{g["forward"]:.1f} (x3 = {3 * g["forward"]:.1f}), test view {g["test_view"]:.1f} '
    f'(a test video: {result["num_views"]} views)'
  )
  sides = [k for k in LABELS if any(f'_{k[0]}_{k[1]}' in c for c in result['cores_needed'][0])]
  head = ' | '.join(f'train: {LABELS[s]}' for s in sides)
  head += ' | ' + ' | '.join(f'test: {LABELS[s]}' for s in sides)
  print(f'\nHost cores to keep one chip at {100 * result["mfu"]:.0f}% MFU')
  head += ' | train: GB/s read, ours / MMAction2'
  print(f'| chip | peak TFLOP/s | train clips/s | test videos/s | {head} |')
  print('|---|---:|---:|---:|' + '---:|' * (2 * len(sides) + 1))
  for r in result['cores_needed']:
    cells = [
      f'{r[key]:.0f}' if key in r else 'n/a'
      for mode in MODES
      for key in (f'cores_{mode}_{side}_{source}' for side, source in sides)
    ]
    cells.append(
      f'{r["read_mb_per_s_train_ours"] / 1e3:.2f} / {r["read_mb_per_s_train_mmaction2"] / 1e3:.3f}'
    )
    print(
      f'| {r["chip"]} {r["precision"]} | {r["peak_tflops"]:.1f} | {r["train_clips_per_s"]:.0f} | '
      f'{r["test_videos_per_s"]:.0f} | ' + ' | '.join(cells) + ' |'
    )


def orchestrate() -> dict[str, Any]:
  rec = recipe(_RECIPE.value)
  all_cpus = sorted(os.sched_getaffinity(0))
  one_cpu, other_cpus = [all_cpus[0]], all_cpus[1:] or all_cpus
  if 'one' not in _CORES.value or not set(_CORES.value) <= {'one', 'all'}:
    raise app.UsageError(f"--cores={','.join(_CORES.value)}: 'one', optionally with 'all'")
  mm_python = _MMACTION2_PYTHON.value
  if mm_python and not os.path.exists(mm_python):
    raise app.UsageError(f'--mmaction2_python={mm_python} does not exist')
  counts = {
    'train': {'items': _TRAIN_CLIPS.value, 'warmup': 2},
    'test': {'items': _TEST_VIDEOS.value, 'warmup': 1},
  }
  emulator = None
  runs: list[dict[str, Any]] = []
  with tempfile.TemporaryDirectory() as root:
    start = time.perf_counter()
    videos = make_videos(
      os.path.join(root, 'videos'), _NUM_VIDEOS.value, _FRAMES.value, _HEIGHT.value, _WIDTH.value
    )
    print(f'{len(videos)} videos written in {time.perf_counter() - start:.0f} s', flush=True)
    data_dir = os.path.join(root, 'data')
    conversion = convert_videos(
      videos, data_dir, 320 if _RECIPE.value == 'official' else 0, _COPIES.value
    )
    data_dirs = {'local': data_dir}
    env = None
    try:
      if _GCS.value:
        sys.path.insert(0, os.path.join(REPO, 'tests'))
        import gcs_emulator

        try:
          emulator = gcs_emulator.GcsEmulator()
        except ModuleNotFoundError as e:
          raise app.UsageError(
            f'--gcs needs the GCS emulator of requirements-dev.txt ({e}); --nogcs skips gs://'
          ) from None
        data_dirs['gs'] = upload_tree(emulator, data_dir, 'feeding/data')
        env = dict(os.environ, **emulator.env())
      plan = []
      for cores in _CORES.value:
        plan.append(('ours', cores))
        if mm_python:
          plan.append(('mmaction2', cores))
      for round_index in range(_ROUNDS.value):
        for side, cores in plan if round_index % 2 == 0 else reversed(plan):
          cpus = one_cpu if cores == 'one' else all_cpus
          scale = 1 if cores == 'one' else len(all_cpus)
          spec: dict[str, Any] = {
            'cpus': cpus,
            'recipe': rec,
            'modes': list(MODES),
            'gcs_modes': list(_GCS_MODES.value),
            'train_batch': _TRAIN_BATCH.value,
            'counts': {
              m: {'items': c['items'] * scale, 'warmup': c['warmup'] * scale}
              for m, c in counts.items()
            },
          }
          if side == 'ours':
            spec['data_dirs'] = data_dirs
            command = [sys.executable, __file__, '--worker_spec=' + json.dumps(spec)]
          else:
            spec.update(videos=videos, workers=0 if cores == 'one' else len(all_cpus))
            # Enough list entries that no epoch ends while timed (a DataLoader restarts then).
            clips = 2 * scale * (counts['train']['items'] + 2 * _TRAIN_BATCH.value * 2)
            spec['list_repeats'] = 1 + clips // len(videos)
            command = [mm_python, os.path.join(REPO, 'benchmarks', 'feeding_mmaction2.py')]
            command.append(json.dumps(spec))
          # Pinned run: everything else here (this process, the emulator) on the other CPUs.
          feeding_common.pin_tree(os.getpid(), other_cpus if cores == 'one' else all_cpus)
          out = _run_worker(command, env, timeout=3600)
          feeding_common.pin_tree(os.getpid(), all_cpus)
          if side == 'ours':
            measurements = {
              (s, m): v for s, modes in out['sources'].items() for m, v in modes.items()
            }
          else:
            measurements = {('local', m): v for m, v in out['modes'].items()}
          runs.append(
            {
              'round': round_index,
              'side': side,
              'cores': cores,
              'measurements': measurements,
              'info': {k: v for k, v in out.items() if k not in ('sources', 'modes')},
            }
          )
          print(
            f'round {round_index} {side} {cores}: '
            + ', '.join(
              f'{s}/{m} {v["items"] / v["cpu_s"]:.2f}/CPU-s {v["items"] / v["wall_s"]:.2f}/s'
              for (s, m), v in measurements.items()
            ),
            flush=True,
          )
    finally:
      if emulator is not None:
        emulator.close()

  if _GFLOPS.value:
    train, forward, view = (float(x) for x in _GFLOPS.value)
    gflops = {'train': train, 'forward': forward, 'test_view': view, 'source': '--gflops'}
  else:
    gflops = dict(model_gflops(recipe('official')), source='XLA cost analysis, CPU')
  num_views = 3 * rec['test_num_clips']
  rows = summarise(runs, len(all_cpus))
  versions = {}
  for run in runs:
    versions.update({f'{run["side"]}_{k}': v for k, v in run['info'].items() if k != 'cpus'})
  return {
    'benchmark': 'feeding',
    'host': {
      'cpu': feeding_common.cpu_name(),
      'cpus': len(all_cpus),
      'python': platform.python_version(),
    },
    'versions': versions,
    'mmaction2': bool(mm_python),
    'mmaction2_note': '' if mm_python else 'not measured: no --mmaction2_python',
    'recipe': rec,
    'recipe_name': _RECIPE.value,
    'data': {
      'videos': _NUM_VIDEOS.value,
      'frames': _FRAMES.value,
      'fps': 30,
      'size': [_HEIGHT.value, _WIDTH.value],
      'codec': 'H.264 (libx264 defaults)',
      'conversion': conversion,
      'sources': sorted(data_dirs),
    },
    'rounds': _ROUNDS.value,
    'counts_per_core': counts,
    'rows': rows,
    'gflops': gflops,
    'num_views': num_views,
    'mfu': _MFU.value,
    'chips': [dict(chip=c, bf16_tflops=b, float32_policy_tflops=f) for c, b, f in CHIPS],
    'cores_needed': cores_needed(
      rows,
      gflops,
      _MFU.value,
      num_views,
      {'ours': conversion['record_bytes'], 'mmaction2': conversion['mp4_bytes_per_video']},
    ),
    'runs': [
      dict(r, measurements=[dict(source=s, mode=m, **v) for (s, m), v in r['measurements'].items()])
      for r in runs
    ],
    'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
  }


def main(argv: list[str]) -> None:
  del argv
  if _WORKER_SPEC.value:
    feeding_common.emit(_ours_worker(json.loads(_WORKER_SPEC.value)))
    return
  result = orchestrate()
  print_tables(result)
  from cost_jax import storage

  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  storage.write_json(_OUTPUT.value, result)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
