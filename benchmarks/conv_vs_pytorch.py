"""Every convolution of the R50 timed alone, official PyTorch formulation against cost_jax's.

Where does a train step's time go on each side? The shapes are those of one forward pass of the
PyTorch mirror (`torch_cost`, NCDHW, oneDNN), recorded by wrapping `conv3d`; a CoST layer's three
view convolutions are one row. Each row times, in the same process and alternating, torch's
forward (the mirror's own call) and backward (autograd over one recorded forward: input and
weight gradients; weight only for the stem, whose input needs no gradient) against the JAX
computation the `auto` formulation runs for that convolution (folded 2D
convolutions, pointwise convolutions as matmuls with their hand-written gradient), compiled with
`cost_jax.runtime.xla_options`. Totals weight each row by how often the model runs it. Outputs and
gradients are checked equal (to `--rtol` of their largest value) before timing.

  python benchmarks/conv_vs_pytorch.py [--arch costb] [--batch 2] [--frames 8] [--repeats 15]
      [--json benchmarks/results/conv_vs_pytorch.json]

PyTorch is optional (`requirements-bench.txt`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vs_pytorch  # noqa: E402  (benchmarks/, the script's own folder; exits 2 without torch)

from cost_jax.models import conv as conv_lib  # noqa: E402
from cost_jax.models import cost_layer  # noqa: E402
from cost_jax.runtime import xla_options  # noqa: E402

torch, torch_cost, F = vs_pytorch.torch, vs_pytorch.torch_cost, vs_pytorch.F
TIMED = ('torch_fwd', 'torch_bwd', 'jax_fwd', 'jax_bwd')


def record_convolutions(arch: str, args) -> collections.Counter:
  """(kind, input shape, weight shape, stride, padding) -> calls in one torch forward pass."""
  cfg = vs_pytorch.model_config(arch, 'auto', args)
  model = torch_cost.build_model(cfg).eval()
  calls = collections.Counter()
  conv3d, views = torch_cost.F.conv3d, torch_cost.view_convolutions
  inside_views = []

  def conv3d_spy(x, weight, bias=None, stride=1, padding=0, *rest):
    if not inside_views:
      key = ('conv', tuple(x.shape), tuple(weight.shape))
      calls[key + (torch_cost._triple(stride), torch_cost._triple(padding))] += 1
    return conv3d(x, weight, bias, stride, padding, *rest)

  def views_spy(x, weight, stride, padding):
    key = ('cost views', tuple(x.shape), tuple(weight.shape))
    calls[key + (torch_cost._triple(stride), padding)] += 1
    inside_views.append(True)
    try:
      return views(x, weight, stride, padding)
    finally:
      inside_views.pop()

  torch_cost.F.conv3d, torch_cost.view_convolutions = conv3d_spy, views_spy
  try:
    with torch.no_grad():
      model(torch.zeros((args.batch, 3, args.frames, args.size, args.size)))
  finally:
    torch_cost.F.conv3d, torch_cost.view_convolutions = conv3d, views
  return calls


def torch_forward(kind, stride, padding):
  """One row's forward on the torch side: the mirror's own `conv3d` call or CoST view function."""
  if kind == 'conv':
    return lambda x, w: [F.conv3d(x, w, None, stride, padding)]
  return lambda x, w: list(torch_cost.view_convolutions(x, w, stride, padding))


def jax_functions(kind, stride, padding, input_grad: bool):
  """Forward and backward of one row as cost_jax's `auto` (fold2d_custom_grads) computes it."""
  if kind == 'conv':

    def forward(x, kernel):
      return [conv_lib.conv3d_folded(x, kernel, stride, padding, custom_grads=True)]
  else:

    def forward(x, kernel):
      views = cost_layer.view_convolutions(x, kernel, stride, padding, fold=True)
      return [views[v] for v in cost_layer.VIEWS]

  def backward(x, kernel, grads):
    if input_grad:
      return jax.vjp(forward, x, kernel)[1](grads)
    return jax.vjp(lambda k: forward(x, k), kernel)[1](grads)

  return xla_options.jit(forward), xla_options.jit(backward)


def to_nthwc(a: torch.Tensor) -> np.ndarray:
  return np.ascontiguousarray(a.detach().numpy().transpose(0, 2, 3, 4, 1))


def to_hwio(w: np.ndarray, kind: str) -> np.ndarray:
  """(Cout, Cin, kt, kh, kw) -> (kt, kh, kw, Cin, Cout); a CoST layer's shared (k, k, Cin, Cout)."""
  w = w.transpose(2, 3, 4, 1, 0)
  return np.ascontiguousarray(w[0] if kind == 'cost views' else w)


def elapsed_ms(fn) -> float:
  start = time.perf_counter()
  fn()
  return 1e3 * (time.perf_counter() - start)


