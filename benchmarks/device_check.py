"""The body of `device_check.sh` (see there for the knobs): parity tests, then one process per
benchmark row, within a time budget, into one JSON.

This process never initialises JAX itself: on a GPU that would hold most of the memory (JAX
preallocates) and on a TPU the chip, for the whole run. Every measurement is a child process
(`device_row.py`), one after another.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import device_peaks  # noqa: E402

CONV_IMPLS = ('fold2d', 'fold2d_custom_grads', 'conv3d')  # cost_jax.models.recognizer, less auto
DEFAULT_TESTS = (
  'tests/test_models.py tests/test_cost_layer.py tests/test_custom_grads.py '
  'tests/test_weights.py tests/test_precision.py'
)
RESERVE_S = 5.0  # kept back for writing the JSON


def env(name: str, default: str) -> str:
  value = os.environ.get(name, '')
  return value if value.strip() else default


def csv(name: str, default: str) -> list[str]:
  return [v.strip() for v in env(name, default).split(',') if v.strip()]


class Budget:
  def __init__(self, seconds: float):
    self.seconds = seconds
    self.start = time.monotonic()

  def elapsed(self) -> float:
    return time.monotonic() - self.start

  def left(self) -> float:
    return self.seconds - RESERVE_S - self.elapsed()


def run_child(args: list[str], out: str, timeout: float) -> tuple[dict | None, str]:
  """Runs `device_row.py args --out out`; (its JSON plus `process_s`, its whole run, start and
  imports included; '') or (None, what went wrong)."""
  cmd = [sys.executable, os.path.join(HERE, 'device_row.py'), *args, '--out', out]
  start = time.monotonic()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, timeout))
  except subprocess.TimeoutExpired:
    return None, f'stopped at the time budget ({timeout:.0f} s left when it started)'
  if proc.returncode != 0 or not os.path.exists(out):
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return None, f'exit status {proc.returncode}: ' + ' | '.join(tail)[-600:]
  with open(out) as f:
    result = json.load(f)
  result['process_s'] = time.monotonic() - start
  return result, ''


def parity_tests(budget_s: float, work: str) -> dict:
  """pytest on TESTS (-k TESTS_K), stopped with SIGINT after `budget_s` (pytest then still writes
  the JUnit XML of the tests it finished)."""
  tests = env('TESTS', DEFAULT_TESTS).split()
  cmd = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-rN']
  cmd += ['--junitxml', os.path.join(work, 'parity.xml'), *tests]
  if env('TESTS_K', ''):
    cmd += ['-k', env('TESTS_K', '')]
  result = dict(command=' '.join(cmd[1:]), budget_s=budget_s, timed_out=False)
  start = time.monotonic()
  with open(os.path.join(work, 'parity.log'), 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
      proc.wait(timeout=max(1.0, budget_s))
    except subprocess.TimeoutExpired:
      result['timed_out'] = True
      proc.send_signal(signal.SIGINT)
      try:
        proc.wait(timeout=20)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
  result['time_s'] = time.monotonic() - start
  result['exit_status'] = proc.returncode
  with open(os.path.join(work, 'parity.log')) as f:
    log_text = f.read()
  collected = re.search(r'collected (\d+) items?(?: / (\d+) deselected)?', log_text)
  if collected:
    result['collected'] = int(collected.group(1)) - int(collected.group(2) or 0)
  try:
    root = ET.parse(os.path.join(work, 'parity.xml')).getroot()
  except (OSError, ET.ParseError) as e:
    result.update(total=0, failures=0, skipped=0, failed=[], error=f'no JUnit XML: {e}')
    result['log_tail'] = log_text.strip().splitlines()[-5:]
    return result
  cases = [c for c in root.iter('testcase') if c.get('name')]  # an interrupted one has none
  failed = [
    f'{c.get("classname")}::{c.get("name")}'
    for c in cases
    if c.find('failure') is not None or c.find('error') is not None
  ]
  result.update(
    total=len(cases),
    failures=len(failed),
    skipped=sum(c.find('skipped') is not None for c in cases),
    failed=failed,
  )
  if result['timed_out']:
    result['note'] = (
      f'stopped after {budget_s:.0f} s (PARITY_BUDGET_S): {len(cases)} of '
      f'{result.get("collected", "?")} tests ran'
    )
  return result


def plan_rows(archs, precisions, impls, auto_impl) -> list[dict]:
  """The rows in order of importance: every arch and precision in `auto` (archs first, in the
  order given: CoST(b) before C2D by default), then the other conv_impls, arch by arch, precision
  by precision (so CoST(b) float32's alternatives, what `auto` is chosen by, come first)."""
  rows = []
  if 'auto' in impls:
    rows += [
      dict(arch=a, impl='auto', resolved_impl=auto_impl, precision=p)
      for a in archs
      for p in precisions
    ]
  others = [i for i in impls if i != 'auto' and not ('auto' in impls and i == auto_impl)]
  rows += [dict(arch=a, impl=i, precision=p) for a in archs for p in precisions for i in others]
  return rows


def add_mfu(row: dict, peaks: dict) -> None:
  peak = peaks.get(row['precision'], {})
  flops, step_s = row.get('train_flops'), row.get('train_step_s')
  row['peak_flops'] = peak.get('flops')
  row['peak_source'] = peak.get('source')
  row['achieved_tflops'] = flops / step_s / 1e12 if flops and step_s else None
  row['mfu'] = flops / step_s / peak['flops'] if flops and step_s and peak.get('flops') else None


def write(report: dict, budget: Budget, output: str) -> None:
  """Writes the report so far (after every row: a run cut short still leaves its rows)."""
  report['elapsed_s'] = budget.elapsed()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output + '.tmp', 'w') as f:
    json.dump(report, f, indent=2)
  os.replace(output + '.tmp', output)


