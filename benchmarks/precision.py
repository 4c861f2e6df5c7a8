r"""bfloat16 against float32 (`model.precision`): on the MMAction2 parity fixtures, and trained.

  python benchmarks/precision.py [--archs c2d,i3d,costa,costb] [--json PATH]
  python benchmarks/precision.py --demo [--workdir precision_demo]     (trains twice, ~30 min)

Parity: each fixture model (the four architectures at width 8, 2 clips of 8x64x64) in float32
and in bfloat16, eval logits and stage outputs against MMAction2's recorded ones, the train-mode
loss against MMAction2's, and the gradient of every parameter in bfloat16 against float32's
(MMAction2 recorded no gradients; ours in float32 match its forward pass to 1e-6), with
BatchNorm on batch statistics (training) and frozen (`model.norm_eval`). For a tensor `a` against
a reference `b`: max error = max|a - b| / max|b|, median error = median|a - b| / median|b| (each
relative to the reference's own scale, so that values near zero do not blow it up). Gradients:
per parameter ||g16 - g32|| / ||g32|| and the cosine of the two, then the largest and the median
over the parameters. A control row computes everything in float32 but rounds the input clips to
bfloat16 first: the fixture models are random and their BatchNorm groups tiny (2 clips; 2x2
pixels in the last stage), so in training mode that alone moves their gradients as far as
bfloat16 does, while with BatchNorm frozen bfloat16's gradients stay close to float32's.

Demo: `make demo`'s CoST(b) recipe (configs/demo_costb.py, same data, same seed) trained from
scratch in float32 and in bfloat16, then the test protocol: val and test top-1 of both.

On XLA:CPU a bfloat16 convolution is computed by converting its inputs to float32, convolving in
float32 and rounding the result to bfloat16: the rounding of inputs, outputs and every stored
activation is that of bfloat16 compute with float32 accumulation, as on GPU and TPU, but CPU
times say nothing of an accelerator's (bfloat16 is not faster here).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from cost_jax import storage  # noqa: E402
from cost_jax.models import create_model  # noqa: E402
from cost_jax.weights import mmaction2  # noqa: E402
from tests import fixtures  # noqa: E402

STAGES = ('maxpool', 'layer1', 'layer2', 'layer3')


def relative_errors(a: Any, b: Any) -> tuple[float, float]:
  """(max|a-b| / max|b|, median|a-b| / median|b|) as float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  diff = np.abs(a - b)
  return float(diff.max() / np.abs(b).max()), float(np.median(diff) / np.median(np.abs(b)))


def _model(state: dict, precision: str, norm_eval: bool = False):
  config = mmaction2.infer_model_config(state)
  config.update(dict(dropout_ratio=0.0, bn_group_size=0, precision=precision, norm_eval=norm_eval))
  return create_model(config), mmaction2.state_dict_to_variables(state, config)


def _forward(model, variables, clips):
  def eval_fn(v):
    logits, state = model.apply(v, clips, train=False, mutable=['intermediates'])
    stages = state['intermediates']['backbone']
    return logits, {s: stages[s][0] for s in STAGES}

  return jax.jit(eval_fn)(variables)


def _loss_and_gradients(model, variables, clips, labels):
  def loss_fn(params):
    logits, _ = model.apply(
      {**variables, 'params': params}, clips, train=True, mutable=['batch_stats']
    )
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

  return jax.jit(jax.value_and_grad(loss_fn))(variables['params'])


def gradient_row(arch: str, bn: str, grads16: Any, grads32: Any) -> dict[str, Any]:
  """Per parameter: |g16 - g32| / |g32| (norms) and the cosine; summarised over parameters."""
  errors, cosines = [], []
  for a, b in zip(jax.tree.leaves(grads16), jax.tree.leaves(grads32), strict=True):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    errors.append(np.linalg.norm(a - b) / np.linalg.norm(b))
    cosines.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
  return dict(
    arch=arch,
    precision='bfloat16',
    against='float32',
    quantity=f'gradients, BatchNorm {bn} ({len(errors)} parameters)',
    max_error=float(np.max(errors)),
    median_error=float(np.median(errors)),
    median_cosine=float(np.median(cosines)),
    min_cosine=float(np.min(cosines)),
  )


