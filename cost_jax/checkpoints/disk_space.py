"""A full disk while writing checkpoints, as one line: which path, how much space it needed.

Saves are asynchronous, so `ENOSPC` reaches us late and in several shapes: an `OSError` from a
Python write (orbax's metadata and commit files), or a tensorstore `ValueError` such as
``RESOURCE_EXHAUSTED: ... Failed writing: "<file>": ... No space left on device
[os_error_code='28']`` from the array data. `disk_full_error` recognises both.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from typing import Iterator

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = re.compile(
  r'No space left on device|Disk quota exceeded|'
  rf"os_error_code='({errno.ENOSPC}|{errno.EDQUOT})'"
)
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


class DiskFullError(OSError):
  """No space left for a checkpoint: the message names the path and the space it needs."""

  def __init__(self, message: str):
    super().__init__(message)
    self.errno = errno.ENOSPC  # str() stays the message alone


def exception_chain(error: BaseException) -> Iterator[BaseException]:
  """`error`, then its causes and contexts (each once)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or what caused it) is ENOSPC / EDQUOT."""
  for e in exception_chain(error):
    if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
      return True
    if _FULL_TEXT.search(str(e)):
      return True
  return False


def failed_path(error: BaseException) -> str | None:
  """The file whose write failed, where the error says so (tensorstore names the database,
  then the file: the last absolute path quoted)."""
  for e in exception_chain(error):
    if isinstance(e, OSError) and e.filename:
      return os.fspath(e.filename)
    paths = _QUOTED_PATH.findall(str(e).split(' [tensorstore_spec', 1)[0])
    if paths:
      return paths[-1]
  return None


def directory_bytes(path: str) -> int:
  """Bytes of the files under `path` (0 if it does not exist)."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.lstat(os.path.join(root, name)).st_size
      except OSError:
        pass
  return total


def free_bytes(path: str) -> int | None:
  """Free bytes on the filesystem of `path` (or of its nearest existing parent)."""
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def human(num_bytes: int | None) -> str:
  """1536 -> '1.5 KiB'."""
  if num_bytes is None:
    return 'an unknown amount'
  value = float(num_bytes)
  for unit in ('bytes', 'KiB', 'MiB', 'GiB', 'TiB'):
    if value < 1024 or unit == 'TiB':
      return f'{int(value)} bytes' if unit == 'bytes' else f'{value:.1f} {unit}'
    value /= 1024
  return f'{value:.1f} TiB'


def disk_full_error(
  error: BaseException, target: str, needed: int | None, what: str = 'checkpoint'
) -> DiskFullError | None:
  """A `DiskFullError` for `error` if it is ENOSPC (else None).

  `target`: what was being written (a checkpoint step directory); `needed`: about how many bytes
  it takes (e.g. the size of the previous checkpoint).
  """
  if not is_disk_full(error):
    return None
  file = failed_path(error)
  at = f' (writing {file} failed)' if file else ''
  return DiskFullError(
    f'no space left on device for {what} {target}{at}: it needs about {human(needed)}, '
    f'{human(free_bytes(target))} is free there; free some space and run the same command '
    'again to continue'
  )
