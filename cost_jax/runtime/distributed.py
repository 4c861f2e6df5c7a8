"""Multi-process runs: setting up `jax.distributed`, the run's topology, and a dead process.

* `initialize` starts `jax.distributed` from explicit flags or a detected cluster, with the
  coordination service's heartbeat and shutdown timeouts as settings (`--heartbeat_timeout`,
  `--shutdown_timeout`). On CPU it then sets up Gloo's all-device communicator while the
  processes are in step (`_set_up_cpu_collectives`).
* A process that dies (SIGKILL, a lost VM) stops sending heartbeats. After `heartbeat_timeout`
  seconds the coordination service (in process 0) marks it dead and stops every other process,
  wherever it waits (a collective, a checkpoint barrier), with an error naming it as a task
  ("Terminating process because the JAX distributed service detected fatal errors ... The
  following tasks are unhealthy (stopped sending heartbeats): 2"; JAX's task N is process N).
  That stop is jaxlib's own abort: no Python code runs on the way (its hook for it,
  `missed_heartbeat_callback`, is not public and fails in jaxlib 0.10), so the line is jaxlib's.
  The same command on every host then resumes from the newest checkpoint.
* `topology` / `describe` / `resume_note`: the processes and devices a checkpoint was saved on,
  and the log line when a run resumes on others (the data order changes with the topology: each
  host reads its own part of the split).
"""

from __future__ import annotations

from typing import Any, Mapping

from cost_jax import cli

DEFAULT_HEARTBEAT_TIMEOUT_S = 100  # jax.distributed.initialize's defaults
DEFAULT_SHUTDOWN_TIMEOUT_S = 300


def cluster_detected(environ: Mapping[str, str]) -> bool:
  """Whether the environment describes a multi-process job that JAX can set up by itself."""

  def count(key):
    try:
      return int(environ.get(key, '1'))
    except ValueError:
      return 1

  if 'SLURM_JOB_ID' in environ and count('SLURM_NTASKS') > 1:
    return True
  if count('OMPI_COMM_WORLD_SIZE') > 1:
    return True
  return ',' in environ.get('TPU_WORKER_HOSTNAMES', '')


def initialize(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  environ: Mapping[str, str],
  *,
  heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
  shutdown_timeout_s: int = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> bool:
  """Calls `jax.distributed.initialize` when asked to (all three flags) or on a cluster; True
  if it did. A process silent for `heartbeat_timeout_s` is dead and stops the job;
  `shutdown_timeout_s` bounds how long a finished process waits for the others at exit."""
  for name, value in (
    ('--heartbeat_timeout', heartbeat_timeout_s),
    ('--shutdown_timeout', shutdown_timeout_s),
  ):
    if value < 1:
      raise cli.UsageError(f'{name}={value} must be >= 1 (seconds)')
  import jax

  timeouts = dict(
    heartbeat_timeout_seconds=int(heartbeat_timeout_s),
    shutdown_timeout_seconds=int(shutdown_timeout_s),
  )
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise cli.UsageError(
        '--coordinator_address, --num_processes and --process_id go together; give all three'
      )
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      **timeouts,
    )
  elif cluster_detected(environ):
    jax.distributed.initialize(**timeouts)
  else:
    return False
  _set_up_cpu_collectives()
  return True


def _set_up_cpu_collectives() -> None:
  """On CPU, sets up the all-device communicator while the processes are in step.

  XLA:CPU's Gloo sets up the communicator of a set of devices at its first collective and gives
  every process 30 s to get there. The first train step comes after compiling, which can take
  processes on a loaded machine further apart than that; later collectives on a communicator
  that exists wait much longer. One sum over all devices right after start-up sets it up.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  if jax.default_backend() != 'cpu':
    return
  mesh = Mesh(np.asarray(jax.devices()), ('all',))
  ones = jax.make_array_from_process_local_data(
    NamedSharding(mesh, P('all')),
    np.ones((jax.local_device_count(),), np.float32),
    (jax.device_count(),),
  )
  total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(ones)
  if int(total.addressable_data(0)) != jax.device_count():
    raise RuntimeError(f'a sum over {jax.device_count()} devices gave {total}')


def topology() -> dict[str, int]:
  """This run's process and device counts (what a checkpoint records)."""
  import jax

  return {
    'process_count': jax.process_count(),
    'device_count': jax.device_count(),
    'local_device_count': jax.local_device_count(),
  }


def describe(topo: Mapping[str, Any]) -> str:
  """'4 processes x 2 devices (8 devices)'."""
  processes, local = int(topo['process_count']), int(topo['local_device_count'])
  return (
    f'{processes} process{"es" if processes != 1 else ""} x {local} '
    f'device{"s" if local != 1 else ""} ({int(topo["device_count"])} devices)'
  )


def resume_note(saved: Mapping[str, Any] | None, now: Mapping[str, Any], batch_size: int) -> str:
  """The log line of a resume: the same topology, another one, or one the checkpoint does not
  record (saved before topologies were recorded)."""
  if not saved:
    return (
      f'Resuming on {describe(now)} with global batch {batch_size}; the checkpoint does not '
      'record the topology it was saved on (if it differs, each host now reads other shards, so '
      'the data order differs from an uninterrupted run)'
    )
  keys = ('process_count', 'local_device_count', 'device_count')
  if all(int(saved[k]) == int(now[k]) for k in keys):
    return f'Resuming on the topology it was saved on: {describe(now)}'
  return (
    f'Resuming a run saved on {describe(saved)} on {describe(now)}: the global batch '
    f'({batch_size}) and the update are the same, but the data order changes with the topology '
    '(each host reads its own part of the split), so the remaining steps see the examples in '
    'another order than an uninterrupted run would'
  )
