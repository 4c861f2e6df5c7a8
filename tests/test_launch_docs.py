"""docs/launch.md says only what the code does.

* Every `python -m cost_jax.<module>` command in its shell blocks names a module that exists,
  flags that module defines, and `--config.<path>=<value>` overrides that name a field of the
  config file the command loads, with a value of the field's type; every `make` target exists.
* Its table of setups passes the batch checks a run makes before it starts, with the clips per
  device and learning rate it states.
* The SLURM advice matches the installed JAX: under SLURM each process gets the GPU of its local
  rank, also with explicit flags, unless JAX_LOCAL_DEVICE_IDS lists others.

No training and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from cost_jax.training import config_checks, optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, 'docs', 'launch.md')
COMMAND = re.compile(r'python[\d.]*\s+-m\s+(cost_jax(?:\.\w+)+)(.*)$', re.MULTILINE)
SUBSTITUTION = re.compile(r'\\?\$\([^)]*\)')  # $(...) run by the shell: a value we cannot know


def _doc() -> str:
  with open(DOC) as f:
    return f.read()


def _shell_blocks() -> list[str]:
  blocks = re.findall(r'```(\w*)\n(.*?)```', _doc(), re.DOTALL)
  return [body.replace('\\\n', ' ') for lang, body in blocks if lang in ('bash', 'sh', '')]


def _commands() -> list[tuple[str, list[str]]]:
  """(module, arguments) of every cost_jax command in the shell blocks."""
  found = []
  for block in _shell_blocks():
    for match in COMMAND.finditer(block):
      rest = SUBSTITUTION.sub('SUBSTITUTED', match.group(2))
      rest = re.split(r'&&|;|\|', rest)[0].strip().rstrip('\'"')
      found.append((match.group(1), shlex.split(rest)))
  return found


@functools.lru_cache(maxsize=None)
def _module_flags(module: str) -> frozenset[str]:
  assert importlib.util.find_spec(module) is not None, f'no module {module}'
  # absl's --helpfull lists every flag (and exits with status 1); argparse's --help exits 0.
  for help_flag in ('--helpfull', '--help'):
    result = subprocess.run(
      [sys.executable, '-m', module, help_flag],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
    )
    text = result.stdout + result.stderr
    names = re.findall(r'^\s+--(?:\[no\])?([A-Za-z_][\w.-]*)', text, re.MULTILINE)
    if result.returncode in (0, 1) and 'Traceback' not in text and names:
      return frozenset(names)
  raise AssertionError(f'{module} {help_flag}: {text[-2000:]}')


@functools.lru_cache(maxsize=None)
def _config_module(path: str):
  spec = importlib.util.spec_from_file_location(f'_launch_doc_config_{len(path)}', path)
  module = importlib.util.module_from_spec(spec)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  spec.loader.exec_module(module)
  return module


def _load_config(relative: str) -> ml_collections.ConfigDict:
  path = os.path.join(REPO, relative)
  assert os.path.isfile(path), f'--config={relative}: no such file'
  return _config_module(path).get_config()


def _convert(value: str, like):
  if isinstance(like, bool):
    assert value.lower() in ('true', 'false'), value
    return value.lower() == 'true'
  if isinstance(like, (int, float)):
    return type(like)(value)
  return value


def _override(config: ml_collections.ConfigDict, dotted: str, value: str) -> None:
  """Sets config.<dotted> = value as `--config.<dotted>=<value>` would, failing on a field the
  config does not have or a value of the wrong type."""
  *parents, leaf = dotted.split('.')
  node = config
  for part in parents:
    assert isinstance(node, ml_collections.ConfigDict) and part in node, dotted
    node = node[part]
  assert isinstance(node, ml_collections.ConfigDict) and leaf in node, (
    f'--config.{dotted}: no such field'
  )
  if '$' not in value:
    node[leaf] = _convert(value, node[leaf])


def _split(argument: str) -> tuple[str, str | None]:
  name, _, value = argument[2:].partition('=')
  return name, (value if '=' in argument else None)


def test_the_doc_has_the_commands_it_describes():
  commands = _commands()
  modules = {module for module, _ in commands}
  assert modules == {'cost_jax.main'}, modules
  assert len(commands) >= 10, commands
  flags = {_split(a)[0] for _, args in commands for a in args if a.startswith('--')}
  for needed in ('config', 'workdir', 'mode', 'coordinator_address', 'num_processes'):
    assert needed in flags, needed


@pytest.mark.parametrize('index', range(len(_commands())))
def test_command_uses_real_flags_and_config_fields(index):
  module, args = _commands()[index]
  known = _module_flags(module)
  options = [a for a in args if a.startswith('--')]
  assert [a for a in args if not a.startswith('-')] == [], f'positional arguments in {args}'
  config_files = [v for n, v in map(_split, options) if n == 'config']
  assert len(config_files) == 1, args
  config = _load_config(config_files[0])
  for option in options:
    name, value = _split(option)
    if name.startswith('config.'):
      assert value is not None, option
      _override(config, name[len('config.') :], value)
    else:
      assert name in known, f'{module} has no flag --{name}'
      if name == 'mode':
        assert value in ('train', 'test'), option


def test_make_targets_in_the_doc_exist(tmp_path):
  if shutil.which('make') is None:
    pytest.skip('make is not installed')
  targets = set()
  for block in _shell_blocks():
    for line in block.splitlines():
      if line.startswith('make '):
        words = shlex.split(line.split('#', 1)[0])
        targets.update(w for w in words[1:] if '=' not in w)
  assert {'venv', 'venv-gpu', 'venv-tpu'} <= targets, targets
  for target in sorted(targets):
    result = subprocess.run(
      ['make', '-n', target, f'VENV={tmp_path}/venv'],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=60,
    )
    assert result.returncode == 0, (target, result.stderr)


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
    name, value = _split(option)
    assert name.startswith('config.') and value is not None, option
    _override(config, name[len('config.') :], value)


def test_setup_table_passes_the_run_checks():
  rows = _table_rows()
  assert len(rows) >= 6, rows
  for row in rows:
    config = _load_config('configs/costb_k400.py')
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
