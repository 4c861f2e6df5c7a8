"""benchmarks/device_check.sh on this CPU (ALLOW_CPU=1) at a tiny size, and its helpers: the peak
table, the order of the rows, the markdown table and the choice of `conv_impl='auto'`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import device_check  # noqa: E402
import device_peaks  # noqa: E402
import device_table  # noqa: E402

from tests.xla_cache import XLA_TEST_FLAGS  # noqa: E402

XLA_CACHE = os.path.join(tempfile.gettempdir(), f'cost_jax_device_check_xla_cache_{os.getuid()}')


def test_peaks_follow_the_precision_convention():
  h100 = 'NVIDIA H100 80GB HBM3'
  assert device_peaks.peak_flops(h100, 'gpu', 'bfloat16')[0] == 989.4e12
  assert device_peaks.peak_flops(h100, 'gpu', 'float32')[0] == 494.7e12  # TF32
  assert device_peaks.peak_flops(h100, 'gpu', 'float32_full')[0] == 67e12
  assert device_peaks.find('NVIDIA H100 PCIe').name == 'H100 PCIe'
  assert device_peaks.find('NVIDIA A100-SXM4-80GB').name == 'A100'
  assert device_peaks.find('NVIDIA L40S') is None  # not the L4
  v100 = 'Tesla V100-SXM2-16GB'
  assert device_peaks.peak_flops(v100, 'gpu', 'float32')[0] == 15.7e12  # no TF32: fp32
  assert device_peaks.peak_flops(v100, 'gpu', 'bfloat16')[0] is None
  assert device_peaks.peak_flops('TPU v5 lite', 'tpu', 'float32')[0] == pytest.approx(197e12 / 3)
  assert device_peaks.find('TPU v5').name == 'TPU v5p'
  assert device_peaks.peak_flops('cpu', 'cpu', 'float32')[0] is None


def test_rows_come_in_order_of_importance():
  rows = device_check.plan_rows(
    ['costb', 'c2d'], ['float32', 'bfloat16'], ['auto', 'fold2d', 'fold2d_custom_grads', 'conv3d'],
    'fold2d',
  )  # fmt: skip
  labels = [(r['arch'], r['impl'], r['precision']) for r in rows]
  assert labels[:6] == [
    ('costb', 'auto', 'float32'),
    ('costb', 'auto', 'bfloat16'),
    ('c2d', 'auto', 'float32'),
    ('c2d', 'auto', 'bfloat16'),
    ('costb', 'fold2d_custom_grads', 'float32'),
    ('costb', 'conv3d', 'float32'),
  ]
  assert len(rows) == 12 and ('costb', 'fold2d', 'float32') not in labels  # measured as auto


def _row(arch, impl, resolved, precision, step_s):
  return dict(
    arch=arch, impl=impl, resolved_impl=resolved, precision=precision, train_step_s=step_s
  )


def test_auto_is_chosen_from_a_complete_accelerator_run():
  rows = [
    _row('costb', 'auto', 'fold2d', 'float32', 0.030),
    _row('costb', 'fold2d_custom_grads', 'fold2d_custom_grads', 'float32', 0.025),
    _row('costb', 'conv3d', 'conv3d', 'float32', 0.040),
    _row('c2d', 'auto', 'fold2d', 'float32', 0.020),
  ]
  report = dict(platform='gpu', rows=rows)
  choice, why = device_table.auto_choice(report)
  assert choice == 'fold2d_custom_grads'
  assert 'c2d float32: fastest of 1 measured differs: fold2d' in why
  report['rows'] = rows[:2] + [dict(arch='costb', impl='conv3d', precision='float32', skipped='x')]
  assert device_table.auto_choice(report) == (
    None,
    'CoST(b) float32 not measured in conv3d: keep the current choice',
  )


def test_cpu_dry_run_writes_the_json_and_the_table(tmp_path):
  """Two rows of C2D (float32 with a one-step batch search, bfloat16), two skipped by MAX_ROWS,
  one parity test. One block per stage, XLA at -O0 with a compilation cache: this checks the
  script, not speed."""
  output = tmp_path / 'device_check.json'
  env = dict(
    os.environ,
    PYTHON=sys.executable,
    ALLOW_CPU='1',
    SIZE='32',
    FRAMES='4',
    WIDTH='8',
    STAGE_BLOCKS='1,1,1,1',
    BATCH='2',
    REPEATS='2',
    ARCHS='c2d',
    PRECISIONS='float32,bfloat16',
    IMPLS='auto,conv3d',
    MAX_ROWS='2',
    BATCH_SEARCH='first',
    TESTS='tests/test_cost_layer.py',
    TESTS_K='fold2d and CoSTb and 111',
    TIME_BUDGET_S='600',
    XLA_FLAGS=' '.join(XLA_TEST_FLAGS + ('--xla_llvm_disable_expensive_passes=true',)),
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=XLA_CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    TF_CPP_MIN_LOG_LEVEL='2',
  )
  script = os.path.join(ROOT, 'benchmarks', 'device_check.sh')
  proc = subprocess.run([script, str(output)], env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report = json.loads(output.read_text())

  assert report['platform'] == 'cpu' and report['device']
  parity = report['parity_tests']
  assert parity['total'] == 1 and parity['failures'] == 0 and not parity['timed_out']
  assert 'measured' in report['peaks']['float32']['source']
  assert report['fp32_matmul_peak_gflops'] > 0

  rows = report['rows']
  assert [(r['impl'], r['precision']) for r in rows] == [
    ('auto', 'float32'),
    ('auto', 'bfloat16'),
    ('conv3d', 'float32'),
    ('conv3d', 'bfloat16'),
  ]
  measured, skipped = rows[:2], rows[2:]
  for r in measured:
    assert r['resolved_impl'] == 'fold2d_custom_grads'  # auto on CPU
    assert r['mfu'] > 0 and r['train_flops'] > 0 and r['train_step_s'] > 0
    assert r['train_compile_s'] > 0 and r['train_clips_per_s'] > 0
    assert r['largest_batch'] >= r['batch'] == 2
    assert r['device_peak_mb'] is None and 'CPU' in r['memory_note']
  assert measured[0]['largest_batch_tries'][0]['batch'] == 4  # the search: one try, 2 -> 4
  assert measured[1]['largest_batch_tries'] == []
  assert all(r['skipped'] == 'MAX_ROWS=2' for r in skipped)

  proc = subprocess.run(
    [sys.executable, os.path.join(ROOT, 'benchmarks', 'device_table.py'), str(output), '--auto'],
    capture_output=True,
    text=True,
    check=True,
  )
  lines = proc.stdout.splitlines()
  assert lines[0].startswith('**cpu** (cpu, ')
  table = [line for line in lines if line.startswith('| cpu | c2d |')]
  assert len(table) == 4 and 'skipped: MAX_ROWS=2' in table[3]
  assert table[0].split('|')[7].strip().endswith('%')  # MFU
  assert lines[-1].startswith('auto (cpu): no suggestion (a CPU run')