def main() -> int:
  output = sys.argv[1] if len(sys.argv) > 1 else 'benchmarks/results/device_check.json'
  budget = Budget(float(env('TIME_BUDGET_S', '480')))
  work = tempfile.mkdtemp(prefix='device_check_')
  notes: list[str] = []

  probe, error = run_child(['--probe'], os.path.join(work, 'probe.json'), min(budget.left(), 300))
  if probe is None:
    print(f'error: the probe failed: {error}', file=sys.stderr)
    return 1
  platform, cpu = probe['platform'], probe['platform'] == 'cpu'
  if cpu and not env('ALLOW_CPU', ''):
    print('error: JAX sees no accelerator (backend cpu); install jax for your GPU/TPU first, or '
          'set ALLOW_CPU=1 to try this script on a CPU', file=sys.stderr)  # fmt: skip
    return 2
  print(f'{platform}: {probe["device"]} x{probe["device_count"]}, jax {probe["jax"]}; '
        f'budget {budget.seconds:.0f} s', flush=True)  # fmt: skip

  measured = probe['measured_matmul_flops']
  peaks = {'convention': device_peaks.CONVENTION}
  for precision in csv('PRECISIONS', env('DTYPES', 'float32,bfloat16')):
    if cpu:
      peaks[precision] = dict(
        flops=measured['float32'],
        source=f'measured: float32 {probe["matmul_n"]}^2 matmul on this CPU (median of 5), '
        'used for every precision',
      )
    else:
      flops, source = device_peaks.peak_flops(probe['device'], platform, precision)
      peaks[precision] = dict(flops=flops, source=source)

  report = dict(
    platform=platform,
    device=probe['device'],
    device_count=probe['device_count'],
    jax=probe['jax'],
    jaxlib=probe['jaxlib'],
    time_budget_s=budget.seconds,
    elapsed_s=None,
    settings=None,
    parity_tests=None,
    auto_conv_impl=probe['auto_conv_impl'],
    float32_matmul_level=probe['float32_matmul_level'],
    peaks=peaks,
    # An n x n matmul under each policy (float32: at float32_matmul_level, TF32 on NVIDIA).
    measured_matmul_tflops={k: v / 1e12 for k, v in measured.items()},
    matmul_n=probe['matmul_n'],
    fp32_matmul_peak_gflops=measured['float32'] / 1e9,
    memory_note=None
    if probe['memory_stats']
    else 'memory_stats() is None on this platform: no peak device memory',
    notes=notes,
    rows=[],
  )
  parity_budget = float(env('PARITY_BUDGET_S', str(0.25 * budget.seconds)))
  parity = parity_tests(min(parity_budget, max(1.0, budget.left())), work)
  print(f'parity tests: {parity["total"]} run, {parity["failures"]} failed'
        f'{", stopped at its budget" if parity["timed_out"] else ""} '
        f'({parity["time_s"]:.0f} s)', flush=True)  # fmt: skip

  archs = csv('ARCHS', 'costb,c2d')
  precisions = csv('PRECISIONS', env('DTYPES', 'float32,bfloat16'))
  impls = csv('IMPLS', 'auto,' + ','.join(CONV_IMPLS))
  batch = int(env('BATCH', '8'))
  settings = dict(
    batch_per_device=batch,
    frames=int(env('FRAMES', '8')),
    size=int(env('SIZE', '224')),
    width=int(env('WIDTH', '64')),
    stage_blocks=env('STAGE_BLOCKS', ''),
    repeats=int(env('REPEATS', '5')),
    archs=archs,
    precisions=precisions,
    impls=impls,
    batch_search=env('BATCH_SEARCH', 'auto'),  # auto: the `auto` rows; first; all; none
    batch_tries=int(env('BATCH_TRIES', '1' if cpu else '3')),
    max_batch=int(env('MAX_BATCH', str(2 * batch if cpu else 1024))),
    search_budget_s=float(env('SEARCH_BUDGET_S', str(budget.seconds / 8))),
    max_rows=int(env('MAX_ROWS', '0')),
    xla_flags=os.environ.get('XLA_FLAGS', ''),
  )
  report.update(settings=settings, parity_tests=parity)
  write(report, budget, output)
  plan = plan_rows(archs, precisions, impls, probe['auto_conv_impl'])
  if 'auto' in impls and probe['auto_conv_impl'] in impls:
    notes.append(f'{probe["auto_conv_impl"]} is measured as `auto` (what auto resolves to here)')

  rows, base_costs = report['rows'], []
  for i, spec in enumerate(plan):
    label = f'{spec["arch"]}/{spec["impl"]}/{spec["precision"]}'
    left = budget.left()
    estimate = max(base_costs) if base_costs else 0.0
    if settings['max_rows'] and i >= settings['max_rows']:
      rows.append(dict(spec, skipped=f'MAX_ROWS={settings["max_rows"]}'))
      continue
    if left <= 0 or estimate > left:
      rows.append(
        dict(spec, skipped=f'time budget: {max(left, 0):.0f} s left, a row took ~{estimate:.0f} s')
      )
      continue
    search = {'all': True, 'auto': spec['impl'] == 'auto', 'first': i == 0}.get(
      settings['batch_search'], False
    )
    args = [
      '--arch', spec['arch'], '--impl', spec['impl'], '--precision', spec['precision'],
      '--batch', str(batch), '--frames', str(settings['frames']), '--size', str(settings['size']),
      '--width', str(settings['width']), '--repeats', str(settings['repeats']),
      '--stage-blocks', settings['stage_blocks'],
      '--search-tries', str(settings['batch_tries'] if search else 0),
      '--max-batch', str(settings['max_batch']),
      '--search-budget', str(settings['search_budget_s']),
      '--deadline', str(time.time() + left),
    ]  # fmt: skip
    row, error = run_child(args, os.path.join(work, f'row{i}.json'), left)
    if row is None:
      rows.append(dict(spec, failed=error))
      print(f'  {label}: failed: {error}', flush=True)
      if 'time budget' in error:
        base_costs.append(left)
      continue
    tries = row['largest_batch_tries']
    base_costs.append(row['process_s'] - sum(t.get('compile_s', 0) for t in tries))
    add_mfu(row, peaks)
    rows.append(row)
    write(report, budget, output)
    mfu = f'{100 * row["mfu"]:.1f}%' if row['mfu'] is not None else 'n/a'
    print(f'  {label}: {1e3 * row["train_step_s"]:.1f} ms/step, '
          f'{row["train_clips_per_s"]:.1f} clips/s, MFU {mfu}, '
          f'compile {row["train_compile_s"]:.0f} s, largest batch {row["largest_batch"]} '
          f'({row["largest_batch_stopped"]})', flush=True)  # fmt: skip
  skipped = [r for r in rows if 'skipped' in r]
  if skipped:
    notes.append(f'{len(skipped)} of {len(rows)} rows skipped: {skipped[0]["skipped"]}')
  write(report, budget, output)
  measured_rows = sum('train_step_s' in r for r in rows)
  print(f'{measured_rows} of {len(rows)} rows measured in {budget.elapsed():.0f} s; wrote {output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
