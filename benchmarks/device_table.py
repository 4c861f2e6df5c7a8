"""The accelerator table of benchmarks/README.md from `device_check.sh` JSONs, and what
`conv_impl='auto'` should be on each platform.

  python benchmarks/device_table.py benchmarks/results/device_check.json [MORE.json ...] [--auto]

Prints markdown: a line per run (device, parity tests, the peaks MFU is taken against), then one
table, a row per benchmark row of every run (skipped and failed rows say why). `--auto` adds the
choice for `AUTO_CONV_IMPL` (cost_jax/models/recognizer.py) per run.

How `auto` is chosen (a manual step, so that a change of the default is a reviewed commit): run
`device_check.sh` on the platform with every conv_impl measured (the default IMPLS), then
`device_table.py JSON --auto`. It picks the conv_impl with the shortest median CoST(b) float32
train step (the default model and precision) and prints the `AUTO_CONV_IMPL` entry to write into
cost_jax/models/recognizer.py, with the step times it compared and whether bfloat16 and C2D agree.
It refuses (prints why, suggests nothing) when a CoST(b) float32 row of any conv_impl is missing,
failed or skipped, or the run was on a CPU.
"""

from __future__ import annotations

import argparse
import json

IMPLS = ('fold2d', 'fold2d_custom_grads', 'conv3d')


def _num(value, fmt: str, scale: float = 1.0) -> str:
  return '-' if value is None else format(value * scale, fmt)


def describe(report: dict) -> str:
  parity = report['parity_tests']
  passed = parity['total'] - parity['failures'] - parity.get('skipped', 0)
  stopped = f', stopped at {parity["budget_s"]:.0f} s' if parity.get('timed_out') else ''
  s = report['settings']
  peaks = '; '.join(
    f'{p}: {v["flops"] / 1e12:.4g} TFLOP/s ({v["source"]})' if v.get('flops') else f'{p}: none'
    for p, v in report['peaks'].items()
    if p != 'convention'
  )
  return (
    f'**{report["device"]}** ({report["platform"]}, {report["device_count"]} device(s), jax '
    f'{report["jax"]}), per device: batch {s["batch_per_device"]}, {s["frames"]}x{s["size"]}x'
    f'{s["size"]}, width {s["width"]}; parity tests {passed} passed, {parity["failures"]} failed'
    f'{stopped}; {report["elapsed_s"]:.0f} s of a {report["time_budget_s"]:.0f} s budget. '
    f'MFU against {peaks}.'
  )


HEADER = (
  '| device | arch | conv_impl | precision | train step (ms) | clips/s | MFU | peak memory (GiB) '
  '| compile (s) | largest batch/device |\n'
  '| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |'
)


def table(reports: list[dict]) -> str:
  lines = [HEADER]
  for report in reports:
    lines += table_rows(report)
  return '\n'.join(lines)


def table_rows(report: dict) -> list[str]:
  lines = []
  for r in report['rows']:
    impl = r['impl'] if r['impl'] != 'auto' else f'auto ({r.get("resolved_impl", "?")})'
    head = f'| {report["device"]} | {r["arch"]} | {impl} | {r["precision"]} |'
    if 'train_step_s' not in r:
      why = r.get('skipped') or r.get('failed') or 'not measured'
      kind = 'skipped' if 'skipped' in r else 'failed'
      lines.append(f'{head} {kind}: {why.replace("|", "/")} | | | | | |')
      continue
    memory = _num(r.get('device_peak_mb'), '.1f', 1 / 1024)
    stopped = r['largest_batch_stopped']
    if r.get('largest_batch_tries'):
      largest = f'{r["largest_batch"]} ({stopped})'
    elif stopped.startswith('no search'):
      largest = f'>= {r["batch"]} (not searched)'
    else:
      largest = f'>= {r["batch"]} (no try: {stopped})'
    lines.append(
      f'{head} {1e3 * r["train_step_s"]:.1f} | {r["train_clips_per_s"]:.1f} | '
      f'{_num(r.get("mfu"), ".1%")} | {memory} | {r["train_compile_s"]:.1f} | {largest} |'
    )
  return lines


def _measured(report: dict, arch: str, precision: str) -> dict[str, dict]:
  """{resolved conv_impl: row} of the measured rows of `arch` and `precision`."""
  return {
    r['resolved_impl']: r
    for r in report['rows']
    if r['arch'] == arch and r['precision'] == precision and 'train_step_s' in r
  }


def auto_choice(report: dict) -> tuple[str | None, str]:
  """(the conv_impl `auto` should resolve to on the report's platform, or None; the reasons)."""
  if report['platform'] == 'cpu':
    return None, 'a CPU run: the CPU choice comes from benchmarks/vs_pytorch.py'
  rows = _measured(report, 'costb', 'float32')
  missing = [i for i in IMPLS if i not in rows]
  if missing:
    return None, f'CoST(b) float32 not measured in {", ".join(missing)}: keep the current choice'
  best = min(rows, key=lambda i: rows[i]['train_step_s'])
  times = ', '.join(f'{i} {1e3 * rows[i]["train_step_s"]:.1f} ms' for i in IMPLS)
  why = [f'CoST(b) float32 train step: {times}']
  for arch, precision in (('costb', 'bfloat16'), ('c2d', 'float32'), ('c2d', 'bfloat16')):
    other = _measured(report, arch, precision)
    if other:
      fastest = min(other, key=lambda i: other[i]['train_step_s'])
      agree = 'agrees' if fastest == best else f'differs: {fastest}'
      why.append(f'{arch} {precision}: fastest of {len(other)} measured {agree}')
  return best, '; '.join(why)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('json', nargs='+')
  parser.add_argument('--auto', action='store_true', help="also print the choice for 'auto'")
  args = parser.parse_args()
  reports = []
  for path in args.json:
    with open(path) as f:
      reports.append(json.load(f))
  for report in reports:
    print(describe(report))
    print()
  print(table(reports))
  for report in reports if args.auto else []:
    choice, why = auto_choice(report)
    print()
    if choice is None:
      print(f'auto ({report["device"]}): no suggestion ({why})')
    else:
      print(f"auto ({report['device']}): AUTO_CONV_IMPL['{report['platform']}'] = '{choice}'")
      print(f'  # {why}; now {report["auto_conv_impl"]}; edit cost_jax/models/recognizer.py')


if __name__ == '__main__':
  main()
