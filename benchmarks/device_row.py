"""One measurement of `device_check.sh`, run in a process of its own (`device_check.py` starts one
per row, so that each row's peak device memory is its own and an out-of-memory error stays in it).

  python benchmarks/device_row.py --probe --out PROBE.json
      the platform, device, what `conv_impl='auto'` resolves to, and a measured matmul peak
      (float32 at the float32 policy's level, and bfloat16 on a GPU or TPU)
  python benchmarks/device_row.py --arch costb --impl auto --precision float32 --batch 8 \\
      --frames 8 --size 224 --width 64 --repeats 5 [--search-tries 3 --max-batch 64 \\
      --search-budget S --deadline EPOCH_S] --out ROW.json
      one train step (`jax_steps.train_step_fn`: the official SGD recipe) on the first device:
      compile time, median step time, FLOPs from XLA's cost analysis, peak device memory, then the
      largest batch that fits (doubling from --batch: at most --search-tries compilations, none
      above --max-batch, none expected to end after --search-budget seconds of searching or
      after --deadline)

Everything runs on `jax.devices()[0]`: the rows are one device's figures (batch per device).
BatchNorm statistics over the whole batch (`bn_group_size=0`), so that any batch is valid; the
weights are drawn on the host (`host_init`), not by the compiled `model.init`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import jax_steps  # noqa: E402  (benchmarks/, the script's own folder)

from cost_jax.models import create_model  # noqa: E402
from cost_jax.models import precision as precision_lib  # noqa: E402
from cost_jax.models.defaults import get_model_config  # noqa: E402  (configs/ imports TF)
from cost_jax.models.recognizer import resolve_conv_impl  # noqa: E402
from cost_jax.runtime import xla_options  # noqa: E402

PRECISIONS = ('float32', 'bfloat16')  # the probe's matmuls on a GPU or TPU


def flops_of(analysis) -> float | None:
  """'flops' of a `cost_analysis()` result: a dict in jax 0.10 (CPU too), a list of one dict per
  program in older releases, None where the backend has none."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or 'flops' not in analysis:
    return None
  return float(analysis['flops'])