def measure(key, count: int, args, rng) -> dict:
  kind, x_shape, w_shape, stride, padding = key
  input_grad = x_shape[1] != 3  # the stem's input (the clip) needs no gradient
  x = torch.from_numpy(rng.standard_normal(x_shape, dtype=np.float32))
  w = torch.from_numpy(rng.standard_normal(w_shape, dtype=np.float32) * 0.05)
  t_forward = torch_forward(kind, stride, padding)
  # The backward as a train step runs it: autograd over one recorded forward (kept, so that each
  # timed call is the backward alone), the views' input and kernel gradients summed by autograd.
  inputs = (x.requires_grad_(), w.requires_grad_()) if input_grad else (w.requires_grad_(),)
  outs = t_forward(x, w)
  grads = [torch.from_numpy(rng.standard_normal(o.shape, dtype=np.float32)) for o in outs]

  def t_fwd():
    with torch.no_grad():
      return t_forward(x, w)

  def t_bwd():
    return torch.autograd.grad(outs, inputs, grads, retain_graph=True)

  xj = jax.numpy.asarray(to_nthwc(x))
  wj = jax.numpy.asarray(to_hwio(w.detach().numpy(), kind))
  gj = [jax.numpy.asarray(to_nthwc(g)) for g in grads]
  j_fwd, j_bwd = jax_functions(kind, stride, padding, input_grad)
  j_fwd, j_bwd = j_fwd.lower(xj, wj).compile(), j_bwd.lower(xj, wj, gj).compile()
  t_grads, j_grads = t_bwd(), j_bwd(xj, wj, gj)
  pairs = {'output': (j_fwd(xj, wj), [to_nthwc(o) for o in outs])}
  pairs['weight gradient'] = ([j_grads[-1]], [to_hwio(t_grads[-1].numpy(), kind)])
  if input_grad:
    pairs['input gradient'] = ([j_grads[0]], [to_nthwc(t_grads[0])])
  errors = {}
  for what, (got, want) in pairs.items():
    largest = max(float(np.max(np.abs(b))) for b in want)
    worst = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(got, want))
    errors[what] = worst / largest
    if errors[what] > args.rtol:
      raise SystemExit(f'{key}: JAX {what} differs from torch by {errors[what]:.1e} of its largest')

  runners = {
    'torch_fwd': t_fwd,
    'torch_bwd': t_bwd,
    'jax_fwd': lambda: jax.block_until_ready(j_fwd(xj, wj)),
    'jax_bwd': lambda: jax.block_until_ready(j_bwd(xj, wj, gj)),
  }
  times = collections.defaultdict(list)
  for fn in runners.values():  # warm-up
    fn()
  for round_ in range(args.repeats):
    order = list(runners) if round_ % 2 == 0 else list(runners)[::-1]
    for name in order:
      times[name].append(elapsed_ms(runners[name]))
  row = {
    'kind': kind,
    'count': count,
    'input_ncthw': list(x_shape),
    'weight_oitkk': list(w_shape),
    'stride': list(stride),
    'padding': padding if isinstance(padding, int) else list(padding),
    'relative_errors': errors,
  }
  row.update({f'{name}_ms': float(np.median(times[name])) for name in TIMED})
  flops = j_fwd.cost_analysis()
  row['gflop_fwd'] = float((flops[0] if isinstance(flops, list) else flops)['flops']) / 1e9
  return row


def describe(row: dict) -> str:
  t, h, w = row['input_ncthw'][2:]
  cout, cin = row['weight_oitkk'][:2]
  k = 'x'.join(map(str, row['weight_oitkk'][2:]))
  what = 'CoST views 3x3' if row['kind'] == 'cost views' else k
  stride = 'x'.join(map(str, row['stride']))
  return f'{what} {cin}->{cout}, {t}x{h}x{w}, stride {stride}'


def _pair(torch_ms: float, jax_ms: float, digits: int = 1) -> str:
  return f'{torch_ms:.{digits}f} / {jax_ms:.{digits}f} | {torch_ms / jax_ms:.2f}'


def print_table(rows: list) -> None:
  print(
    '\n| conv (input T x H x W) | calls | GFLOP fwd | fwd torch / JAX (ms) | ratio '
    '| bwd torch / JAX (ms) | ratio |'
  )
  print('|---|---:|---:|---|---:|---|---:|')
  for r in rows:
    print(
      f'| {describe(r)} | {r["count"]} | {r["gflop_fwd"]:.2f} '
      f'| {_pair(r["torch_fwd_ms"], r["jax_fwd_ms"])} '
      f'| {_pair(r["torch_bwd_ms"], r["jax_bwd_ms"])} |'
    )
  total = {k: sum(r['count'] * r[f'{k}_ms'] for r in rows) for k in TIMED}
  print(
    f'| **all, x calls** | {sum(r["count"] for r in rows)} '
    f'| {sum(r["count"] * r["gflop_fwd"] for r in rows):.1f} '
    f'| {_pair(total["torch_fwd"], total["jax_fwd"], 0)} '
    f'| {_pair(total["torch_bwd"], total["jax_bwd"], 0)} |'
  )


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--arch', default='costb', choices=vs_pytorch.ARCHS)
  vs_pytorch.add_shape_arguments(parser)
  parser.add_argument('--repeats', type=int, default=15, help='timed rounds (medians reported)')
  parser.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads')
  parser.add_argument(
    '--rtol', type=float, default=1e-4, help='check: max |JAX - torch| / max |torch|, each output'
  )
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default='benchmarks/results/conv_vs_pytorch.json')
  return parser.parse_args(argv)


def main() -> None:
  args = parse_args()
  torch.set_num_threads(args.threads)
  info = vs_pytorch.machine_info(args)
  calls = record_convolutions(args.arch, args)
  print(
    f'{args.arch}-R{args.depth}, batch {args.batch} x {args.frames} x {args.size}^2, fp32: '
    f'{len(calls)} distinct convolutions, {sum(calls.values())} calls; torch {torch.__version__} '
    f'({torch.get_num_threads()} threads) vs jax {jax.__version__}; medians of {args.repeats} '
    'alternating rounds',
    flush=True,
  )
  rng = np.random.default_rng(args.seed)
  rows = []
  for key, count in sorted(calls.items(), key=lambda kv: -np.prod(kv[0][1])):
    rows.append(measure(key, count, args, rng))
    print(f'  {describe(rows[-1])}: done', flush=True)
  print_table(rows)
  if args.json:
    os.makedirs(os.path.dirname(args.json) or '.', exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump({'args': vars(args), 'machine': info, 'rows': rows}, f, indent=1)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
