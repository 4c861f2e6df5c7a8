"""Keeps orbax's and tensorstore's noise off the terminal, so that a failure reads as one line.

Two sources, both harmless once the exception has reached our code:

* orbax logs dozens of INFO lines per save, and logs every failure of a background save (with its
  traceback) before re-raising it to the caller;
* when one read of a restore fails, orbax closes its event loop while tensorstore still completes
  the other reads; each completion then calls `loop.call_soon_threadsafe` on the closed loop and
  tensorstore prints the resulting `RuntimeError: Event loop is closed` traceback (hundreds); the
  abandoned read coroutines, once collected, add "Task exception was never retrieved" and
  "Exception ignored in: <coroutine ...>" tracebacks with tensorstore specs.

`install()` filters the first from the absl log, and makes closed event loops ignore late
callbacks and the exceptions of abandoned reads (what they concern is a future nobody awaits any
more; the first failure has reached the caller). `after_failure()`, called where such a failure
is caught, hides the "coroutine ... was never awaited" warnings of what it left unscheduled.
"""

from __future__ import annotations

import asyncio
import logging as py_logging
import os
import sys
import threading
import warnings

from absl import logging

_lock = threading.Lock()
_installed = {'loop': False, 'logs': False}


class _OrbaxLogFilter(py_logging.Filter):
  """Drops orbax's INFO lines, and its logged exceptions (orbax re-raises them to the caller)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if '/orbax/' not in record.pathname:
      return True
    return record.levelno >= py_logging.WARNING and not record.exc_info


class _ClosedLoopTolerant(asyncio.SelectorEventLoop):
  """An event loop that, once closed, ignores callbacks scheduled from other threads and the
  exceptions of tasks nobody awaited any more (the siblings of a failed `gather`)."""

  def call_exception_handler(self, context):
    if self.is_closed() and 'exception was never retrieved' in str(context.get('message')):
      return
    super().call_exception_handler(context)

  def call_soon_threadsafe(self, callback, *args, context=None):
    try:
      return super().call_soon_threadsafe(callback, *args, context=context)
    except RuntimeError:
      if self.is_closed():
        return None
      raise


class _Policy(asyncio.DefaultEventLoopPolicy):
  _loop_factory = _ClosedLoopTolerant


def _is_abandoned_orbax_read(unraisable) -> bool:
  """An orbax read coroutine closed unfinished after its restore failed: orbax turns the
  GeneratorExit into an exception that nobody can catch (Python reports it as unraisable)."""
  error, coroutine = unraisable.exc_value, unraisable.object
  code = getattr(coroutine, 'cr_code', None)
  return (
    isinstance(error, Exception)
    and isinstance(error.__cause__, GeneratorExit)
    and code is not None
    and f'{os.sep}orbax{os.sep}' in code.co_filename
  )


def quiet_event_loops() -> None:
  """New event loops (orbax makes one per call) tolerate tensorstore's late callbacks, and the
  read coroutines a failed restore abandons close silently."""
  with _lock:
    if _installed['loop']:
      return
    policy = asyncio.get_event_loop_policy()
    if type(policy) is asyncio.DefaultEventLoopPolicy:  # leave a custom policy (uvloop) alone
      asyncio.set_event_loop_policy(_Policy())
    previous = sys.unraisablehook

    def hook(unraisable):
      if not _is_abandoned_orbax_read(unraisable):
        previous(unraisable)

    sys.unraisablehook = hook
    _installed['loop'] = True


def after_failure() -> None:
  """Called once an orbax read or write failed: the coroutines it created and then abandoned
  (never scheduled) may be collected later, each with a "coroutine ... was never awaited"
  RuntimeWarning; those are expected now and hidden."""
  warnings.filterwarnings(
    'ignore', message="coroutine '.*' was never awaited", category=RuntimeWarning
  )


def quiet_logs() -> None:
  """Hides orbax's INFO lines and logged tracebacks from the absl log; its warnings stay."""
  with _lock:
    if _installed['logs']:
      return
    logging.get_absl_handler().addFilter(_OrbaxLogFilter())
    py_logging.getLogger('absl').addFilter(_OrbaxLogFilter())
    _installed['logs'] = True


def install() -> None:
  """Both of the above (idempotent)."""
  quiet_event_loops()
  quiet_logs()