def timed_calls(fn, repeats: int) -> list[float]:
  """Seconds of `repeats` calls of `fn`, each waited for, after one untimed call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def matmul_flops_per_s(n: int, precision: str, repeats: int = 5) -> float:
  """FLOP/s of an n x n matmul under `precision` (dtype and `jax.lax.Precision` as the model's)."""
  dtype = precision_lib.compute_dtype(precision)
  level = precision_lib.matmul_level(precision)
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  matmul = jax.jit(lambda a: jnp.matmul(a, a, precision=level))
  return 2 * n**3 / statistics.median(timed_calls(lambda: matmul(a), repeats))


def probe(args) -> dict:
  device = jax.devices()[0]
  platform = jax.default_backend()
  n = args.matmul_n or (2048 if platform == 'cpu' else 8192)
  # On CPU only float32 (the peak MFU is measured against there); bf16 matmuls on XLA:CPU are
  # not a peak of anything.
  measured = {
    p: matmul_flops_per_s(n, p) for p in (('float32',) if platform == 'cpu' else PRECISIONS)
  }
  return dict(
    platform=platform,
    device=device.device_kind,
    device_count=jax.device_count(),
    jax=jax.__version__,
    jaxlib=jaxlib.__version__,
    auto_conv_impl=resolve_conv_impl('auto'),
    float32_matmul_level=precision_lib.matmul_level('float32'),
    memory_stats=device.memory_stats() is not None,
    matmul_n=n,
    measured_matmul_flops=measured,
  )


def host_init(model, clips: jax.Array) -> dict:
  """Variables of `model`'s shapes, drawn on the host: `model.init` compiled takes minutes on a
  busy 2-core CPU (threefry for every weight) and the step's timing does not depend on the values.
  BatchNorm scale and variance 1, biases and means 0, other weights normal / sqrt(fan-in)."""
  shapes = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, clips))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = getattr(path[-1], 'key', '')
    if name in ('scale', 'var'):
      value = np.ones(leaf.shape, leaf.dtype)
    elif name in ('bias', 'mean'):
      value = np.zeros(leaf.shape, leaf.dtype)
    else:
      fan_in = max(1, int(np.prod(leaf.shape[:-1])))
      value = (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
    return jnp.asarray(value)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def row(args) -> dict:
  start = time.time()
  config = get_model_config(args.arch)
  config.conv_impl = args.impl
  config.precision = args.precision
  config.base_channels = args.width
  if args.stage_blocks:  # one inflate flag per block: every block of CoST / I3D inflated
    config.stage_blocks = tuple(int(n) for n in args.stage_blocks.split(','))
    config.inflate = tuple((int(args.arch != 'c2d'),) * n for n in config.stage_blocks)
  config.bn_group_size = 0
  model = create_model(config)
  tx = jax_steps.official_tx()
  step = xla_options.jit(jax_steps.train_step_fn(model, tx))

  def batch_of(n: int) -> tuple:
    clips = jax.random.normal(jax.random.key(0), (n, args.frames, args.size, args.size, 3))
    return clips, jnp.zeros((n,), jnp.int32), jax.random.key(2)

  clips, labels, key = batch_of(args.batch)
  variables = host_init(model, clips[:1])
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))
  del variables

  compile_start = time.perf_counter()
  lowered = step.lower(*state, clips, labels, key)
  trace_s = time.perf_counter() - compile_start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - compile_start
  flops = flops_of(compiled.cost_analysis())
  flops_lowered = flops_of(lowered.cost_analysis())
  times = timed_calls(functools.partial(compiled, *state, clips, labels, key), args.repeats)
  step_s = statistics.median(times)

  stats = jax.devices()[0].memory_stats()
  try:
    m = compiled.memory_analysis()
    planned = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  except Exception:  # noqa: BLE001 - not every backend reports it
    planned = None
  result = dict(
    arch=args.arch,
    impl=args.impl,
    resolved_impl=resolve_conv_impl(args.impl),
    precision=args.precision,
    batch=args.batch,
    frames=args.frames,
    size=args.size,
    width=args.width,
    repeats=args.repeats,
    train_compile_s=compile_s,  # tracing + XLA: what the first call of the jitted step costs
    train_trace_s=trace_s,
    train_step_s=step_s,
    train_step_times_s=times,
    train_clips_per_s=args.batch / step_s,
    # FLOPs of the compiled step (what MFU divides by), and of the step as traced, before XLA's
    # passes (a cross-check: GPU backends count elementwise ops at a few "flops" per element).
    train_flops=flops if flops else flops_lowered,
    flops_source='compiled' if flops else 'lowered (the compiled step reported none)',
    train_flops_lowered=flops_lowered,
    train_step_planned_mb=None if planned is None else planned / 2**20,
    device_peak_mb=None if stats is None else stats.get('peak_bytes_in_use', 0) / 2**20,
    device_limit_mb=None
    if not stats or 'bytes_limit' not in stats
    else stats['bytes_limit'] / 2**20,
    memory_note=None
    if stats is not None
    else 'memory_stats() is None on this platform (CPU): no peak device memory',
  )
  del clips, compiled

  # The largest batch that fits: doubling, each try a compilation and two steps.
  tries, largest, stopped = [], args.batch, 'no search (--search-tries 0)'
  last_cost = compile_s + 2 * step_s  # a try: a compilation and two steps, at twice the batch
  ends = [t for t in (args.deadline, args.search_budget and time.time() + args.search_budget) if t]
  search_deadline = min(ends) if ends else 0.0
  n = args.batch
  for _ in range(args.search_tries):
    n *= 2
    if n > args.max_batch:
      stopped = f'--max-batch {args.max_batch}'
      break
    if search_deadline and time.time() + 1.25 * last_cost > search_deadline:
      stopped = 'time budget'
      break
    try_start = time.time()
    try:
      batch = batch_of(n)
      t = time.perf_counter()
      bigger = step.lower(*state, *batch).compile()
      try_compile = time.perf_counter() - t
      step_times = timed_calls(functools.partial(bigger, *state, *batch), 1)
      tries.append(dict(batch=n, fits=True, compile_s=try_compile, step_s=step_times[0]))
      largest = n
      del bigger, batch
    except Exception as e:  # noqa: BLE001 - the out-of-memory error's type differs by backend
      oom = is_out_of_memory(e)
      tries.append(dict(batch=n, fits=False, error=str(e).strip().splitlines()[0][:300]))
      stopped = 'out of memory' if oom else 'error'
      break
    last_cost = time.time() - try_start
  else:
    stopped = f'{args.search_tries} tries, all fit' if args.search_tries else stopped
  result.update(
    largest_batch=largest,
    largest_batch_stopped=stopped,
    largest_batch_tries=tries,
    wall_s=time.time() - start,
  )
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--probe', action='store_true')
  parser.add_argument('--matmul-n', type=int, default=0, help='probe: matmul size (0: by platform)')
  parser.add_argument('--arch', default='costb')
  parser.add_argument('--impl', default='auto')
  parser.add_argument('--precision', default='float32', choices=precision_lib.PRECISIONS)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--width', type=int, default=64, help='model.base_channels (64: R50)')
  parser.add_argument('--stage-blocks', default='', help="e.g. 1,1,1,1 (empty: the depth's)")
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--search-tries', type=int, default=0)
  parser.add_argument('--max-batch', type=int, default=1 << 20)
  parser.add_argument('--search-budget', type=float, default=0.0, help='seconds; 0: no limit')
  parser.add_argument('--deadline', type=float, default=0.0, help='time.time() to end by; 0: none')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  result = probe(args) if args.probe else row(args)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)


if __name__ == '__main__':
  main()
