"""docs/launch.md says only what the code does.

* It shows the launches it describes (one GPU, one node, several nodes, a TPU pod slice, the
  three install targets); tests/test_doc_commands.py checks each command's module, flags and
  `--config` fields, as for every other doc.
* Its table of setups passes the batch checks a run makes before it starts, with the clips per
  device and learning rate it states.
* The SLURM advice matches the installed JAX: under SLURM each process gets the GPU of its local
  rank, also with explicit flags, unless JAX_LOCAL_DEVICE_IDS lists others.

No training and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from cost_jax.training import config_checks, optim
from tests import doc_commands

DOC = 'docs/launch.md'


def _doc() -> str:
  return doc_commands.read(DOC)


def test_the_doc_has_the_commands_it_describes():
  """tests/test_doc_commands.py checks every command of every doc; this one checks that
  docs/launch.md shows the launches it describes."""
  commands = [
    c
    for line, block in doc_commands.shell_blocks(_doc())
    for c in doc_commands.commands_in(block, DOC, line)
  ]
  modules = {c.program for c in commands if c.kind == 'module'}
  assert 'cost_jax.main' in modules, modules
  assert len([c for c in commands if c.program == 'cost_jax.main']) >= 10, commands
  flags = {doc_commands.split_option(a)[0] for c in commands for a in c.args if a.startswith('--')}
  for needed in ('config', 'workdir', 'mode', 'coordinator_address', 'num_processes'):
    assert needed in flags, needed
  targets = {w for c in commands if c.kind == 'make' for w in c.args if '=' not in w}
  assert {'venv', 'venv-gpu', 'venv-tpu'} <= targets, targets


def _table_rows() -> list[dict[str, str]]:
  lines = [line for line in _doc().splitlines() if line.startswith('|')]
  header_at = next(i for i, line in enumerate(lines) if '| processes | devices |' in line)
  header = [cell.strip() for cell in lines[header_at].strip('|').split('|')]
  rows = []
  for line in lines[header_at + 2 :]:
    cells = [cell.strip() for cell in line.strip('|').split('|')]
    if len(cells) != len(header):
      break
    rows.append(dict(zip(header, cells)))
  return rows


def _apply_cell(config: ml_collections.ConfigDict, cell: str) -> None:
  for option in re.findall(r'`([^`]*)`', cell):
    name, value = doc_commands.split_option(option)
    assert name.startswith('config.') and value is not None, option
    doc_commands.override(config, name[len('config.') :], value)


def test_setup_table_passes_the_run_checks():
  rows = _table_rows()
  assert len(rows) >= 6, rows
  for row in rows:
    config = doc_commands.load_config('configs/costb_k400.py')
    processes, devices = int(row['processes']), int(row['devices'])
    _apply_cell(config, row['overrides'])
    config_checks.check_batching(config, num_devices=devices, num_processes=processes)
    per_device = config.batch_size // config.grad_accum_steps // devices
    assert per_device == int(row['clips per device per step']), row
    lr = optim.scaled_learning_rate(config.optimizer, config.batch_size)
    assert lr == pytest.approx(float(row['learning rate']), rel=1e-9), row
    assert config.model.bn_group_size == 8, row
    _apply_cell(config, row['for `--mode=test`'])
    config_checks.check_batching(config, num_devices=devices, num_processes=processes, mode='test')


_SLURM_PROBE = textwrap.dedent(
  """
  import os, sys
  import jax
  from jax._src import xla_bridge

  for case in sys.argv[1:]:
    how, ports, ids = case.split(':')
    if ids:
      os.environ['JAX_LOCAL_DEVICE_IDS'] = ids
    else:
      os.environ.pop('JAX_LOCAL_DEVICE_IDS', None)
    os.environ['JAX_COORDINATOR_PORT'] = ports
    if how == 'auto':  # cost_jax on a detected cluster
      jax.distributed.initialize()
    else:  # cost_jax with --coordinator_address/--num_processes/--process_id
      jax.distributed.initialize('127.0.0.1:' + ports, 1, 0)
    print('VISIBLE', how, ids or '-', xla_bridge.CUDA_VISIBLE_DEVICES.value, flush=True)
    jax.distributed.shutdown()
  """
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_slurm_gives_each_process_one_gpu_unless_told_otherwise():
  all_eight = '0,1,2,3,4,5,6,7'
  cases = [('auto', ''), ('flags', ''), ('auto', all_eight), ('flags', all_eight)]
  env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'OMPI_', 'JAX_'))}
  env.update(
    JAX_PLATFORMS='cpu',
    SLURM_JOB_ID='4242',
    SLURM_STEP_NODELIST='127.0.0.1',
    SLURM_NTASKS='1',
    SLURM_PROCID='0',
    SLURM_LOCALID='3',  # the fourth task of its node
  )
  result = subprocess.run(
    [sys.executable, '-c', _SLURM_PROBE] + [f'{how}:{_free_port()}:{ids}' for how, ids in cases],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  seen = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith('VISIBLE')]
  assert seen == [
    ['auto', '-', '3'],
    ['flags', '-', '3'],
    ['auto', all_eight, all_eight],
    ['flags', all_eight, all_eight],
  ], result.stdout
