"""Pod-scale behaviour with CPU processes on 127.0.0.1: 1 process x 8 devices against 4 processes
x 2 devices (`jax.distributed`, XLA's host devices).

Each host reads its own part of the split, so the data order depends on the topology; the update
of a given global batch, the bookkeeping and the test protocol must not:

* one update of the project's jitted train step on a fixed global batch (tests/pod_scale_step.py)
  gives the same loss, gradients and BatchNorm statistics on both (bounds in the test);
* over an epoch of the real input pipeline on 4 processes, every training video is read once;
* `--mode=test` gives the same per-video scores on both, with 7 videos on 4 hosts;
* a run resumes across topologies at the same global batch, saying that the data order changes,
  and a topology that cannot keep the global batch is one line, exit status 2;
* SIGKILL of one of 4 processes stops the others within a bounded time, naming it, and the run
  resumes from the newest checkpoint.

The training runs follow one another in one workdir (module fixtures): 1 x 8 trains an epoch;
4 x 2 resumes it and process 2 is killed mid-run; 1 x 8 resumes from the newest checkpoint the
killed run left, to a new end; both topologies test its last checkpoint. Each 4-process run traces
and compiles the model four times, so the module keeps them to three (step, kill, test).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import session_once, tfrecord_factory, train_testlib, zygote

NUM_TRAIN, NUM_VAL = 16, 7  # 7 test videos on 4 hosts: 2, 2, 2, 1 (one padded)
BATCH = 8
STEPS_PER_EPOCH = NUM_TRAIN // BATCH
HEARTBEAT_S = 10  # --heartbeat_timeout of the run that loses a process
STOP_BOUND_S = HEARTBEAT_S + 20  # survivors must be gone this long after the kill
RUN_TIMEOUT_S = 900
ONE, FOUR = (1, 8), (4, 2)  # (processes, devices per process)


@dataclasses.dataclass
class Pod:
  data_dir: str
  config: str
  workdir: str
  logs: str


@pytest.fixture(scope='module')
def pod(tmp_path_factory) -> Pod:
  session_once.claim(tmp_path_factory, 'test_pod_scale.pod')
  root = tmp_path_factory.mktemp('pod')
  data_dir = str(root / 'data')
  # Pattern frames carry their video's id (read back from decoded clips); shards of uneven
  # sizes, so that hosts' parts of the split straddle shard boundaries.
  for split, count, sizes in (('train', NUM_TRAIN, (5, 3, 6, 2)), ('val', NUM_VAL, (4, 3))):
    videos = [(tfrecord_factory.pattern_video(8, 32, 40, i), i % 4) for i in range(count)]
    tfrecord_factory.write_split(data_dir, split, videos, train_testlib.CLASSES, shard_sizes=sizes)
  config = train_testlib.write_config_file(
    str(root / 'config.py'),
    data_dir,
    batch_size=BATCH,
    eval_batch_size=BATCH,
    test_batch_size=BATCH,
    num_epochs=1,
    checkpoint_every_steps=1,
  )
  os.makedirs(root / 'logs')
  return Pod(data_dir, config, str(root / 'work'), str(root / 'logs'))


def _start(pod: Pod, name: str, cmd: list[str], topology: tuple[int, int]) -> list:
  """Starts `cmd` as processes x devices; returns [(Popen, log path)] by process index."""
  processes, devices = topology
  port = train_testlib.free_port()
  started = []
  for pid in range(processes):
    flags = []
    if processes > 1:
      flags = [
        f'--coordinator_address=127.0.0.1:{port}',
        f'--num_processes={processes}',
        f'--process_id={pid}',
      ]
    path = os.path.join(pod.logs, f'{name}{pid}.log')
    with open(path, 'w') as log:
      proc = zygote.Popen(
        cmd + flags,
        cwd=train_testlib.REPO,
        env=train_testlib.env(devices),
        stdout=log,
        stderr=subprocess.STDOUT,
      )
    started.append((proc, path))
  return started


def _wait(started: list, timeout: float = RUN_TIMEOUT_S) -> list[tuple[int, str]]:
  """(exit status, log) per process; kills what is left if one does not finish in time."""
  deadline = time.monotonic() + timeout
  try:
    for proc, _ in started:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
  finally:
    for proc, _ in started:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return [(proc.returncode, open(path).read()) for proc, path in started]


def _run(pod: Pod, name: str, topology: tuple[int, int], *flags: str) -> list[str]:
  """Runs cost_jax.main on `topology` to a successful end; returns the logs."""
  cmd = train_testlib.main_command(pod.config, pod.workdir, *flags)
  results = _wait(_start(pod, name, cmd, topology))
  for code, log in results:
    assert code == 0, f'{name}: exit {code}\n{log[-4000:]}'
  processes, devices = topology
  for pid, (_, log) in enumerate(results):
    assert f'JAX process {pid}/{processes}, {devices} local / 8 global devices' in log
  return [log for _, log in results]


def _describe(topology: tuple[int, int]) -> str:
  processes, devices = topology
  return f'{processes} process{"es" if processes > 1 else ""} x {devices} devices (8 devices)'


def _topology_note(saved: tuple[int, int], now: tuple[int, int]) -> str:
  return (
    f'Resuming a run saved on {_describe(saved)} on {_describe(now)}: the global batch ({BATCH}) '
    'and the update are the same, but the data order changes with the topology'
  )


def _resumed_from(log: str) -> int:
  return int(re.findall(r'Resumed from step (\d+)', log)[-1])


def _newest_meta(workdir: str) -> dict:
  step = train_testlib.checkpoint_steps(workdir)[-1]
  with open(os.path.join(workdir, 'checkpoints', str(step), 'meta', 'metadata')) as f:
    return json.load(f)


# -- 1 and 2: one update, and one epoch of reading, on 1 x 8 and 4 x 2 ---------------------------


@pytest.fixture(scope='module')
def step_outputs(pod) -> dict[tuple[int, int], str]:
  """tests/pod_scale_step.py run on 1 x 8 and on 4 x 2; their output directories."""
  outputs = {}
  for topology in (ONE, FOUR):
    out = os.path.join(pod.logs, f'step_{topology[0]}x{topology[1]}')
    os.makedirs(out)
    cmd = [
      sys.executable,
      '-m',
      'tests.pod_scale_step',
      f'--data_dir={pod.data_dir}',
      f'--out={out}',
    ]
    for code, log in _wait(_start(pod, f'step_{topology[0]}x{topology[1]}_', cmd, topology)):
      assert code == 0, log[-4000:]
    outputs[topology] = out
  return outputs


def _groups(path: str) -> dict[str, dict[str, np.ndarray]]:
  """step.npz split into its variants ('step', 'swapped', 'ulp'): {leaf path: array}."""
  out: dict[str, dict[str, np.ndarray]] = {}
  with np.load(path) as f:
    for key in f.files:
      variant, leaf = key.split('[', 1)
      out.setdefault(variant, {})['[' + leaf] = np.asarray(f[key], np.float64)
  return out


def _relative_l2(a: dict, b: dict, part: str) -> float:
  """|a - b| / |b| over every leaf whose path contains `part` (one vector)."""
  keys = [k for k in b if part in k]
  assert keys, part
  diff = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in keys)
  return float(np.sqrt(diff / sum(float(np.sum(b[k] ** 2)) for k in keys)))


def _worst_leaf(a: dict, b: dict, part: str) -> float:
  """The largest max|a - b| / max|b| over the leaves whose path contains `part`."""
  return max(
    float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b if part in k and b[k].size
  )


def test_one_update_is_the_same_on_1x8_and_4x2(step_outputs):
  """A global batch of 16 clips in 2 micro-batches, BatchNorm groups of 4 clips (on 4 x 2 each
  group spans 2 processes, so its statistics cross hosts through Gloo). The 8 devices run the
  same per-device program on both; only the cross-device sums run in another order. Bounds:

  * loss: relative 1e-5 (float32 rounding of the mean of 16 losses is ~1e-7);
  * BatchNorm running statistics (forward sums over clips and devices): relative 1e-4 per tensor;
  * gradients, i.e. the momentum trace after step 1 (clipped gradient + weight decay x the
    parameters, which are equal at step 0): this tiny random-init model is chaotic, its gradients
    move by ~1% (L2) when every parameter moves by one float32 step (the 'ulp' run). The
    topology may change them by at most 10x that response (and 0.05) in L2, and the global
    gradient norm by 1e-3 relative.

  Control: on 1 x 8, the same clips with two exchanged between BatchNorm groups (the mix-up a
  wrong row layout would cause) fail every one of these bounds by far.
  """
  one = _groups(os.path.join(step_outputs[ONE], 'step.npz'))
  four = _groups(os.path.join(step_outputs[FOUR], 'step.npz'))
  assert set(one) == {'step', 'swapped', 'ulp'} and set(four) == {'step'}
  ref, noise, swapped = one['step'], one['ulp'], one['swapped']
  ulp_response = _relative_l2(noise, ref, '.trace')
  assert ulp_response > 0
  grad_bound = min(10 * ulp_response, 0.05)

  def check(a: dict, b: dict, what: str) -> None:
    loss = abs(a["['metrics']['loss']"] - b["['metrics']['loss']"]) / b["['metrics']['loss']"]
    assert loss <= 1e-5, (what, loss)
    stats = _worst_leaf(a, b, '.batch_stats')
    assert stats <= 1e-4, (what, stats)
    norm = a["['metrics']['grad_norm']"] / b["['metrics']['grad_norm']"] - 1
    assert abs(norm) <= 1e-3, (what, norm)
    grads = _relative_l2(a, b, '.trace')
    assert grads <= grad_bound, (what, grads, grad_bound)
    for key in ("['state'].step", "['metrics']['learning_rate']", "['state'].rng"):
      np.testing.assert_array_equal(a[key], b[key])

  check(four['step'], ref, '4x2 vs 1x8')
  print(
    f'4x2 vs 1x8: gradients {_relative_l2(four["step"], ref, ".trace"):.1e} (L2, bound '
    f'{grad_bound:.1e}; one ulp: {ulp_response:.1e}), BatchNorm statistics '
    f'{_worst_leaf(four["step"], ref, ".batch_stats"):.1e}'
  )
  # The control is far outside every bound.
  assert abs(swapped["['metrics']['loss']"] / ref["['metrics']['loss']"] - 1) > 100 * 1e-5
  assert _worst_leaf(swapped, ref, '.batch_stats') > 10 * 1e-4
  assert _relative_l2(swapped, ref, '.trace') > 5 * grad_bound


def _epochs(out: str, processes: int) -> tuple[list[list[list[int]]], int]:
  """Per process, per epoch, the video ids it read; and the steps per epoch."""
  runs = []
  for pid in range(processes):
    with open(os.path.join(out, f'epochs_{pid}.json')) as f:
      record = json.load(f)
    runs.append(record['epochs'])
  return runs, record['steps_per_epoch']


def test_every_training_video_is_read_once_per_epoch_across_4_hosts(step_outputs):
  """Two epochs of the real train pipeline (global batch 8, 2 per host and step) on 4 processes:
  the hosts read disjoint quarters of the split (TFDS's per-process split, across shard
  boundaries) and, together, every video exactly once per epoch; 1 x 8 reads each once too."""
  hosts, steps = _epochs(step_outputs[FOUR], 4)
  assert steps == STEPS_PER_EPOCH
  for epoch in range(2):
    per_host = [host[epoch] for host in hosts]
    assert [len(ids) for ids in per_host] == [NUM_TRAIN // 4] * 4
    assert sorted(i for ids in per_host for i in ids) == list(range(NUM_TRAIN))
    for pid, ids in enumerate(per_host):  # host p: its contiguous quarter, in its own order
      assert sorted(ids) == list(range(pid * 4, pid * 4 + 4)), (pid, ids)
  # Each global batch holds 2 videos of every host's quarter: the order depends on the topology.
  for step in range(STEPS_PER_EPOCH):
    batch = [i for host in hosts for i in host[0][2 * step : 2 * step + 2]]
    assert sorted(i // 4 for i in batch) == [0, 0, 1, 1, 2, 2, 3, 3]
  (single,), steps = _epochs(step_outputs[ONE], 1)
  assert steps == STEPS_PER_EPOCH
  for epoch in single:
    assert sorted(epoch) == list(range(NUM_TRAIN))


# -- 3, 4, 5: training across topologies, a killed process, the test protocol -------------------


@pytest.fixture(scope='module')
def first_epoch(pod) -> list[str]:
  """1 x 8 trains the first epoch."""
  logs = _run(pod, 'train_1x8_', ONE)
  assert train_testlib.checkpoint_steps(pod.workdir)[-1] == STEPS_PER_EPOCH
  assert _newest_meta(pod.workdir)['topology'] == {
    'process_count': 1,
    'device_count': 8,
    'local_device_count': 8,
  }
  return logs


@dataclasses.dataclass
class Kill:
  logs: list[str]
  codes: list[int]
  stop_s: dict[int, float]  # survivor -> seconds from the kill to its exit
  killed_after: int  # the newest checkpoint when process 2 was killed
  newest: int  # the newest checkpoint when the survivors had stopped


KILLED = 2


@pytest.fixture(scope='module')
def killed(pod, first_epoch) -> Kill:
  """4 x 2 resumes the 1 x 8 run with 3 epochs; once it saved a step of its own, process 2 is
  SIGKILLed."""
  del first_epoch
  epochs = '--config.num_epochs=3'
  cmd = train_testlib.main_command(
    pod.config, pod.workdir, epochs, f'--heartbeat_timeout={HEARTBEAT_S}'
  )
  started = _start(pod, 'kill_4x2_', cmd, FOUR)
  try:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while train_testlib.checkpoint_steps(pod.workdir)[-1] <= STEPS_PER_EPOCH:
      assert all(p.poll() is None for p, _ in started), 'the run ended before the kill'
      assert time.monotonic() < deadline, 'no checkpoint of the 4 x 2 run in time'
      time.sleep(0.1)
    killed_after = train_testlib.checkpoint_steps(pod.workdir)[-1]
    os.kill(started[KILLED][0].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stop_s = {}
    while len(stop_s) < 3 and time.monotonic() < killed_at + 3 * STOP_BOUND_S:
      for pid, (proc, _) in enumerate(started):
        if pid != KILLED and pid not in stop_s and proc.poll() is not None:
          stop_s[pid] = time.monotonic() - killed_at
      time.sleep(0.05)
  finally:
    results = _wait(started, timeout=1)
  return Kill(
    logs=[log for _, log in results],
    codes=[code for code, _ in results],
    stop_s=stop_s,
    killed_after=killed_after,
    newest=train_testlib.checkpoint_steps(pod.workdir)[-1],
  )


def _names_dead_process(log: str, pid: int) -> bool:
  """The coordination service's verdict on process `pid` (JAX's task `pid`) is in `log`."""
  pattern = rf'Task {pid} heartbeat timeout|stopped sending heartbeats\):\s*{pid}\b'
  return re.search(pattern, log) is not None


def _cut_off_by_gloo(log: str) -> bool:
  """`log` ends in a Gloo failure: a collective with the dead process broke before the
  coordination service's verdict (a raised error, or Gloo's own abort from its thread)."""
  return re.search(r'Gloo [\w-]+ failed|gloo::EnforceNotMet', log) is not None


def test_a_killed_process_stops_the_others_naming_it(pod, killed):
  # The killed run had resumed the 1 x 8 checkpoint and trained on: the reverse direction.
  for log in killed.logs:
    assert f'Resumed from step {STEPS_PER_EPOCH}' in log
    assert _topology_note(ONE, FOUR) in log
  assert killed.killed_after > STEPS_PER_EPOCH
  assert killed.codes[KILLED] == -signal.SIGKILL
  survivors = [pid for pid in range(4) if pid != KILLED]
  assert sorted(killed.stop_s) == survivors, killed.stop_s
  for pid in survivors:
    assert killed.stop_s[pid] <= STOP_BOUND_S, (pid, killed.stop_s)
    assert killed.codes[pid] != 0, pid
    assert 'Training stopped' not in killed.logs[pid]  # none of them finished on its own
  # The coordination service names the dead process in the logs of the survivors it stops. A
  # survivor inside a collective with the dead process may be stopped sooner by Gloo (seen once
  # in many runs: an abort 0.2 s after the kill), whose error names no process.
  naming = [pid for pid in survivors if _names_dead_process(killed.logs[pid], KILLED)]
  assert naming, [log[-3000:] for log in killed.logs]
  for pid in sorted(set(survivors) - set(naming)):
    assert _cut_off_by_gloo(killed.logs[pid]), killed.logs[pid][-3000:]
  assert killed.killed_after <= killed.newest < 3 * STEPS_PER_EPOCH
  print(f'survivors stopped {killed.stop_s} s after the kill (bound {STOP_BOUND_S} s)')


@pytest.fixture(scope='module')
def resumed_on_one(pod, killed) -> list[str]:
  """1 x 8 resumes the run whose process 2 was killed on 4 x 2, to a new end (4 epochs)."""
  del killed
  return _run(pod, 'resume_1x8_', ONE, '--config.num_epochs=4')


def test_the_killed_run_resumes_from_its_newest_checkpoint_on_1x8_to_a_new_end(
  pod, killed, resumed_on_one
):
  (log,) = resumed_on_one
  assert _resumed_from(log) == killed.newest
  assert _topology_note(FOUR, ONE) in log
  total = 4 * STEPS_PER_EPOCH
  assert f'Training stopped at step {total} of {total}' in log
  assert train_testlib.checkpoint_steps(pod.workdir)[-1] == total
  meta = _newest_meta(pod.workdir)
  assert meta['batch_size'] == BATCH and meta['topology']['process_count'] == 1


def test_the_test_protocol_gives_the_same_scores_on_1x8_and_4x2(pod, resumed_on_one):
  del resumed_on_one
  step = train_testlib.checkpoint_steps(pod.workdir)[-1]
  checkpoint = f'--checkpoint={os.path.join(pod.workdir, "checkpoints", str(step))}'
  results = {}
  for topology in (ONE, FOUR):
    logs = _run(pod, f'test_{topology[0]}x{topology[1]}_', topology, '--mode=test', checkpoint)
    assert f'Test on val ({NUM_VAL} videos x 6 views)' in logs[0]
    scores = os.path.join(pod.workdir, 'test_val_scores.npz')
    with np.load(scores) as f:
      results[topology] = {k: f[k] for k in f.files}
    with open(os.path.join(pod.workdir, 'test_val_summary.json')) as f:
      summary = json.load(f)
    assert summary['num_videos'] == NUM_VAL and summary['step'] == step
    shutil.move(scores, os.path.join(pod.logs, f'scores_{topology[0]}x{topology[1]}.npz'))
  for out in results.values():  # each video once, in order, with its label
    np.testing.assert_array_equal(out['index'], np.arange(NUM_VAL))
    np.testing.assert_array_equal(out['label'], np.arange(NUM_VAL) % 4)
    np.testing.assert_allclose(out['scores'].sum(axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(results[FOUR]['scores'], results[ONE]['scores'], rtol=0, atol=1e-5)


def test_a_topology_that_cannot_keep_the_global_batch_is_one_line(pod, first_epoch):
  """Resuming the batch-8 run on 3 devices: one line naming both topologies and the numbers."""
  del first_epoch
  saved = _newest_meta(pod.workdir)['topology']
  proc = zygote.run(
    train_testlib.main_command(pod.config, pod.workdir),
    cwd=train_testlib.REPO,
    env=train_testlib.env(3),
    timeout=300,
  )
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  processes, devices = saved['process_count'], saved['local_device_count']
  assert errors[0] == (
    f'error: cannot resume {pod.workdir} on 1 process x 3 devices (3 devices): the micro-batch '
    f'(batch_size / grad_accum_steps = {BATCH}/1)={BATCH} is not divisible by the device count=3. '
    f'The run was saved on {_describe((processes, devices))} with batch_size={BATCH}, which a '
    'resume keeps: resume on processes and devices that divide it, or use a new --workdir'
  )
