"""Progress of a long conversion: a tqdm bar on a terminal, plain log lines otherwise.

When stderr is not a terminal (a log file, a batch job, a pipe), a bar's carriage returns make
unreadable logs; `Progress` then prints one line at the start, every `LOG_EVERY_SECONDS` and at
the end, e.g. ``train: 1200/240000 videos (0.5%), 12.3 videos/s, ETA 5:24:00``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import tqdm

LOG_EVERY_SECONDS = 60.0


def _clock(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """Counts finished videos; `enabled=False` shows nothing. Use as a context manager."""

  def __init__(
    self,
    total: int,
    initial: int = 0,
    desc: str = '',
    unit: str = 'videos',
    enabled: bool = True,
    stream: TextIO | None = None,
  ):
    self.stream = stream or sys.stderr
    self.total, self.done, self.desc, self.unit = total, initial, desc, unit
    self.enabled = enabled
    self._initial = initial
    self._bar = None
    self._start = self._last_log = time.monotonic()
    is_tty = getattr(self.stream, 'isatty', lambda: False)()
    if enabled and is_tty:
      self._bar = tqdm.tqdm(
        total=total,
        initial=initial,
        unit=unit.rstrip('s'),
        desc=desc,
        file=self.stream,
        dynamic_ncols=True,
      )
    elif enabled:
      reused = f', {initial} of them already done' if initial else ''
      self._log(f'{desc}: started, {total} {unit} in all{reused}')

  def _log(self, text: str) -> None:
    print(text, file=self.stream, flush=True)

  def line(self) -> str:
    """The current state as one line."""
    elapsed = time.monotonic() - self._start
    rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
    percent = 100.0 * self.done / self.total if self.total else 100.0
    eta = _clock((self.total - self.done) / rate) if rate > 0 else '?'
    return (
      f'{self.desc}: {self.done}/{self.total} {self.unit} ({percent:.1f}%), '
      f'{rate:.2f} {self.unit}/s, ETA {eta}'
    )

  def update(self, n: int = 1) -> None:
    self.done += n
    if self._bar is not None:
      self._bar.update(n)
    elif self.enabled and time.monotonic() - self._last_log >= LOG_EVERY_SECONDS:
      self._last_log = time.monotonic()
      self._log(self.line())

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    elif self.enabled:
      self.enabled = False
      took = _clock(time.monotonic() - self._start)
      self._log(self.line().split(', ETA')[0] + f', done in {took}')

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
