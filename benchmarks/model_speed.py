"""Model speed on this machine: forward and train-step clips/s, compile time, FLOPs, % of peak,
memory.

  python benchmarks/model_speed.py [--archs c2d,i3d,costa,costb] [--impls fold2d,...]
      [--precisions float32,bfloat16] [--batch 2] [--frames 8] [--size 224] [--repeats 3]
      [--json benchmarks/results/model_speed.json]

Every row is measured in the same run as the fp32 matmul peak it is compared with; every arch is
timed in each `model.conv_impl` of `--impls` (suffixed `:xla-default`: compiled with XLA's default
options instead of `cost_jax.runtime.xla_options`) and each `model.precision` of `--precisions`
(`--dtypes`, its old name, still works). Medians over `--repeats` timed calls after one warm-up
call. Memory: XLA's plan for the compiled train step (arguments + outputs + temporaries) and, on
GPU/TPU, the device's peak bytes in use since the process started (run one arch, impl and
precision per process to read it per row; `device_check.sh` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import jax_steps  # noqa: E402  (benchmarks/, the script's own folder)

from cost_jax.models import create_model  # noqa: E402
from cost_jax.models.defaults import get_model_config  # noqa: E402  (configs/ imports TF)
from cost_jax.runtime import xla_options  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  return 2 * n**3 / median_seconds(lambda: matmul(a), repeats) / 1e9


def compile_and_flops(fn, tuned: bool, *args) -> tuple:
  start = time.perf_counter()
  compiled = xla_options.jit(fn, tuned=tuned).lower(*args).compile()
  seconds = time.perf_counter() - start
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return compiled, seconds, float(analysis.get('flops', float('nan')))


def planned_bytes(compiled) -> float:
  """Arguments + outputs + temporaries of a compiled function (XLA's memory plan), or NaN."""
  try:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return float('nan')


def device_peak_bytes() -> float:
  stats = jax.devices()[0].memory_stats() or {}
  return float(stats.get('peak_bytes_in_use', float('nan')))


def bench_arch(arch: str, impl: str, precision: str, args) -> dict:
  """`impl`: a conv_impl, maybe suffixed with jax_steps.XLA_DEFAULT_SUFFIX."""
  config = get_model_config(arch)
  config.conv_impl, tuned = jax_steps.parse_impl(impl)
  config.precision = precision
  config.bn_group_size = 0
  model = create_model(config)
  clips = jax.random.normal(jax.random.key(0), (args.batch, args.frames, args.size, args.size, 3))
  labels = jnp.zeros((args.batch,), jnp.int32)
  variables = jax.jit(lambda k: model.init({'params': k}, clips[:1]))(jax.random.key(1))
  tx = jax_steps.official_tx()
  opt_state = tx.init(variables['params'])
  forward, train_step = jax_steps.forward_fn(model), jax_steps.train_step_fn(model, tx)

  fwd, fwd_compile, fwd_flops = compile_and_flops(forward, tuned, variables, clips)
  step_args = (
    variables['params'],
    variables['batch_stats'],
    opt_state,
    clips,
    labels,
    jax.random.key(2),
  )
  step, step_compile, step_flops = compile_and_flops(train_step, tuned, *step_args)
  fwd_s = median_seconds(lambda: fwd(variables, clips), args.repeats)
  step_s = median_seconds(lambda: step(*step_args), args.repeats)
  return dict(
    arch=arch,
    impl=impl,
    precision=precision,
    train_step_planned_mb=planned_bytes(step) / 2**20,
    device_peak_mb=device_peak_bytes() / 2**20,
    batch=args.batch,
    frames=args.frames,
    size=args.size,
    forward_clips_per_s=args.batch / fwd_s,
    train_clips_per_s=args.batch / step_s,
    forward_compile_s=fwd_compile,
    train_compile_s=step_compile,
    forward_gflops_per_clip=fwd_flops / args.batch / 1e9,
    train_gflops_per_clip=step_flops / args.batch / 1e9,
    forward_gflops_per_s=fwd_flops / fwd_s / 1e9,
    train_gflops_per_s=step_flops / step_s / 1e9,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archs', default='c2d,i3d,costa,costb')
  parser.add_argument(
    '--impls',
    default='fold2d_custom_grads,fold2d_custom_grads:xla-default,fold2d',
    help='model.conv_impl values to time, compiled with cost_jax.runtime.xla_options or, suffixed '
    f'{jax_steps.XLA_DEFAULT_SUFFIX}, with XLA defaults',
  )
  parser.add_argument(
    '--precisions',
    '--dtypes',
    default='float32',
    help='model.precision values (cost_jax/models/precision.py), e.g. float32,bfloat16',
  )
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default='benchmarks/results/model_speed.json')
  args = parser.parse_args()

  peak = matmul_peak_gflops()
  print(
    f'device: {jax.devices()[0].device_kind} x{jax.device_count()}, '
    f'fp32 matmul peak {peak:.0f} GFLOP/s (2048^2, median)'
  )
  rows = []
  impls = args.impls.split(',')
  for arch in args.archs.split(','):
    for impl in impls:
      for precision in args.precisions.split(','):
        row = bench_arch(arch, impl, precision, args)
        row['forward_peak_fraction'] = row['forward_gflops_per_s'] / peak
        row['train_peak_fraction'] = row['train_gflops_per_s'] / peak
        rows.append(row)
        print(f'  measured {arch}/{impl}/{precision}', flush=True)

  header = (
    '| arch | conv_impl | precision | fwd clips/s | train clips/s | compile fwd / train (s) | '
    'GFLOPs/clip fwd / train | % fp32 peak fwd / train | train step MB (plan / device peak) |'
  )
  print(f'\nbatch {args.batch}, {args.frames}x{args.size}x{args.size}\n')
  print(header)
  print('|' + '---|' * 9)
  for r in rows:
    print(
      f'| {r["arch"]} | {r["impl"]} | {r["precision"]} | '
      f'{r["forward_clips_per_s"]:.2f} | {r["train_clips_per_s"]:.3f} | '
      f'{r["forward_compile_s"]:.1f} / {r["train_compile_s"]:.1f} | '
      f'{r["forward_gflops_per_clip"]:.1f} / {r["train_gflops_per_clip"]:.1f} | '
      f'{100 * r["forward_peak_fraction"]:.0f} / {100 * r["train_peak_fraction"]:.0f} | '
      f'{r["train_step_planned_mb"]:.0f} / {r["device_peak_mb"]:.0f} |'
    )
  os.makedirs(os.path.dirname(args.json) or '.', exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump(
      dict(
        matmul_peak_gflops=peak,
        platform=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        device_count=jax.device_count(),
        rows=rows,
      ),
      f,
      indent=2,
    )
  print(f'\nwrote {args.json}')


if __name__ == '__main__':
  main()
