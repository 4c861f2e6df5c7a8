"""The install recipes (requirements*.txt, make venv-gpu / venv-tpu) agree with each other.

Offline and cheap: the files are parsed, the accelerator pins are compared with what the
installed jax declares for its extras, and make only prints its commands (`make -n`). Whether
the files resolve against a package index is recorded in docs/launch.md, not tested here.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCELERATOR_FILES = {'gpu': 'requirements-gpu.txt', 'tpu': 'requirements-tpu.txt'}
JAX_EXTRA = {'gpu': 'cuda12', 'tpu': 'tpu'}


def _lines(name: str) -> list[str]:
  with open(os.path.join(REPO, name)) as f:
    lines = [line.split('#', 1)[0].strip() for line in f]
  return [line for line in lines if line]


def _includes(name: str) -> list[str]:
  return [re.split(r'\s+', line, maxsplit=1)[1] for line in _lines(name) if line.startswith('-r')]


def _own_requirements(name: str) -> list[Requirement]:
  """The requirements written in `name` itself (not those of the files it includes)."""
  out = []
  for line in _lines(name):
    assert not line.startswith('-') or line.startswith('-r '), (
      f'{name}: only -r includes are expected, got {line!r} (a --find-links or index URL '
      'would make the install depend on more than the package index)'
    )
    if not line.startswith('-'):
      out.append(Requirement(line))
  return out


def _pins(name: str) -> dict[str, tuple[str, frozenset[str]]]:
  """name -> (pinned version, extras) over `name` and everything it includes; a package pinned
  twice must be pinned to the same version."""
  pins: dict[str, tuple[str, frozenset[str]]] = {}
  for included in _includes(name):
    pins.update(_pins(included))
  for req in _own_requirements(name):
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == '==', f'{name}: {req} is not an exact pin'
    key = canonicalize_name(req.name)
    version = specs[0].version
    if key in pins:
      assert pins[key][0] == version, (
        f'{name} pins {req.name}=={version} but an included file pins {pins[key][0]}'
      )
    pins[key] = (version, frozenset(req.extras) | pins.get(key, ('', frozenset()))[1])
  return pins


@pytest.mark.parametrize('platform', sorted(ACCELERATOR_FILES))
def test_accelerator_file_keeps_every_cpu_pin(platform):
  name = ACCELERATOR_FILES[platform]
  assert _includes(name) == ['requirements.txt'], f'{name} must start from requirements.txt'
  cpu, accelerator = _pins('requirements.txt'), _pins(name)
  for package, (version, _) in cpu.items():
    assert accelerator[package][0] == version, (package, accelerator[package], version)
  # TensorFlow only reads data: the CPU build everywhere, never the CUDA one.
  assert 'tensorflow-cpu' in accelerator and 'tensorflow' not in accelerator


def test_jax_and_jaxlib_pins_agree():
  cpu = _pins('requirements.txt')
  version = cpu['jax'][0]
  assert cpu['jaxlib'][0] == version
  gpu, tpu = _pins('requirements-gpu.txt'), _pins('requirements-tpu.txt')
  assert gpu['jax'] == (version, frozenset({'cuda12'}))
  assert tpu['jax'] == (version, frozenset({'tpu'}))
  for plugin in ('jax-cuda12-plugin', 'jax-cuda12-pjrt'):
    assert gpu[plugin][0] == version, (plugin, gpu[plugin])
  assert not any(p.startswith(('jax-cuda', 'nvidia-', 'libtpu')) for p in cpu)
  assert not any(p.startswith(('jax-cuda', 'nvidia-')) for p in tpu)
  assert not any(p.startswith('libtpu') for p in gpu)


@pytest.mark.parametrize('platform', sorted(ACCELERATOR_FILES))
def test_accelerator_pins_satisfy_the_installed_jax_extra(platform):
  """What the pinned jax asks for under its `cuda12` / `tpu` extra: our pins must satisfy it
  (read from the installed jax's metadata, when it is the pinned version)."""
  pins = _pins(ACCELERATOR_FILES[platform])
  if importlib.metadata.version('jax') != pins['jax'][0]:
    pytest.skip('the installed jax is not the pinned one')
  extra = JAX_EXTRA[platform]
  metadata = importlib.metadata.metadata('jax')
  assert extra in metadata.get_all('Provides-Extra')
  wanted = [
    Requirement(r)
    for r in metadata.get_all('Requires-Dist')
    if Requirement(r).marker is not None and Requirement(r).marker.evaluate({'extra': extra})
  ]
  assert wanted, f'jax declares nothing for its {extra!r} extra'
  for req in wanted:
    key = canonicalize_name(req.name)
    if key in pins:
      assert req.specifier.contains(Version(pins[key][0]), prereleases=True), (req, pins[key])
  if platform == 'tpu':  # the runtime jax asks for is pinned, not left to the resolver
    assert any(canonicalize_name(r.name) == 'libtpu' for r in wanted)
    assert 'libtpu' in pins


def _make_dry_run(target: str, venv: str) -> str:
  if shutil.which('make') is None:
    pytest.skip('make is not installed')
  result = subprocess.run(
    ['make', '-n', target, f'VENV={venv}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 0, result.stderr
  return result.stdout


def _uv_install(venv: str) -> str:
  """The Makefile's install command (UV_INSTALL) for a venv at `venv`."""
  return f'{venv}/bin/uv pip install --quiet --python {venv}/bin/python'


@pytest.mark.parametrize('platform', sorted(ACCELERATOR_FILES))
def test_make_target_installs_the_file_and_the_package(platform, tmp_path):
  venv = str(tmp_path / 'venv')  # absent, so make prints every step
  out = _make_dry_run(f'venv-{platform}', venv)
  install = _uv_install(venv)
  assert f'{install} --compile-bytecode -r {ACCELERATOR_FILES[platform]}' in out
  assert f'{install} --no-deps -e .' in out
  assert 'requirements-dev.txt' not in out


def test_cpu_install_is_unchanged(tmp_path):
  venv = str(tmp_path / 'venv')
  out = _make_dry_run('venv', venv)
  assert f'{_uv_install(venv)} --compile-bytecode -r requirements-dev.txt' in out
  assert f'{venv}/bin/python -m pip install --quiet --upgrade pip uv==' in out
  assert 'requirements-gpu' not in out and 'requirements-tpu' not in out
  assert _includes('requirements-dev.txt') == ['requirements.txt']
