"""Damaged checkpoints: telling them from mismatched ones, saying why in one line, moving aside.

A finished orbax step directory can still be damaged afterwards (a disk error, a copy that stopped
half way). A restore into the shapes of the config then fails, and so does restoring into the
checkpoint's own shapes (`verify_step`); a checkpoint that restores into its own shapes but not
into the config's is intact and mismatched (`TrainStateMismatchError`), which is the user's
config to fix, never a reason to move a checkpoint. Damaged steps are renamed, never deleted:
`checkpoints/1080` -> `checkpoints/1080.corrupt` (orbax lists numbered directories only).
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Sequence

import numpy as np

from cost_jax import storage
from cost_jax.checkpoints import orbax_quiet
from cost_jax.checkpoints.disk_space import exception_chain

STATE = 'state'
META = 'meta'
CORRUPT_SUFFIX = '.corrupt'
_MAX_REASON = 300
# JSON files every restore reads (relative to the step directory). A restore into the config's
# shapes does not need _sharding, _CHECKPOINT_METADATA or commit_success.txt.
_REQUIRED_JSON = (f'{STATE}/_METADATA', f'{META}/metadata')
_OPTIONAL_JSON_DIRS = (f'{STATE}/array_metadatas',)
# Orbax's mark of a finished step on a bucket, where it cannot rename a temporary directory.
COMMIT_SUCCESS = 'commit_success.txt'
_WRAPPERS = ('Encountered error while reading array index',)


class CheckpointDamagedError(ValueError):
  """A checkpoint that cannot be read; names it, the reason and the intact steps."""


class NoIntactCheckpointError(CheckpointDamagedError):
  """Every checkpoint of a run is damaged; nothing was moved."""


class TrainStateMismatchError(ValueError):
  """An intact checkpoint that does not fit the config (another model or optimiser)."""


def short_reason(error: BaseException, step_dir: str | None = None) -> str:
  """One line saying why `error` happened, without tensorstore specs or wrapper text."""
  chosen = error
  for e in exception_chain(error):
    chosen = e
    if not str(e).startswith(_WRAPPERS):
      break
  text = str(chosen).split(' [tensorstore_spec', 1)[0]
  text = re.sub(r'Error opening "\w+" driver: ', '', text)
  if step_dir:
    text = text.replace(storage.absolute(step_dir).rstrip('/') + '/', '')
  text = ' '.join(text.split())
  if isinstance(chosen, json.JSONDecodeError):
    text = f'not valid JSON ({text})'
  elif isinstance(chosen, FileNotFoundError) and not text:
    text = f'missing file {chosen.filename}'
  if not text:
    text = type(chosen).__name__
  return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + '...'


def _json_problem(step_dir: str) -> str | None:
  files = list(_REQUIRED_JSON)
  for folder in _OPTIONAL_JSON_DIRS:
    files += [f'{folder}/{name}' for name in storage.listdir(storage.join(step_dir, folder))]
  for rel in files:
    file = storage.join(step_dir, rel)
    if not storage.isfile(file):
      return f'{rel} is missing'
    try:
      json.loads(storage.read_bytes(file).decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
      return f'{rel} is not valid JSON ({" ".join(str(e).split())})'
  return None


def verify_step(step_dir: str) -> str | None:
  """None if `step_dir` restores completely into its own shapes (arrays and JSON record), else
  why not. Reads every array (on the host, as numpy)."""
  import jax  # here: cli.user_errors imports this module
  import orbax.checkpoint as ocp
  from etils import epath

  orbax_quiet.quiet_event_loops()
  if not storage.isdir(storage.join(step_dir, STATE)):
    return f'{STATE}/ is missing'
  problem = _json_problem(step_dir)
  if problem:
    return problem
  state_dir = storage.join(step_dir, STATE)
  try:
    # The handler's metadata raises where the checkpointer's would log and return None.
    tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(state_dir)).tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    with ocp.PyTreeCheckpointer() as checkpointer:
      checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  except Exception as e:
    orbax_quiet.after_failure()
    return short_reason(e, step_dir)
  return None


def finished_steps(directory: str) -> list[int]:
  """The numbered (finished) step directories of a checkpoints directory, newest first (on a
  bucket, those orbax marked finished with `commit_success.txt`)."""
  remote = storage.is_remote(directory)
  steps = [
    int(name)
    for name in storage.listdir(directory)
    if name.isdigit()
    and storage.isdir(storage.join(directory, name))
    and (not remote or storage.exists(storage.join(directory, name, COMMIT_SUCCESS)))
  ]
  return sorted(steps, reverse=True)


def intact_steps(directory: str, exclude: Iterable[int] = ()) -> list[int]:
  """The steps of `directory` that `verify_step` accepts, newest first."""
  skip = set(exclude)
  return [
    s
    for s in finished_steps(directory)
    if s not in skip and verify_step(storage.join(directory, str(s))) is None
  ]


def describe_steps(steps: Sequence[int]) -> str:
  return ', '.join(str(s) for s in steps) if steps else 'none'


def damaged_error(step_dir: str, reason: str) -> CheckpointDamagedError:
  """The error for a damaged `step_dir`, listing the intact steps next to it."""
  step_dir = storage.absolute(step_dir)
  directory, name = storage.dirname(step_dir), storage.basename(step_dir)
  exclude = [int(name)] if name.isdigit() else []
  intact = intact_steps(directory, exclude)
  hint = (
    f'; pass {storage.join(directory, str(intact[0]))} to use the newest intact one'
    if intact
    else ''
  )
  return CheckpointDamagedError(
    f'checkpoint {step_dir} is damaged: {reason}. Intact steps in {directory}: '
    f'{describe_steps(intact)}{hint}'
  )


def move_aside(step_dir: str) -> str:
  """Renames a damaged step directory to `<step>.corrupt` (`.corrupt.1`, ... if taken); on a
  bucket its objects are copied there, then deleted (`storage.move`)."""
  step_dir = storage.absolute(step_dir)
  target = step_dir + CORRUPT_SUFFIX
  n = 0
  while storage.exists(target):
    n += 1
    target = f'{step_dir}{CORRUPT_SUFFIX}.{n}'
  storage.move(step_dir, target)
  return target
