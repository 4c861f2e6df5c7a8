"""Quiet, friendly commands: no start-up logs of TensorFlow, XLA or JAX on stderr, a short usage
(exit status 2) when the required flags are missing, and COST_JAX_VERBOSE=1 brings the logs back.

The commands run in subprocesses with the test environment minus what would hide the logs by
itself (TF_CPP_MIN_LOG_LEVEL, JAX_PLATFORMS): the quiet comes from `cost_jax`. Without it,
data_prep.verify (TensorFlow loads before JAX) shows TensorFlow's C++ INFO lines and the import
tool (absl's app.run logs at INFO) JAX's probing for a TPU and orbax's log of the save.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import subprocess
import sys

import pytest

from cost_jax import analyze, cli, export
from tests import fixtures, train_testlib

# Start-up lines of TensorFlow, XLA and JAX (C++ logs carry `file.cc:LINE]`; the absl lines of
# Python modules carry `file.py:LINE]`) and TensorFlow Datasets' INFO lines.
NOISE = re.compile(
  r'All log messages before absl::InitializeLog'
  r'|oneDNN custom operations|Unable to register cu(DNN|FFT|BLAS)|TF-TRT Warning'
  r'|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler'
  r'|Unable to initialize backend|CUDA-enabled jaxlib is not installed|TPU-enabled jaxlib'
  r'|^[IW]\d{4} [\d:.]+ +\d+ [\w.]+\.(cc|h):\d+\]'
  r'|dataset_info\.py|orbax|Traceback',
  re.MULTILINE,
)
TF_LINE = 'tf_record_dataset_op.cc'  # an INFO line TensorFlow logs for every verified shard
MAX_USAGE_LINES = 25
# The tools' usage, then which of the heavy libraries they loaded for it.
USAGE_MODULES = (
  'import sys\nfrom cost_jax import analyze, export, predict\n'
  'status = [m.main([m.__name__]) for m in (predict, export, analyze)]\n'
  'print(status, sorted(m for m in ("tensorflow", "jax", "flax", "av") if m in sys.modules))'
)
PY = sys.executable


def _env(**extra: str) -> dict[str, str]:
  env = train_testlib.env()
  for name in ('TF_CPP_MIN_LOG_LEVEL', 'JAX_PLATFORMS', cli.VERBOSE_ENV):
    env.pop(name, None)
  env.update(extra)
  return env


def _run(cmd: list[str], **extra: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    cmd, cwd=train_testlib.REPO, env=_env(**extra), capture_output=True, text=True, timeout=300
  )


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
  """Every command of the test, two at a time (more only slow each other down on a 2-core
  machine), the first ones while the dataset that data_prep.verify reads is written."""
  root = tmp_path_factory.mktemp('quiet')
  data = str(root / 'data')
  # A config file that imports nothing heavy (configs/*.py load TensorFlow and JAX, ~8 s here).
  config = root / 'config.py'
  config.write_text(
    'import ml_collections\n\n\ndef get_config():\n'
    '  return ml_collections.ConfigDict({"model": {}})\n'
  )
  main = [PY, '-m', 'cost_jax.main']
  import_tool = [PY, '-m', 'cost_jax.tools.import_mmaction2']
  verify = [PY, '-m', 'data_prep.verify', data, '--noprogress']
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    started = {
      'main': pool.submit(_run, main),
      'main_no_workdir': pool.submit(_run, main + [f'--config={config}']),
      'main_bad_mode': pool.submit(
        _run, main + [f'--config={config}', f'--workdir={root}/w', '--mode=tset']
      ),
      'predict': pool.submit(_run, [PY, '-m', 'cost_jax.predict']),
      'usage_modules': pool.submit(_run, [PY, '-c', USAGE_MODULES]),
      'import_usage': pool.submit(_run, import_tool),
      'import': pool.submit(_run, import_tool + [fixtures.path('c2d.pth'), f'--output={root}/m']),
    }
    train_testlib.write_tiny_dataset(data)
    started['verify'] = pool.submit(_run, verify)
    started['verify_verbose'] = pool.submit(_run, verify, **{cli.VERBOSE_ENV: '1'})
    return {name: future.result() for name, future in started.items()}


def _noise(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if NOISE.search(line)]


def _check_usage(proc: subprocess.CompletedProcess, *expected: str) -> None:
  """Exit status 2, a short usage on stderr ending in one `error: ...` line, and no noise."""
  lines = proc.stderr.rstrip().splitlines()
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert not _noise(proc.stderr), _noise(proc.stderr)
  assert 0 < len(lines) < MAX_USAGE_LINES and lines[-1].startswith('error: '), proc.stderr
  assert [line for line in lines if line.startswith('error: ')] == lines[-1:], proc.stderr
  for text in expected:
    assert text in proc.stderr, (text, proc.stderr)


def test_main_without_config_or_workdir_prints_a_short_usage(runs):
  common = ('python -m cost_jax.main --config=', 'resume', '--mode=test', '--helpfull')
  _check_usage(runs['main'], *common, 'error: --config and --workdir are required')
  _check_usage(runs['main_no_workdir'], *common, 'error: --workdir is required')
  _check_usage(runs['main_bad_mode'], *common, '--mode=tset: must be train or test')
  assert cli.VERBOSE_ENV in runs['main'].stderr


def test_tools_without_their_required_flags_print_a_short_usage(runs, capsys):
  _check_usage(
    runs['predict'], 'python -m cost_jax.predict --checkpoint', 'error: --checkpoint is required'
  )
  # At once: before TensorFlow or JAX load (as cost_jax.main).
  assert runs['usage_modules'].stdout.splitlines()[-1] == '[2, 2, 2] []', runs['usage_modules']
  _check_usage(runs['import_usage'], 'error: a checkpoint path and --output are required')
  for module, expected in (
    (analyze, 'error: --checkpoint and --output_dir are required'),
    (export, 'error: --checkpoint and --output are required'),
  ):
    assert module.main([]) == 2
    err = capsys.readouterr().err
    lines = err.rstrip().splitlines()
    assert len(lines) < MAX_USAGE_LINES and lines[-1] == expected, err
    assert f'python -m {module.__name__} --checkpoint' in err and '--help' in err, err
  # Other mistakes stay one line.
  assert analyze.main(['--checkpoint=x', '--output_dir=y', 'extra']) == 2
  assert capsys.readouterr().err.count('\n') == 1


def test_working_commands_are_quiet(runs):
  """TensorFlow loads before JAX in data_prep (its C++ INFO lines would show); the import tool
  runs under absl's app.run, whose INFO level would show JAX's probing and orbax's log."""
  for name in ('import', 'verify'):
    proc = runs[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not _noise(proc.stderr), (name, _noise(proc.stderr))
  assert 'parameters:' in runs['import'].stdout
  assert runs['import'].stderr == ''
  assert 'intact' in runs['verify'].stdout


def test_cost_jax_verbose_brings_the_library_logs_back(runs):
  proc = runs['verify_verbose']
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert TF_LINE in proc.stderr, proc.stderr[-3000:]
  assert TF_LINE not in runs['verify'].stderr


def _record(message: str, path: str, level: int = logging.INFO) -> logging.LogRecord:
  return logging.LogRecord('x', level, path, 1, message, None, None)


def test_only_the_libraries_lines_are_dropped():
  probing = cli._ProbingFilter()
  assert not probing.filter(_record("Unable to initialize backend 'tpu': INTERNAL", 'xla.py'))
  assert not probing.filter(
    _record(
      'An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not '
      'installed. Falling back to cpu.',
      'xla.py',
      logging.WARNING,
    )
  )
  # An installed platform that fails is a real problem.
  assert probing.filter(_record('CUDA backend failed to initialize: x', 'xla.py', logging.WARNING))
  tfds = cli._TfdsFilter()
  site = f'{os.sep}site-packages{os.sep}tensorflow_datasets{os.sep}core{os.sep}dataset_info.py'
  assert not tfds.filter(_record('Load dataset info from /d', site))
  deprecated = '`FeatureConnector.dtype` is deprecated. Please change your code to use NumPy ...'
  assert not tfds.filter(_record(deprecated, site, logging.WARNING))
  assert tfds.filter(_record('a real tfds warning', site, logging.WARNING))
  # Our own INFO lines (the trainer's progress) pass.
  ours = os.path.join(train_testlib.REPO, 'cost_jax', 'training', 'loop.py')
  assert tfds.filter(_record('Training stopped at step 2 of 2', ours))
