"""Fault injection on the tiny model: kills during checkpoint saves, damaged checkpoints, full
disks. Every trial asserts that nothing was lost: the checkpoints left are intact and equal to
those of an uninterrupted run, a resumed run ends bit-identical to it, a damaged checkpoint is kept
aside, and a failing command says why in one line. The figures (trials, and trials that lost
anything, per kind) are printed and given as a `FaultTrialFigures` warning in the test summary.

Default (about a minute): one trial of each kind in one run (disk full, a damaged checkpoint
tested and then skipped by the resume, a kill inside a save, the run finished), and a sample of
damaged-file trials. `COST_JAX_FAULT_TRIALS=full` adds: 10 kills (5 at fixed moments inside saves
through hooks, 5 at random moments with slowed saves), each file of the latest checkpoint truncated,
zeroed and deleted in turn, and full disks at 6 moments.

The full disk is a tmpfs of 64 MiB where it can be mounted (root), filled up by a ballast file at
the chosen moment; elsewhere a hook raises ENOSPC there (see tests/fault_injection.py).
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest

from cost_jax.checkpoints import integrity, saving
from cost_jax.inference import loading
from cost_jax.models import create_model
from cost_jax.training import loop, optim, sharding
from tests import train_testlib, trees, zygote
from tests.fault_injection import FAULT_ENV, TMP_SUFFIX

FULL = os.environ.get('COST_JAX_FAULT_TRIALS', '') == 'full'
TOTAL_STEPS = 12 if FULL else 6  # epochs of 2 steps, a checkpoint after every step
KEEP = 2
NOISE = (
  'Traceback',
  'Event loop is closed',
  'tensorstore_spec',
  'exception was never retrieved',
  'was never awaited',
)
FIGURES: dict[str, dict] = collections.defaultdict(
  lambda: {'trials': 0, 'lost': 0, 'outcomes': collections.Counter()}
)


class FaultTrialFigures(UserWarning):
  """The figures of the fault trials (a warning, so that they show in the test summary)."""


def _record(kind: str, outcome: str, problems: list[str]) -> list[str]:
  figures = FIGURES[kind]
  figures['trials'] += 1
  figures['lost'] += bool(problems)
  figures['outcomes'][outcome] += 1
  return [f'{kind} / {outcome}: {p}' for p in problems]


@pytest.fixture(scope='module', autouse=True)
def _figures():
  FIGURES.clear()
  start = time.monotonic()
  yield
  lines = [
    f'{kind}: {f["trials"]} trials, {f["lost"]} lost anything '
    f'({", ".join(f"{n} {o}" for o, n in sorted(f["outcomes"].items()))})'
    for kind, f in sorted(FIGURES.items())
  ]
  if lines:
    text = (
      f'fault trials ({"full" if FULL else "default"}, '
      f'{time.monotonic() - start:.0f} s): ' + '; '.join(lines)
    )
    print('\n' + text)
    warnings.warn(text, FaultTrialFigures, stacklevel=1)


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope='module')
def run_files(tmp_path_factory):
  """The tiny dataset, the run's config (keeps 2) and the reference's (keeps every step)."""
  root = tmp_path_factory.mktemp('faults')
  data_dir = str(root / 'data')
  train_testlib.write_tiny_dataset(data_dir)
  common = dict(
    num_epochs=TOTAL_STEPS // 2, checkpoint_every_steps=1, eval_every_epochs=TOTAL_STEPS
  )
  return {
    'root': root,
    'data_dir': data_dir,
    'config': train_testlib.write_config_file(
      str(root / 'config.py'), data_dir, keep_checkpoints=KEEP, **common
    ),
    'reference_config': train_testlib.write_config_file(
      str(root / 'reference.py'), data_dir, keep_checkpoints=TOTAL_STEPS, **common
    ),
  }


class _Reference:
  """The uninterrupted run (every checkpoint kept), started in the background."""

  def __init__(self, files):
    self.workdir = str(files['root'] / 'reference')
    self.log = open(files['root'] / 'reference.log', 'w')
    self.proc = zygote.Popen(
      train_testlib.main_command(files['reference_config'], self.workdir),
      cwd=train_testlib.REPO,
      env=train_testlib.env(),
      stdout=self.log,
      stderr=subprocess.STDOUT,
    )
    self._states = {}

  def state(self, step: int):
    if self.proc.returncode is None:
      assert self.proc.wait(timeout=600) == 0, open(self.log.name).read()[-3000:]
      self.log.close()
    if step not in self._states:
      self._states[step] = train_testlib.load_state(self.workdir, step)
    return self._states[step]


@pytest.fixture(scope='module')
def reference(run_files):
  ref = _Reference(run_files)
  yield ref
  if ref.proc.poll() is None:
    ref.proc.kill()
    ref.proc.wait()


@pytest.fixture(scope='module')
def disk(tmp_path_factory):
  """{'root', 'tmpfs'}: a 64 MiB tmpfs where the machine lets us mount one, else a plain dir."""
  root = str(tmp_path_factory.mktemp('disk'))
  try:
    mounted = (
      subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', root], capture_output=True, timeout=30
      ).returncode
      == 0
    )
  except (OSError, subprocess.SubprocessError):
    mounted = False
  yield {'root': root, 'tmpfs': mounted}
  if mounted:
    subprocess.run(['umount', root], capture_output=True, timeout=60)


def _run(
  config: str, workdir: str, *flags: str, fault: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
  env = train_testlib.env()
  module = 'cost_jax.main'
  if fault:
    env[FAULT_ENV], module = fault, 'tests.fault_injection'
  cmd = [sys.executable, '-m', module, f'--config={config}', f'--workdir={workdir}', *flags]
  start = time.monotonic()
  proc = zygote.run(cmd, cwd=train_testlib.REPO, env=env, timeout=timeout)
  print(
    f'{time.monotonic() - start:5.1f} s  exit {proc.returncode}  {" ".join(flags)} {fault or ""}'
  )
  return proc


def _finished(workdir: str) -> list[int]:
  return sorted(integrity.finished_steps(os.path.join(workdir, 'checkpoints')))


def _equal(a, b) -> bool:
  return trees.same_structure(a, b) and all(
    np.array_equal(x, y) for _, x, y in trees.leaf_pairs(a, b)
  )


def _kept_steps_match(workdir: str, reference: _Reference, previous_newest: int) -> list[str]:
  """The newest KEEP finished steps are intact and equal to the reference's; nothing older than
  the newest finished step before the fault became the newest (older steps past KEEP may be
  half deleted: removing them is what the run was doing)."""
  steps = _finished(workdir)
  problems = []
  if (steps[-1] if steps else 0) < previous_newest:
    problems.append(f'newest checkpoint went back from {previous_newest} to {steps}')
  for step in steps[-KEEP:]:
    try:
      same = _equal(train_testlib.load_state(workdir, step), reference.state(step))
    except Exception as e:
      problems.append(f'checkpoint {step} cannot be read: {integrity.short_reason(e)}')
      continue
    if not same:
      problems.append(f'checkpoint {step} differs from the uninterrupted run')
  return problems


def _one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> list[str]:
  """Exit status 2, stderr ending in one `error: ...` line holding `expected`, and no noise."""
  problems = [f'{marker!r} in stderr' for marker in NOISE if marker in proc.stderr]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith('error: ')]
  if proc.returncode != 2 or len(errors) != 1 or lines[-1] != errors[0]:
    problems.append(f'expected one error line and exit 2, got {proc.returncode}: {lines[-3:]}')
  problems += [
    f'{text!r} not in {errors}' for text in expected if not errors or text not in errors[0]
  ]
  return problems


def _finish_and_compare(config: str, workdir: str, reference: _Reference) -> list[str]:
  proc = _run(config, workdir)
  if proc.returncode != 0:
    return [f'the resumed run failed ({proc.returncode}): {proc.stderr[-2000:]}']
  problems = _kept_steps_match(workdir, reference, TOTAL_STEPS)
  if _finished(workdir)[-1] != TOTAL_STEPS:
    problems.append(f'run ended at {_finished(workdir)}')
  return problems


def _resumed_from(proc: subprocess.CompletedProcess) -> int | None:
  for line in proc.stderr.splitlines():
    if 'Resumed from step ' in line:
      return int(line.split('Resumed from step ')[1].split()[0])
  return None


def _disk_full_trial(
  config, workdir, disk, point: str, step: int, reference, real: bool = True
) -> tuple[str, list[str]]:
  """A save of `step` runs out of space at `point` (the tmpfs filled up if `real` and there is
  one, else an injected ENOSPC): one line naming the checkpoint and the space it needs, exit 2;
  what was finished stays; then space is freed."""
  newest = (_finished(workdir) or [0])[-1]
  ballast = os.path.join(disk['root'], 'ballast')
  real = real and disk['tmpfs']
  fault = f'fill:{point}:{step}:{ballast}' if real else f'enospc:{point}:{step}'
  proc = _run(config, workdir, fault=fault)
  problems = _one_line_error(
    proc,
    f'no space left on device for checkpoint {os.path.join(workdir, "checkpoints", str(step))}',
    'needs about',
  )
  problems += _kept_steps_match(workdir, reference, newest)
  if os.path.exists(ballast):
    os.remove(ballast)  # the user frees space
  return ('tmpfs filled' if real else 'ENOSPC hook') + f' at {point}', problems


def _damage(path: str, kind: str) -> None:
  size = os.path.getsize(path)
  if kind == 'truncate':
    os.truncate(path, size // 2)
  elif kind == 'zero':
    with open(path, 'r+b') as f:
      f.write(b'\0' * size)
  else:
    os.remove(path)


def _largest_file(step_dir: str) -> str:
  files = [os.path.join(r, f) for r, _, names in os.walk(step_dir) for f in names]
  return max(files, key=os.path.getsize)


# ----------------------------------------------------------------------------- one of each


def test_disk_full_damage_and_kill_in_one_run(run_files, reference, disk):
  """Disk full at step 3; the latest checkpoint (2) then damaged: --mode=test names it in one
  line; the resume moves it aside and restarts from 1, is killed inside the save of step 5 (its
  temporary directory complete, not yet renamed); the last resume ends as the uninterrupted run."""
  config, workdir = run_files['config'], os.path.join(disk['root'], 'chain')
  checkpoints = os.path.join(workdir, 'checkpoints')
  problems = []

  outcome, found = _disk_full_trial(config, workdir, disk, 'arrays', 3, reference)
  problems += _record('disk full', outcome, found)
  assert _finished(workdir) == [1, 2], (_finished(workdir), problems)

  damaged = os.path.join(checkpoints, '2', 'state', 'manifest.ocdbt')  # every read needs it
  _damage(damaged, 'truncate')
  damaged_bytes = _read(damaged)
  proc = _run(config, workdir, '--mode=test')
  found = _one_line_error(
    proc, f'checkpoint {checkpoints}/2 is damaged', f'Intact steps in {checkpoints}: 1'
  )

  proc = _run(config, workdir, fault='kill:rename:5')
  found += [f'{marker!r} in the log of the resume' for marker in NOISE if marker in proc.stderr]
  if proc.returncode != -signal.SIGKILL:
    found.append(f'the kill hook did not fire ({proc.returncode}): {proc.stderr[-2000:]}')
  moved = os.path.join(checkpoints, '2' + integrity.CORRUPT_SUFFIX)
  if f'Checkpoint {checkpoints}/2 is damaged' not in proc.stderr or _resumed_from(proc) != 1:
    found.append('the resume did not report checkpoint 2 as damaged and restart from 1')
  kept = os.path.join(moved, os.path.relpath(damaged, os.path.join(checkpoints, '2')))
  if not os.path.isfile(kept) or _read(kept) != damaged_bytes:
    found.append(f'the damaged checkpoint was not kept as it was in {moved}')
  problems += _record('damaged checkpoint', 'moved aside (end to end)', found)

  found = (
    []
    if os.path.isdir(os.path.join(checkpoints, '5' + TMP_SUFFIX))
    else ['no temporary directory of step 5 was left: the kill missed the save']
  )
  found += _kept_steps_match(workdir, reference, 1)
  found += _finish_and_compare(config, workdir, reference)
  problems += _record('kill', 'inside a save (before its rename)', found)
  assert not problems, problems


# ----------------------------------------------------------------------------- damaged files


def _template(config):
  model = create_model(config.model)
  schedule = optim.create_learning_rate_schedule(
    config.optimizer, global_batch_size=config.batch_size, steps_per_epoch=2
  )
  tx = optim.create_optimizer(config.optimizer, schedule, config.model.frozen_stages)
  return loop._abstract_state(config, model, tx, sharding.create_mesh())


@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory):
  """Checkpoints 1 and 2 of the tiny model's TrainState (random values, the trainer's layout,
  step 2 the best by val top-1), the states saved, the template and the model config."""
  config = train_testlib.tiny_config('unused')
  template = _template(config)
  directory = str(tmp_path_factory.mktemp('two') / 'checkpoints')
  manager = saving.create_manager(directory, keep=KEEP, async_save=False)
  rng = np.random.default_rng(0)
  states = {}
  for step in (1, 2):
    states[step] = jax.tree.map(
      lambda s: jax.device_put(rng.standard_normal(s.shape).astype(s.dtype), s.sharding), template
    )
    meta = {'step': step, 'batch_size': 4, 'best': {'val_top1': 0.5, 'step': 2}}
    saving.save(manager, states[step], meta, metrics={'val_top1': 0.25 * step})
  saving.finish(manager)
  return {
    'directory': directory,
    'states': states,
    'template': template,
    'model_config': config.model,
  }


def _read(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def _files(step_dir: str) -> dict[str, bytes]:
  return {
    os.path.relpath(os.path.join(r, f), step_dir): _read(os.path.join(r, f))
    for r, _, names in os.walk(step_dir)
    for f in names
  }


def _damage_trial(two, root: str, rel: str, kind: str) -> tuple[str, list[str]]:
  """Damages file `rel` of checkpoint 2 (in a copy); the test protocol's loader either reads the
  step intact or names it in one line with the intact step 1; the resume either restores step 2
  intact or moves it aside (kept byte for byte) and restores step 1."""
  workdir = os.path.join(root, f'{kind}-{rel.replace(os.sep, "_")}')
  checkpoints = os.path.join(workdir, 'checkpoints')
  shutil.copytree(two['directory'], checkpoints)
  _damage(os.path.join(checkpoints, '2', rel), kind)
  before = {step: _files(os.path.join(checkpoints, str(step))) for step in (1, 2)}
  states, problems = two['states'], []

  try:  # --mode=test / predict / analyze / export
    step_dir, _ = loading.select_step_directory(workdir)
    variables = loading.restore_train_state_variables(step_dir, two['model_config'])
    expected = states[int(os.path.basename(step_dir))]
    if not _equal(variables, {'params': expected.params, 'batch_stats': expected.batch_stats}):
      problems.append(f'the loader returned wrong variables from {step_dir}')
    loader = 'read'
  except integrity.CheckpointDamagedError as e:
    loader = 'named it'
    text = str(e)
    if (
      f'checkpoint {checkpoints}/2 is damaged' not in text
      or '\n' in text
      or f'Intact steps in {checkpoints}: 1;' not in text
    ):
      problems.append(f'unexpected message: {text}')
  except Exception as e:
    loader = 'failed'
    problems.append(f'the loader raised {type(e).__name__}: {integrity.short_reason(e)}')

  try:  # the trainer's resume
    state, meta = saving.restore_newest_intact(checkpoints, two['template'])
  except Exception as e:
    problems.append(f'the resume raised {type(e).__name__}: {integrity.short_reason(e)}')
    return f'loader {loader}, resume failed', problems
  step = int(meta['step'])
  if not _equal(state, states[step]):
    problems.append(f'the resume restored wrong values for step {step}')
  moved = os.path.join(checkpoints, '2' + integrity.CORRUPT_SUFFIX)
  kept = {
    1: os.path.join(checkpoints, '1'),
    2: moved if step == 1 else os.path.join(checkpoints, '2'),
  }
  if step == 1 and os.path.exists(os.path.join(checkpoints, '2')):
    problems.append('the damaged checkpoint 2 is still in place')
  for s, path in kept.items():
    if not os.path.isdir(path) or _files(path) != before[s]:
      problems.append(f'checkpoint {s} was not kept unchanged in {path}')
  return f'loader {loader}, resume {"moved it aside" if step == 1 else "read it"}', problems


def _all_files(step_dir: str) -> list[str]:
  return sorted(
    os.path.relpath(os.path.join(r, f), step_dir)
    for r, _, names in os.walk(step_dir)
    for f in names
  )


def test_damaged_checkpoint_files(two_checkpoints, tmp_path):
  """Files of the latest checkpoint truncated, zeroed or deleted (all of them, in turn, with
  COST_JAX_FAULT_TRIALS=full; else the array data, the pytree metadata and the record)."""
  files = _all_files(os.path.join(two_checkpoints['directory'], '2'))
  if FULL:
    trials = [(rel, kind) for rel in files for kind in ('truncate', 'zero', 'delete')]
  else:
    data = os.path.relpath(
      _largest_file(os.path.join(two_checkpoints['directory'], '2')),
      os.path.join(two_checkpoints['directory'], '2'),
    )
    trials = [
      (data, 'truncate'),
      ('state/_METADATA', 'zero'),
      ('meta/metadata', 'delete'),
      ('_CHECKPOINT_METADATA', 'zero'),
    ]
  problems = []
  for rel, kind in trials:
    if (
      kind != 'delete'
      and os.path.getsize(os.path.join(two_checkpoints['directory'], '2', rel)) == 0
    ):
      continue  # nothing to truncate or zero
    outcome, found = _damage_trial(two_checkpoints, str(tmp_path), rel, kind)
    problems += _record('damaged checkpoint', outcome, [f'{kind} {rel}: {p}' for p in found])
  assert not problems, problems


def test_every_checkpoint_damaged_or_mismatched_moves_nothing(two_checkpoints, tmp_path):
  checkpoints = str(tmp_path / 'checkpoints')
  shutil.copytree(two_checkpoints['directory'], checkpoints)
  # Intact, but another model (more classes): the config's problem, never the checkpoint's.
  other = train_testlib.tiny_config('unused')
  other.model.num_classes = 5
  with pytest.raises(integrity.TrainStateMismatchError, match='intact but does not fit'):
    saving.restore_newest_intact(checkpoints, _template(other))
  for step in (1, 2):
    _damage(os.path.join(checkpoints, str(step), 'state', 'manifest.ocdbt'), 'delete')
  with pytest.raises(integrity.NoIntactCheckpointError) as error:
    saving.restore_newest_intact(checkpoints, two_checkpoints['template'])
  assert '\n' not in str(error.value) and '2: ' in str(error.value) and '1: ' in str(error.value)
  assert sorted(os.listdir(checkpoints)) == ['1', '2']


def test_best_checkpoint_outlives_a_restart(tmp_path):
  """The best step by val top-1 is preserved by the record saved with every checkpoint, also by
  the manager of a resumed process (orbax's BestN forgets the metrics of earlier processes)."""
  directory = str(tmp_path / 'checkpoints')
  state = {'w': np.zeros(3, np.float32)}
  best = {'val_top1': 0.9, 'step': 1}
  for steps in ((1, 2), (3, 4, 5)):  # two processes
    manager = saving.create_manager(directory, keep=1, async_save=False)
    for step in steps:
      saving.save(
        manager,
        state,
        {'step': step, 'best': best},
        metrics={'val_top1': 0.9 if step == 1 else 0.1},
      )
    saving.finish(manager)
  assert integrity.finished_steps(directory) == [5, 1]


# ----------------------------------------------------------------------------- full trials


def _wait_started(proc, log_path: str, timeout: float = 300) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    with open(log_path, errors='replace') as f:
      if 'train/loss' in f.read():
        return
    time.sleep(0.05)


@pytest.mark.skipif(not FULL, reason='COST_JAX_FAULT_TRIALS=full')
def test_kills_at_random_and_inside_saves(run_files, reference, tmp_path):
  """10 SIGKILLs: 5 by hooks at fixed moments of saves, 5 from outside at random moments of runs
  whose saves are slowed down (0.2 s per orbax file operation). After each: the kept checkpoints
  equal the uninterrupted run's; each chain of resumes ends bit-identical to it."""
  config, rng = run_files['config'], random.Random()
  hooks = ['kill:tmp', 'kill:arrays', 'kill:rename', 'kill:renamed', 'kill:delete']
  plan = hooks + ['random'] * 5
  rng.shuffle(plan)
  problems, chain, workdir = [], 0, None
  for number, trial in enumerate(plan):
    newest = (_finished(workdir) or [0])[-1] if workdir else TOTAL_STEPS
    if newest > TOTAL_STEPS - 5:  # too close to the end: finish, start another run
      if workdir:
        problems += _record(
          'kill: resumed to the end',
          f'chain {chain}',
          _finish_and_compare(config, workdir, reference),
        )
      chain += 1
      workdir, newest = str(tmp_path / f'chain{chain}'), 0
    if trial == 'random':
      log_path = str(tmp_path / f'random{number}.log')
      with open(log_path, 'w') as log:
        env = dict(train_testlib.env(), **{FAULT_ENV: 'slow:0.2'})
        proc = zygote.Popen(
          [
            sys.executable,
            '-m',
            'tests.fault_injection',
            f'--config={config}',
            f'--workdir={workdir}',
          ],
          cwd=train_testlib.REPO,
          env=env,
          stdout=log,
          stderr=subprocess.STDOUT,
        )
        _wait_started(proc, log_path)
        time.sleep(rng.uniform(0.0, 4.0))
        inside = any(TMP_SUFFIX in n for n in os.listdir(os.path.join(workdir, 'checkpoints')))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
      outcome = 'at random, inside a save' if inside else 'at random, between saves'
      found = [] if code == -signal.SIGKILL else [f'the run ended by itself ({code})']
      with open(log_path, errors='replace') as f:
        resumed = _resumed_from(subprocess.CompletedProcess([], code, '', f.read()))
      if newest and resumed != newest:
        found.append(f'resumed from {resumed}, not {newest}')
    else:
      step = newest + 3  # after a deletion of an older step
      proc = _run(config, workdir, fault=f'{trial}:{step}')
      outcome = f'inside a save ({trial.split(":")[1]})'
      found = (
        []
        if proc.returncode == -signal.SIGKILL
        else [f'{trial}:{step} did not fire ({proc.returncode}): {proc.stderr[-1500:]}']
      )
      if newest and _resumed_from(proc) != newest:
        found.append(f'resumed from {_resumed_from(proc)}, not {newest}')
    found += _kept_steps_match(workdir, reference, newest)
    problems += _record('kill', outcome, found)
  problems += _record(
    'kill: resumed to the end', f'chain {chain}', _finish_and_compare(config, workdir, reference)
  )
  assert not problems, problems


@pytest.mark.skipif(not FULL, reason='COST_JAX_FAULT_TRIALS=full')
def test_disk_full_at_several_moments(run_files, reference, disk):
  """Out of space at the first save, and inside later saves (making its temporary directory, or
  after the array data); each time the next run, after space was freed, continues; the end
  equals the uninterrupted run. The tmpfs where there is one, and the ENOSPC hook."""
  config, workdir = run_files['config'], os.path.join(disk['root'], 'several')
  problems = []
  for point, step, real in (
    ('arrays', 1, True),
    ('tmp', 2, False),
    ('tmp', 4, True),
    ('arrays', 6, False),
    ('arrays', 8, True),
    ('tmp', 10, True),
  ):
    outcome, found = _disk_full_trial(config, workdir, disk, point, step, reference, real)
    problems += _record('disk full', outcome, found)
  problems += _finish_and_compare(config, workdir, reference)
  assert not problems, problems
