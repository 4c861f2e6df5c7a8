"""JAX vs PyTorch on this CPU: the same CoST / C2D model and weights, forward and train step.

  python benchmarks/vs_pytorch.py [--archs costb,c2d] [--batch 2] [--frames 8] [--size 224]
      [--base-channels 64] [--num-classes 400] [--depth 50] [--repeats 5]
      [--impls auto,auto:xla-default,fold2d] [--threads N] [--scaling] [--memory]
      [--json benchmarks/results/vs_pytorch.json]

The PyTorch side is `benchmarks/torch_cost.py`, a plain-PyTorch mirror of the official code
(MMAction2 0.24.1 `Recognizer3D(ResNet3dCoST, I3DHead)`, hikvision-research/cost), run eagerly in
NCDHW as the official training does. For each arch the JAX model (`configs.base.get_model_config`,
BatchNorm over the whole batch) is initialised, exported with `variables_to_state_dict` and
loaded into the torch model (strict). Before any timing the two must agree on: eval logits,
train-mode logits (batch statistics, dropout off), the updated BatchNorm running statistics and
the gradient of the cross-entropy loss of every parameter; otherwise it aborts. Each is measured
against the torch model run in fp64: JAX fp32's max |error| / max |value| must be at most
`--rtol` (1e-4; gradients `--grad-rtol`, 1e-3) or `--noise-factor` (10) times that of torch fp32,
whose own error grows where BatchNorm normalises few values (small inputs, deep layers).

Timing: after one warm-up call of each, the JAX formulations (`--impls`: a `model.conv_impl`,
compiled with `cost_jax.runtime.xla_options`, or with XLA's defaults when suffixed `:xla-default`)
and torch are called in turn, `--repeats` rounds (the order reverses every round), and the medians
are reported. Forward: eval mode (`torch.inference_mode`). Train step: the official recipe's
cross-entropy, backward, gradient clipping at global norm 40, SGD (momentum 0.9, weight decay 1e-4);
in JAX one jitted step (optax clip_by_global_norm + add_decayed_weights + sgd) with the state
donated, as a training loop runs it. Ratio = torch time / JAX time (> 1: JAX is faster).

`--memory`: a fresh subprocess per (framework, arch, impl, batch, frames) builds the model, the
optimiser state (torch's momentum buffers allocated up front) and the inputs (JAX: and compiles
the step), then resets the peak RSS (`/proc/self/clear_refs`), runs two train steps and reports
peak RSS minus the RSS before them. JAX also reports XLA's `memory_analysis()` of the step.
`--scaling`: also batch 1, 2, 4, 8 at `--frames` and frames 8, 16 at batch 2 (seconds per clip).
Torch uses `--threads` intra-op threads; XLA:CPU uses its default (all cores).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax_steps  # noqa: E402  (benchmarks/, the script's own folder)

from configs import base  # noqa: E402
from cost_jax.models import create_model  # noqa: E402
from cost_jax.models.recognizer import CONV_IMPLS  # noqa: E402
from cost_jax.models.resnet3d import ARCHS, STAGE_BLOCKS  # noqa: E402
from cost_jax.models.variables import init_variables  # noqa: E402
from cost_jax.runtime import xla_options  # noqa: E402
from cost_jax.weights.mmaction2 import variables_to_state_dict  # noqa: E402

try:
  import torch
  import torch_cost
  from torch.nn import functional as F
except ImportError as e:
  if getattr(e, 'name', None) != 'torch':
    raise
  print('benchmarks/vs_pytorch.py needs PyTorch: pip install -r requirements-bench.txt')
  sys.exit(2)

SCALING_BATCHES = (1, 2, 4, 8)
SCALING_FRAMES = (8, 16)
MEMORY_STEPS = 2
MB = 1024 * 1024


# --- models and inputs -----------------------------------------------------------------------


def model_config(arch: str, impl: str, args, dropout_ratio: float | None = None):
  cfg = base.get_model_config(arch)
  cfg.base_channels = args.base_channels
  cfg.num_classes = args.num_classes
  cfg.bn_group_size = 0  # BatchNorm over the whole batch, as torch's BatchNorm3d on one process
  cfg.conv_impl = impl
  if args.depth != cfg.depth:
    cfg.depth = args.depth
    if arch == 'c2d':
      cfg.inflate = tuple((0,) * n for n in STAGE_BLOCKS[args.depth])
    elif args.depth == 101:
      cfg.inflate = base.INFLATE_R101
    else:
      raise ValueError(f'no inflate pattern for depth {args.depth}')
  if dropout_ratio is not None:
    cfg.dropout_ratio = dropout_ratio
  return cfg


def make_inputs(batch: int, frames: int, size: int, num_classes: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  clips = rng.standard_normal((batch, frames, size, size, 3), dtype=np.float32)  # NTHWC
  labels = rng.integers(0, num_classes, size=(batch,)).astype(np.int32)
  return clips, labels


def to_torch_clips(clips: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous()  # NTHWC -> NCTHW


def init_host_variables(arch: str, args) -> dict:
  cfg = model_config(arch, 'fold2d', args)
  variables = jax.jit(lambda key: init_variables(cfg, key))(jax.random.key(args.seed))
  return jax.device_get(variables)


class JaxSide:
  """One JAX formulation at one input shape: compiled forward and donated train step."""

  def __init__(self, arch: str, impl: str, args, variables: dict, clips, labels, forward=True):
    self.impl = impl  # the label: a conv_impl, maybe with jax_steps.XLA_DEFAULT_SUFFIX
    self.conv_impl, self.tuned = jax_steps.parse_impl(impl)
    self.model = create_model(model_config(arch, self.conv_impl, args))
    self.tx = jax_steps.official_tx()
    self.variables = jax.device_put(variables)
    self.clips, self.labels = jnp.asarray(clips), jnp.asarray(labels)
    self.key = jax.random.key(1)
    model, tx = self.model, self.tx

    forward_fn, train_step = jax_steps.forward_fn(model), jax_steps.train_step_fn(model, tx)

    self.forward_compile_s = None
    if forward:
      start = time.perf_counter()
      self.fwd = (
        xla_options.jit(forward_fn, tuned=self.tuned).lower(self.variables, self.clips).compile()
      )
      self.forward_compile_s = time.perf_counter() - start
    self.state = self._fresh_state()
    start = time.perf_counter()
    self.step = (
      xla_options.jit(train_step, tuned=self.tuned, donate_argnums=(0, 1, 2))
      .lower(*self.state, self.clips, self.labels, self.key)
      .compile()
    )
    self.train_compile_s = time.perf_counter() - start

  def _fresh_state(self):
    params = jax.tree.map(jnp.copy, self.variables['params'])
    stats = jax.tree.map(jnp.copy, self.variables['batch_stats'])
    return params, stats, self.tx.init(params)

  def forward(self):
    return jax.block_until_ready(self.fwd(self.variables, self.clips))

  def train(self):
    self.state = jax.block_until_ready(self.step(*self.state, self.clips, self.labels, self.key))

  def memory_analysis(self) -> dict:
    stats = self.step.memory_analysis()
    if stats is None:
      return {}
    out = {
      name: getattr(stats, f'{name}_size_in_bytes', 0) / MB
      for name in ('temp', 'argument', 'output', 'alias', 'generated_code')
    }
    out['temp_argument_output_mb'] = out['temp'] + out['argument'] + out['output']
    out['without_aliased_mb'] = out['temp_argument_output_mb'] - out['alias']
    peak = getattr(stats, 'peak_memory_in_bytes', None)
    if peak:
      out['peak_memory_mb'] = peak / MB
    return {k if k.endswith('_mb') else f'{k}_mb': v for k, v in out.items()}


class TorchSide:
  """The torch mirror with the JAX weights; inputs and optimiser of one shape."""

  def __init__(self, cfg, state_dict: dict):
    self.model = torch_cost.build_model(cfg)
    self.state_dict = state_dict
    torch_cost.load_mmaction2_state_dict(self.model, state_dict)
    self.reset_optimizer()

  def reset_optimizer(self):
    self.opt = torch.optim.SGD(
      self.model.parameters(),
      lr=jax_steps.LR,
      momentum=jax_steps.MOMENTUM,
      weight_decay=jax_steps.WEIGHT_DECAY,
    )

  def set_inputs(self, clips: np.ndarray, labels: np.ndarray):
    self.x = to_torch_clips(clips)
    self.y = torch.from_numpy(labels).long()

  def forward(self):
    with torch.inference_mode():
      return self.model(self.x)

  def train(self):
    self.opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(self.model(self.x), self.y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), jax_steps.CLIP_NORM)
    self.opt.step()
    return loss


# --- equality --------------------------------------------------------------------------------


def _torch_outputs(side: TorchSide) -> dict:
  """Eval logits, and train-mode logits / running stats / gradients with dropout off."""
  model = side.model
  model.eval()
  with torch.no_grad():
    eval_logits = model(side.x).double().numpy()
  model.train()
  dropout = model.cls_head.dropout
  saved_p = dropout.p if dropout is not None else None
  if dropout is not None:
    dropout.p = 0.0
  model.zero_grad(set_to_none=True)
  logits = model(side.x)
  F.cross_entropy(logits, side.y).backward()
  out = dict(
    eval_logits=eval_logits,
    train_logits=logits.detach().double().numpy(),
    stats={k: v.double().numpy().copy() for k, v in model.state_dict().items() if '.running_' in k},
    grads={k: p.grad.double().numpy().copy() for k, p in model.named_parameters()},
  )
  if dropout is not None:
    dropout.p = saved_p
  model.zero_grad(set_to_none=True)
  torch_cost.load_mmaction2_state_dict(model, side.state_dict)  # undo the running-stat update
  return out


def torch_reference(side: TorchSide) -> dict:
  """The torch outputs in fp32 (the rival) and fp64 (the reference both are measured against)."""
  fp32 = _torch_outputs(side)
  x = side.x
  side.model.double()
  side.x = x.double()
  fp64 = _torch_outputs(side)
  side.model.float()
  side.x = x
  torch_cost.load_mmaction2_state_dict(side.model, side.state_dict)
  return dict(fp32=fp32, fp64=fp64)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def compare(got, fp32, fp64, floor: float, factor: float) -> dict:
  """JAX's error vs torch fp32's error, both against torch fp64; per tensor for dicts.

  A tensor passes if JAX's error is at most max(floor, factor * torch fp32's error): fp32 noise
  is amplified where BatchNorm normalises few values (small inputs), for torch as for JAX.
  """
  if not isinstance(got, dict):
    got, fp32, fp64 = {'': got}, {'': fp32}, {'': fp64}
  if got.keys() != fp64.keys():
    raise SystemExit(
      'EQUALITY CHECK FAILED: key sets differ: only JAX '
      f'{sorted(got.keys() - fp64.keys())[:5]}, only torch {sorted(fp64.keys() - got.keys())[:5]}'
    )
  worst, max_jax, max_torch = None, 0.0, 0.0
  for key in fp64:
    jax_err = relative_error(got[key], fp64[key])
    torch_err = relative_error(fp32[key], fp64[key])
    max_jax, max_torch = max(max_jax, jax_err), max(max_torch, torch_err)
    score = jax_err / max(floor, factor * torch_err)
    if worst is None or score > worst['score']:
      worst = dict(score=score, jax_err=jax_err, torch_fp32_err=torch_err, key=key)
  worst.update(ok=worst['score'] <= 1.0, max_jax_err=max_jax, max_torch_fp32_err=max_torch)
  return worst


def check_equal(arch: str, side: JaxSide, args, ref: dict) -> dict:
  """Compares one JAX formulation with the torch reference; exits if they differ."""
  model = create_model(model_config(arch, side.conv_impl, args, dropout_ratio=0.0))

  def loss_and_grads(params, batch_stats, clips, labels):
    def loss_fn(params):
      logits, new_state = model.apply(
        {'params': params, 'batch_stats': batch_stats}, clips, train=True, mutable=['batch_stats']
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (logits, new_state['batch_stats'])

    (_, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return logits, stats, grads

  variables = side.variables
  logits, stats, grads = jax.device_get(
    xla_options.jit(loss_and_grads, tuned=side.tuned)(
      variables['params'], variables['batch_stats'], side.clips, side.labels
    )
  )
  got = dict(
    eval_logits=np.asarray(side.forward()),
    train_logits=logits,
    stats=variables_to_state_dict({'batch_stats': stats}),
    grads=variables_to_state_dict({'params': grads}),
  )
  result = {}
  for name in ('eval_logits', 'train_logits', 'stats', 'grads'):
    floor = args.grad_rtol if name == 'grads' else args.rtol
    result[name] = compare(
      got[name], ref['fp32'][name], ref['fp64'][name], floor, args.noise_factor
    )
  print(
    f'  check {arch}/{side.impl}: max |x - torch fp64| / max |torch fp64|, JAX vs torch fp32:',
    flush=True,
  )
  for name, r in result.items():
    where = ''
    if r['key']:
      where = (
        f' (closest to failing: {r["key"]}; largest over all tensors: '
        f'{r["max_jax_err"]:.1e} vs {r["max_torch_fp32_err"]:.1e})'
      )
    print(
      f'    {name:12s} {r["jax_err"]:.1e} vs {r["torch_fp32_err"]:.1e}'
      f'{"" if r["ok"] else "  <-- FAIL"}{where}',
      flush=True,
    )
  failures = [name for name, r in result.items() if not r['ok']]
  if failures:
    raise SystemExit(
      f'EQUALITY CHECK FAILED for {arch}/{side.impl}: {", ".join(failures)} differ from torch '
      f'by more than max(rtol {args.rtol:g} (grads {args.grad_rtol:g}), '
      f'{args.noise_factor:g} x torch fp32 own error)'
    )
  return result


# --- timing ----------------------------------------------------------------------------------


def alternate(runners: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
  """Seconds per call of each runner; the runners take turns, the order reversing each round."""
  names = list(runners)
  for _ in range(warmup):
    for name in names:
      runners[name]()
  times = {name: [] for name in names}
  for r in range(repeats):
    for name in names if r % 2 == 0 else names[::-1]:
      start = time.perf_counter()
      runners[name]()
      times[name].append(time.perf_counter() - start)
  return times


def measure_shape(arch, impls, args, variables, torch_side, batch, frames, check=False) -> list:
  """Rows (one per impl) of forward / train medians at one input shape."""
  clips, labels = make_inputs(batch, frames, args.size, args.num_classes, args.seed)
  torch_side.set_inputs(clips, labels)
  torch_cost.load_mmaction2_state_dict(torch_side.model, torch_side.state_dict)  # as JAX: init
  jax_sides = {}
  for impl in impls:
    jax_sides[impl] = JaxSide(arch, impl, args, variables, clips, labels)
    print(
      f'  compiled {arch}/{impl} batch {batch} x {frames} frames: forward '
      f'{jax_sides[impl].forward_compile_s:.1f} s, train {jax_sides[impl].train_compile_s:.1f} s',
      flush=True,
    )
  checks = {}
  if check:
    ref = torch_reference(torch_side)
    checks = {impl: check_equal(arch, side, args, ref) for impl, side in jax_sides.items()}
  torch_side.reset_optimizer()

  torch_side.model.eval()
  runners = {f'jax:{impl}': side.forward for impl, side in jax_sides.items()}
  runners['torch'] = torch_side.forward
  fwd = alternate(runners, args.repeats, args.warmup)
  torch_side.model.train()
  runners = {f'jax:{impl}': side.train for impl, side in jax_sides.items()}
  runners['torch'] = torch_side.train
  train = alternate(runners, args.repeats, args.warmup)

  rows = []
  for impl, side in jax_sides.items():
    row = dict(
      arch=arch,
      impl=impl,
      batch=batch,
      frames=frames,
      size=args.size,
      forward_torch_s=float(np.median(fwd['torch'])),
      forward_jax_s=float(np.median(fwd[f'jax:{impl}'])),
      train_torch_s=float(np.median(train['torch'])),
      train_jax_s=float(np.median(train[f'jax:{impl}'])),
      forward_compile_s=side.forward_compile_s,
      train_compile_s=side.train_compile_s,
      jax_step_memory_analysis=side.memory_analysis(),
      raw_times=dict(
        forward_torch=fwd['torch'],
        forward_jax=fwd[f'jax:{impl}'],
        train_torch=train['torch'],
        train_jax=train[f'jax:{impl}'],
      ),
    )
    row['forward_ratio'] = row['forward_torch_s'] / row['forward_jax_s']
    row['train_ratio'] = row['train_torch_s'] / row['train_jax_s']
    if impl in checks:
      row['equality'] = checks[impl]
    rows.append(row)
  del jax_sides
  gc.collect()
  return rows


# --- memory ----------------------------------------------------------------------------------


def _proc_status_kb(field: str) -> int | None:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _reset_peak_rss() -> bool:
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')  # resets VmHWM to the current RSS (Linux >= 4.0)
    return True
  except OSError:
    return False


def memory_child(spec: dict) -> None:
  """Subprocess body: peak RSS increase over `MEMORY_STEPS` train steps (prints one JSON line)."""
  args = argparse.Namespace(**spec['args'])
  torch.set_num_threads(args.threads)
  arch, impl, framework = spec['arch'], spec['impl'], spec['framework']
  clips, labels = make_inputs(spec['batch'], spec['frames'], args.size, args.num_classes)
  if framework == 'torch':
    side = TorchSide.__new__(TorchSide)
    side.model = torch_cost.build_model(model_config(arch, 'fold2d', args))
    side.model.train()
    side.reset_optimizer()
    for p in side.model.parameters():  # allocated up front, as JAX's optimiser state is
      side.opt.state[p]['momentum_buffer'] = torch.zeros_like(p)
    side.set_inputs(clips, labels)
  else:
    variables = init_host_variables(arch, args)
    side = JaxSide(arch, impl, args, variables, clips, labels, forward=False)
    del variables
  gc.collect()
  baseline_kb = _proc_status_kb('VmRSS')
  if baseline_kb is None:
    print(json.dumps(dict(error='no /proc/self/status: RSS is only measured on Linux')))
    return
  # The peak RSS of this process (VmHWM), reset to the current RSS so that the set-up (and the
  # JAX compilation) does not count. `ru_maxrss` cannot be used: a child starts with the peak
  # of the process it was forked from. Without the reset the peak includes the set-up.
  reset = _reset_peak_rss()
  for _ in range(MEMORY_STEPS):
    side.train()
  peak_kb = _proc_status_kb('VmHWM')
  print(
    json.dumps(
      dict(
        baseline_rss_mb=baseline_kb / 1024,
        peak_rss_mb=peak_kb / 1024,
        increase_mb=(peak_kb - baseline_kb) / 1024,
        peak_reset=reset,
      )
    )
  )


def measure_memory(framework: str, arch: str, impl: str | None, batch, frames, args) -> dict:
  spec = dict(
    framework=framework, arch=arch, impl=impl, batch=batch, frames=frames, args=vars(args)
  )
  proc = subprocess.run(
    [sys.executable, os.path.abspath(__file__), '--memory-child', json.dumps(spec)],
    capture_output=True,
    text=True,
  )
  lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
  result = json.loads(lines[-1]) if lines and not proc.returncode else {}
  if 'increase_mb' not in result:
    why = result.get('error') or ' | '.join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
    print(f'  memory {framework} {arch} failed (rc {proc.returncode}): {why}', flush=True)
    return {}
  print(
    f'  memory {framework}{"/" + impl if impl else ""} {arch} batch {batch} x {frames}: '
    f'+{result["increase_mb"]:.0f} MB over {result["baseline_rss_mb"]:.0f} MB',
    flush=True,
  )
  return result


def add_memory(rows: list, args) -> None:
  torch_mem = {}
  for row in rows:
    shape = (row['arch'], row['batch'], row['frames'])
    if shape not in torch_mem:
      torch_mem[shape] = measure_memory('torch', *shape[:1], None, *shape[1:], args)
    row['memory_torch'] = torch_mem[shape]
    row['memory_jax'] = measure_memory('jax', row['arch'], row['impl'], *shape[1:], args)


# --- report ----------------------------------------------------------------------------------


def machine_info(args) -> dict:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
  except OSError:
    pass
  affinity = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
  return dict(
    cpu=cpu,
    cpu_count=os.cpu_count(),
    cpus_usable=affinity,
    platform=platform.platform(),
    python=platform.python_version(),
    torch=torch.__version__,
    torch_threads=torch.get_num_threads(),
    torch_interop_threads=torch.get_num_interop_threads(),
    torch_mkldnn=torch.backends.mkldnn.is_available(),
    jax=jax.__version__,
    jaxlib=importlib.metadata.version('jaxlib'),
    jax_device=f'{jax.devices()[0].device_kind} x{jax.device_count()}',
    jax_threads='XLA:CPU default (all usable cores)',
    xla_flags=os.environ.get('XLA_FLAGS', ''),
    load_average_at_start=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
  )


def _mem_cell(row: dict) -> str:
  t, j = row.get('memory_torch', {}), row.get('memory_jax', {})
  if not t and not j:
    return '-'
  fmt = lambda m: f'{m["increase_mb"]:.0f}' if m else '?'
  return f'{fmt(t)} / {fmt(j)}'


def print_table(rows: list, per_clip: bool = False) -> None:
  unit = 's/clip' if per_clip else 's'
  cols = ['arch', 'impl']
  if per_clip:
    cols += ['batch', 'frames']
  cols += [
    f'fwd torch {unit}',
    f'fwd jax {unit}',
    'fwd ratio',
    f'train torch {unit}',
    f'train jax {unit}',
    'train ratio',
    'jax compile fwd / train s',
    'peak MB torch / jax (RSS)',
    'jax XLA MB',
  ]
  print('| ' + ' | '.join(cols) + ' |')
  print('|' + '---|' * len(cols))
  for r in rows:
    div = r['batch'] if per_clip else 1
    xla = r['jax_step_memory_analysis'].get('temp_argument_output_mb')
    cells = [r['arch'], r['impl']]
    if per_clip:
      cells += [str(r['batch']), str(r['frames'])]
    cells += [
      f'{r["forward_torch_s"] / div:.4g}',
      f'{r["forward_jax_s"] / div:.4g}',
      f'{r["forward_ratio"]:.2f}',
      f'{r["train_torch_s"] / div:.4g}',
      f'{r["train_jax_s"] / div:.4g}',
      f'{r["train_ratio"]:.2f}',
      f'{r["forward_compile_s"]:.1f} / {r["train_compile_s"]:.1f}',
      _mem_cell(r),
      f'{xla:.0f}' if xla is not None else '-',
    ]
    print('| ' + ' | '.join(cells) + ' |')


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
  """The model and input size both torch benchmarks take (defaults: the issue's R50 shape)."""
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--base-channels', type=int, default=64)
  parser.add_argument('--num-classes', type=int, default=400)
  parser.add_argument('--depth', type=int, default=50, choices=(50, 101))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archs', default='costb,c2d')
  add_shape_arguments(parser)
  parser.add_argument('--repeats', type=int, default=5, help='timed rounds (medians reported)')
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls of each first')
  parser.add_argument(
    '--impls',
    default='auto,auto:xla-default',
    help=f'JAX model.conv_impl values to time ({CONV_IMPLS}; others are skipped), compiled '
    'with cost_jax.runtime.xla_options, or with XLA defaults if suffixed '
    f'{jax_steps.XLA_DEFAULT_SUFFIX}',
  )
  parser.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads')
  parser.add_argument('--scaling', action='store_true', help='also batch 1-8 and frames 8/16')
  parser.add_argument('--memory', action='store_true', help='peak RSS per train step')
  parser.add_argument('--rtol', type=float, default=1e-4, help='check: logits, running stats')
  parser.add_argument('--grad-rtol', type=float, default=1e-3, help='check: gradients')
  parser.add_argument(
    '--noise-factor',
    type=float,
    default=10.0,
    help="check: JAX may also be off by this times torch fp32's own error (vs torch fp64)",
  )
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default='benchmarks/results/vs_pytorch.json')
  parser.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = [a for a in args.archs.split(',') if a not in ARCHS]
  if unknown:
    parser.error(f'--archs: unknown {", ".join(map(repr, unknown))}; expected some of {ARCHS}')
  return args


