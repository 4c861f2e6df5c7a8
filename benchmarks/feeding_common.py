"""Standard-library helpers shared by `feeding.py` and its workers (`feeding_mmaction2.py` runs
in another venv, so nothing here imports the project or a third-party package)."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable, Iterable

RESULT_PREFIX = 'FEEDING_RESULT '
_CLK_TCK = os.sysconf('SC_CLK_TCK')


def cpu_name() -> str:
  """The host CPU's model name (Linux), else what `platform` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _threads(pid: int) -> list[int]:
  try:
    return [int(t) for t in os.listdir(f'/proc/{pid}/task')]
  except OSError:
    return []


def _children(pid: int) -> list[int]:
  out = []
  for tid in _threads(pid):
    try:
      with open(f'/proc/{pid}/task/{tid}/children') as f:
        out.extend(int(c) for c in f.read().split())
    except OSError:
      pass
  return out


def _tree(pid: int) -> list[int]:
  pids, stack = [], [pid]
  while stack:
    p = stack.pop()
    pids.append(p)
    stack.extend(_children(p))
  return pids


def tree_cpu_seconds(pid: int | None = None) -> float:
  """User + system CPU seconds of a live process (all its threads) and its live descendants."""
  total = 0.0
  for p in _tree(os.getpid() if pid is None else pid):
    try:
      with open(f'/proc/{p}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    total += (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
  return total


def pin_tree(pid: int, cpus: Iterable[int]) -> None:
  """Sets the CPU affinity of every thread of `pid` and of its descendants (threads created
  later inherit it from their creator)."""
  cpus = set(cpus)
  for p in _tree(pid):
    for tid in _threads(p):
      try:
        os.sched_setaffinity(tid, cpus)
      except OSError:  # the thread ended meanwhile
        pass


def timed(
  next_item: Callable[[], int], count: int, warmup: int, min_seconds: float = 0.5
) -> dict[str, float]:
  """Calls `next_item()` (which returns how many items it delivered) `warmup` times, then until
  `count` items came and `min_seconds` passed (CPU time is counted in clock ticks): the items,
  wall seconds and CPU seconds of this process tree while timed."""
  for _ in range(warmup):
    next_item()
  start, cpu, done = time.perf_counter(), tree_cpu_seconds(), 0
  while done < count or time.perf_counter() - start < min_seconds:
    done += next_item()
  wall = time.perf_counter() - start
  return {'items': done, 'wall_s': wall, 'cpu_s': tree_cpu_seconds() - cpu}


def emit(result: dict[str, Any]) -> None:
  """The worker's answer: one line on stdout that `parse` finds among any other output."""
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse(stdout: str) -> dict[str, Any]:
  for line in reversed(stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX) :])
  raise ValueError('the worker printed no result line')