def parity_rows(arch: str) -> list[dict[str, Any]]:
  """One row per (precision, compared quantity) for `arch`."""
  io = fixtures.io(arch)
  state = fixtures.state_dict(arch)
  clips = jnp.asarray(fixtures.ncthw_to_nthwc(io['input']))
  labels = jnp.asarray(io['train_labels'])
  rows, grads = [], {}
  for precision in ('float32', 'bfloat16'):
    model, variables = _model(state, precision)
    logits, stages = _forward(model, variables, clips)
    loss, grads[precision, 'batch statistics'] = _loss_and_gradients(
      model, variables, clips, labels
    )
    if precision == 'float32':
      # The control: float32 throughout, only the input rounded to bfloat16 (as the first
      # convolution in bfloat16 sees it). How far that alone moves the gradients is how
      # sensitive the problem itself is, whatever the arithmetic.
      rounded = clips.astype(jnp.bfloat16).astype(jnp.float32)
      _, grads['control', 'batch statistics'] = _loss_and_gradients(
        model, variables, rounded, labels
      )
    model, variables = _model(state, precision, norm_eval=True)
    _, grads[precision, 'frozen'] = _loss_and_gradients(model, variables, clips, labels)
    compared = {'eval logits': (logits, io['eval_logits'])}
    for stage in STAGES:
      compared[f'eval {stage}'] = (
        stages[stage],
        fixtures.ncthw_to_nthwc(io[f'eval_stage_{stage}']),
      )
    compared['train loss'] = (loss, io['train_loss_cls'])
    for name, (ours, reference) in compared.items():
      worst, median = relative_errors(ours, reference)
      rows.append(
        dict(arch=arch, precision=precision, against='MMAction2', quantity=name,
             max_error=worst, median_error=median)
      )  # fmt: skip
  for bn in ('batch statistics', 'frozen'):
    rows.append(gradient_row(arch, bn, grads['bfloat16', bn], grads['float32', bn]))
  control = gradient_row(
    arch,
    'batch statistics',
    grads['control', 'batch statistics'],
    grads['float32', 'batch statistics'],
  )
  control.update(precision='float32, input rounded to bfloat16')
  rows.append(control)
  return rows


def format_parity(rows: list[dict[str, Any]]) -> str:
  lines = [
    '| arch | precision | quantity | against | max error | median error | median / min cosine |',
    '| --- | --- | --- | --- | ---: | ---: | ---: |',
  ]
  for r in rows:
    cosine = f'{r["median_cosine"]:.3f} / {r["min_cosine"]:.3f}' if 'min_cosine' in r else ''
    lines.append(
      f'| {r["arch"]} | {r["precision"]} | {r["quantity"]} | {r["against"]} | '
      f'{r["max_error"]:.1e} | {r["median_error"]:.1e} | {cosine} |'
    )
  return '\n'.join(lines)


def train_demo(workdir: str) -> list[dict[str, Any]]:
  """`make demo`'s CoST(b) trained and tested once per precision; one row each."""
  import demo
  from configs import demo_costb
  from cost_jax.training import evaluate, loop

  data_dir = demo.prepare_data(workdir)
  rows = []
  for precision in ('float32', 'bfloat16'):
    config = demo_costb.get_config()
    config.data.data_dir = data_dir
    config.model.precision = precision
    run_dir = os.path.join(workdir, f'costb_{precision}')
    start = time.monotonic()
    summary = loop.train_and_evaluate(config, run_dir)
    seconds = time.monotonic() - start
    tested = evaluate.run_test_protocol(config, run_dir)
    rows.append(
      dict(
        precision=precision,
        steps=summary['step'],
        val_top1=(summary['val'] or {}).get('top1'),
        best_val_top1=summary['best']['val_top1'],
        test_top1=tested['metrics']['top1'],
        test_top5=tested['metrics']['top5'],
        train_seconds=seconds,
      )
    )
  return rows


def format_demo(rows: list[dict[str, Any]]) -> str:
  lines = [
    '| precision | steps | val top-1 | test top-1 | test top-5 | train time (CPU) |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ]
  for r in rows:
    val = '-' if r['val_top1'] is None else f'{100 * r["val_top1"]:.1f}'
    lines.append(
      f'| {r["precision"]} | {r["steps"]} | {val} | {100 * r["test_top1"]:.1f} | '
      f'{100 * r["test_top5"]:.1f} | {r["train_seconds"]:.0f} s |'
    )
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--archs', default=','.join(fixtures.ARCHS))
  parser.add_argument('--demo', action='store_true', help="train make demo's CoST(b) twice")
  parser.add_argument('--workdir', default='precision_demo', help='for --demo')
  parser.add_argument('--json', default=None, help='default benchmarks/results/precision*.json')
  args = parser.parse_args()
  meta = dict(platform=jax.default_backend(), device=jax.devices()[0].device_kind)
  meta.update(jax=jax.__version__, cpu=platform.processor() or platform.machine())
  if args.demo:
    import tensorflow as tf

    tf.config.set_visible_devices([], 'GPU')
    rows = train_demo(os.path.abspath(args.workdir))
    table, default_json = format_demo(rows), 'benchmarks/results/precision_demo.json'
  else:
    rows = [row for arch in args.archs.split(',') for row in parity_rows(arch)]
    table, default_json = format_parity(rows), 'benchmarks/results/precision.json'
  print(table)
  storage.write_json(args.json or default_json, {**meta, 'rows': rows})


if __name__ == '__main__':
  main()