def main() -> None:
  args = parse_args()
  if args.memory_child:
    memory_child(json.loads(args.memory_child))
    return
  torch.set_num_threads(args.threads)
  impls = []
  for impl in args.impls.split(','):
    if jax_steps.parse_impl(impl)[0] in CONV_IMPLS:
      impls.append(impl)
    else:
      print(f'skipping impl {impl!r}: not in cost_jax CONV_IMPLS {CONV_IMPLS}')
  if not impls:
    raise SystemExit(f'no --impls to time among {CONV_IMPLS}')
  info = machine_info(args)
  print(
    f'torch {info["torch"]} ({info["torch_threads"]} threads, {info["torch_interop_threads"]} '
    f'inter-op, mkldnn {info["torch_mkldnn"]}) vs jax {info["jax"]} / jaxlib {info["jaxlib"]} '
    f'({info["jax_device"]}, {info["jax_threads"]})\n'
    f'cpu: {info["cpu"]}, {info["cpu_count"]} cores ({info["cpus_usable"]} usable)\n'
    f'R{args.depth} width {args.base_channels}, {args.num_classes} classes, fp32; '
    f'batch {args.batch} x {args.frames} frames x {args.size}^2; impls {",".join(impls)}; '
    f'medians of {args.repeats} alternating rounds after {args.warmup} warm-up',
    flush=True,
  )
  load = info['load_average_at_start']
  if load is not None and load >= 0.5:
    print(
      f'WARNING: load average {load:.1f} before starting: other processes share the cores. '
      "torch's OpenMP threads then slow down by up to orders of magnitude (XLA's thread pool "
      'much less): for meaningful numbers run on an idle machine.',
      flush=True,
    )

  rows, scaling_rows = [], []
  shapes = []
  if args.scaling:
    shapes = [(b, args.frames) for b in SCALING_BATCHES] + [(2, f) for f in SCALING_FRAMES]
    shapes = list(dict.fromkeys(shapes))
  for arch in args.archs.split(','):
    print(f'{arch}:', flush=True)
    variables = init_host_variables(arch, args)
    torch_side = TorchSide(model_config(arch, impls[0], args), variables_to_state_dict(variables))
    main_rows = measure_shape(
      arch, impls, args, variables, torch_side, args.batch, args.frames, check=True
    )
    rows += main_rows
    for batch, frames in shapes:
      if (batch, frames) == (args.batch, args.frames):
        scaling_rows += main_rows
      else:
        scaling_rows += measure_shape(arch, impls, args, variables, torch_side, batch, frames)
    del torch_side
    gc.collect()

  if args.memory:
    add_memory(rows, args)
    main_shape = (args.batch, args.frames)
    add_memory([r for r in scaling_rows if (r['batch'], r['frames']) != main_shape], args)

  print(f'\nbatch {args.batch}, {args.frames}x{args.size}x{args.size}; ratio = torch / jax\n')
  print_table(rows)
  if scaling_rows:
    print('\nscaling (seconds per clip)\n')
    print_table(scaling_rows, per_clip=True)
  if args.memory:
    print(
      '\npeak MB: peak RSS during train steps minus the RSS before them (fresh subprocess, model,'
      ' optimiser state and inputs built, JAX step compiled); jax XLA MB: memory_analysis of the'
      ' step, temp + argument + output.'
    )

  os.makedirs(os.path.dirname(args.json) or '.', exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump(
      dict(
        machine=info,
        settings={k: v for k, v in vars(args).items() if k != 'memory_child'},
        impls=impls,
        rows=rows,
        scaling=scaling_rows,
      ),
      f,
      indent=2,
    )
  print(f'\nwrote {args.json}')


if __name__ == '__main__':
  main()
