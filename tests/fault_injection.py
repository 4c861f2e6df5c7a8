"""`python -m cost_jax.main` with one fault injected at a chosen moment of a checkpoint save.

  COST_JAX_FAULT=<spec> python -m tests.fault_injection --config=... --workdir=...

Specs (tests only; the package never reads this variable):

  kill:<point>:<step>             SIGKILL at <point> of the save of <step>
  enospc:<point>:<step>           an OSError(ENOSPC) there instead of the write
  fill:<point>:<step>:<file>      fills the filesystem of <file> (a ballast file) there, so that
                                  the writes that follow fail with the real ENOSPC
  slow:<seconds>                  every orbax directory/metadata operation of every save sleeps
                                  that long first (widens the windows for kills from outside)

Points of a save: 'tmp' (its temporary directory is being created), 'arrays' (the arrays are
written, the pytree metadata is next), 'rename' (complete, before the rename that finishes it),
'renamed' (just finished, before older steps are deleted), 'delete' (half way through deleting an
older step after it).
"""

from __future__ import annotations

import asyncio
import errno
import os
import runpy
import signal
import sys

from orbax.checkpoint._src.path import async_path, deleter

FAULT_ENV = 'COST_JAX_FAULT'
TMP_SUFFIX = '.orbax-checkpoint-tmp'


def fill_filesystem(ballast: str) -> None:
  """Appends to `ballast` until its filesystem has no space left."""
  chunk = b'\0' * (1 << 16)
  with open(ballast, 'ab') as f:
    try:
      while True:
        f.write(chunk)
        f.flush()
    except OSError as e:
      if e.errno != errno.ENOSPC:
        raise
  # Small writes may still fit in the last partial page: fill those too.
  with open(ballast, 'ab', buffering=0) as f:
    try:
      while True:
        f.write(b'\0')
    except OSError as e:
      if e.errno != errno.ENOSPC:
        raise


class _Fault:
  """Acts once, at `point` of the save of `step`."""

  def __init__(self, spec: str):
    parts = spec.split(':')
    self.kind = parts[0]
    self.seconds = float(parts[1]) if self.kind == 'slow' else 0.0
    self.point = parts[1] if self.kind != 'slow' else None
    self.step = int(parts[2]) if self.kind != 'slow' else None
    self.ballast = parts[3] if self.kind == 'fill' else None
    self.done = False
    self.renamed_step = None

  def at(self, point: str, step: int | None, path: str) -> None:
    """Called at `point` of the save of `step` (about to touch `path`)."""
    if self.done or point != self.point or step != self.step:
      return
    self.done = True
    sys.stderr.write(f'[fault_injection] {self.kind} at {point} of step {step} ({path})\n')
    sys.stderr.flush()
    if self.kind == 'kill':
      os.kill(os.getpid(), signal.SIGKILL)
    elif self.kind == 'enospc':
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    elif self.kind == 'fill':
      fill_filesystem(self.ballast)


def _tmp_step(path) -> int | None:
  """The step whose temporary directory holds `path`."""
  for part in str(path).split(os.sep):
    name = part.split(TMP_SUFFIX)[0]
    if TMP_SUFFIX in part and name.isdigit():
      return int(name)
  return None


def install(spec: str) -> None:
  """Wraps orbax's directory/metadata operations with the fault of `spec`."""
  fault = _Fault(spec)
  mkdir, write_text, rename = async_path.mkdir, async_path.write_text, async_path.rename
  delete = deleter.PathDeleter.delete

  async def slow():
    if fault.seconds:
      await asyncio.sleep(fault.seconds)

  async def mkdir_hook(path, *args, **kwargs):
    await slow()
    name = os.path.basename(str(path))
    step = int(name.split(TMP_SUFFIX)[0]) if name.split(TMP_SUFFIX)[0].isdigit() else None
    if TMP_SUFFIX in name and step is not None:
      if fault.kind == 'kill':
        result = await mkdir(path, *args, **kwargs)
        fault.at('tmp', step, path)
        return result
      fault.at('tmp', step, path)
    return await mkdir(path, *args, **kwargs)

  async def write_text_hook(path, text):
    await slow()
    if os.path.basename(str(path)) == '_METADATA':
      fault.at('arrays', _tmp_step(path), path)
    return await write_text(path, text)

  async def rename_hook(src, dst):
    await slow()
    name = os.path.basename(str(dst))
    step = int(name) if name.isdigit() and TMP_SUFFIX in os.path.basename(str(src)) else None
    if step is not None:
      fault.at('rename', step, dst)
    result = await rename(src, dst)
    if step is not None:
      fault.renamed_step = step
      fault.at('renamed', step, dst)
    return result

  def delete_hook(self, path, **kwargs):
    if fault.kind == 'kill' and fault.point == 'delete' and fault.renamed_step == fault.step:
      files = sorted(os.path.join(root, f) for root, _, names in os.walk(str(path)) for f in names)
      for file in files[: len(files) // 2]:
        os.unlink(file)
      fault.at('delete', fault.step, path)
    return delete(self, path, **kwargs)

  async_path.mkdir, async_path.write_text, async_path.rename = (
    mkdir_hook,
    write_text_hook,
    rename_hook,
  )
  deleter.PathDeleter.delete = delete_hook


if __name__ == '__main__':
  install(os.environ.get(FAULT_ENV, 'none:none:-1'))
  runpy.run_module('cost_jax.main', run_name='__main__', alter_sys=True)
