"""tests/zygote.py: forked commands behave as started ones; what it must not fork, it starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import types

import pytest

from tests import gcs_emulator, train_testlib, zygote


def _main(*flags: str) -> list[str]:
  return [sys.executable, '-m', 'cost_jax.main', *flags]


def test_a_forked_command_has_its_own_arguments_directory_streams_and_exit_status(tmp_path):
  (tmp_path / 'config.py').write_text('raise ValueError("from the working directory")\n')
  proc = zygote.run(
    _main('--config=config.py', '--workdir=w'), env=train_testlib.env(), cwd=tmp_path, timeout=120
  )
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
  assert 'from the working directory' in errors[0]
  assert not (tmp_path / 'w').exists()


def test_a_forked_command_dies_of_its_signal(tmp_path):
  train_testlib.write_tiny_dataset(str(tmp_path / 'data'))
  config = train_testlib.write_config_file(str(tmp_path / 'c.py'), str(tmp_path / 'data'))
  with open(tmp_path / 'log', 'w') as log:
    proc = zygote.Popen(
      _main(f'--config={config}', f'--workdir={tmp_path}/w'),
      env=train_testlib.env(),
      cwd=train_testlib.REPO,
      stdout=log,
      stderr=subprocess.STDOUT,
    )
  assert isinstance(proc, zygote.Child)
  deadline = time.monotonic() + 120
  while 'JAX process 0/1' not in (tmp_path / 'log').read_text():  # it runs the trainer
    assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / 'log').read_text()
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait(timeout=60) == -signal.SIGKILL and proc.poll() == -signal.SIGKILL


def test_forked_code_runs_as_python_c_runs_it(tmp_path):
  """`python -c`: the same argv, path head, __main__, output and exit status as a started
  interpreter's, an uncaught exception included (status 1, its traceback on stderr)."""
  code = (
    'import sys, os\n'
    'print(sys.argv[0], repr(sys.path[0]), __name__, os.getcwd() == sys.argv[1])\n'
    "raise KeyError('from the code')\n"
  )
  env = train_testlib.env()
  zygote.run(_main('--helpfull'), env=env, cwd=tmp_path)  # the zygote is up
  argv = [sys.executable, '-c', code, str(tmp_path)]
  with open(tmp_path / 'out', 'w') as out:
    forked = zygote.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.DEVNULL)
  assert isinstance(forked, zygote.Child)
  forked.wait(timeout=60)
  started = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True)
  assert (tmp_path / 'out').read_text() == started.stdout == "-c '' __main__ True\n"
  assert forked.returncode == started.returncode == 1
  proc = zygote.run(argv, env=env, cwd=tmp_path, timeout=60)
  assert proc.returncode == 1 and proc.stderr.strip().endswith("KeyError: 'from the code'")
  assert 'Traceback' in proc.stderr


ENDINGS = {  # the code, and what a started interpreter prints and returns
  'threads joined, then atexit': (
    'import atexit, threading, time\n'
    "atexit.register(print, 'atexit')\n"
    "threading.Thread(target=lambda: (time.sleep(0.5), print('thread'))).start()\n"
    "print('main', end=' ')\n",
    ('main thread\natexit\n', '', 0),
  ),
  'a thread pool left running': (
    'from concurrent.futures import ThreadPoolExecutor\n'
    "print(ThreadPoolExecutor(1).submit(lambda: 'pool').result())\n",
    ('pool\n', '', 0),
  ),
  'exit with a message': (
    "import sys\nprint('out', end='')\nsys.exit('a message')\n",
    ('out', 'a message\n', 1),
  ),
  'exit status 3': ('import sys\nsys.exit(3)\n', ('', '', 3)),
}


@pytest.mark.parametrize('code, expected', ENDINGS.values(), ids=ENDINGS.keys())
def test_a_forked_child_ends_as_an_interpreter_does(code, expected, tmp_path):
  """The same output, order and exit status as a started interpreter's (a child that waits
  forever for a thread times out)."""
  env = train_testlib.env()
  argv = [sys.executable, '-c', code]
  started = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True)
  forked = zygote.run(argv, env=env, cwd=tmp_path, timeout=60)
  assert (started.stdout, started.stderr, started.returncode) == expected
  assert (forked.stdout, forked.stderr, forked.returncode) == expected


def test_an_uncaught_keyboard_interrupt_is_printed_and_ends_in_sigint(tmp_path):
  env = train_testlib.env()
  argv = [sys.executable, '-c', 'raise KeyboardInterrupt']
  started = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True)
  forked = zygote.run(argv, env=env, cwd=tmp_path, timeout=60)
  for proc in (started, forked):
    assert proc.returncode == -signal.SIGINT, proc
    assert proc.stderr.startswith('Traceback') and proc.stderr.endswith('KeyboardInterrupt\n')


def test_what_would_start_differently_is_started_not_forked(tmp_path):
  """Another start-up variable (one the libraries read when imported), another interpreter
  option or a module not on the list: a plain subprocess."""
  zygote.run(_main('--helpfull'), env=train_testlib.env(), cwd=tmp_path)  # the zygote is up
  for argv, env in (
    (_main('--helpfull'), dict(train_testlib.env(), JAX_ENABLE_X64='1')),
    ([sys.executable, '-X', 'utf8', '-m', 'cost_jax.main', '--helpfull'], train_testlib.env()),
    ([sys.executable, '-m', 'data_prep.verify', '--helpfull'], train_testlib.env()),
  ):
    with open(tmp_path / 'help', 'w') as out:
      proc = zygote.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    assert isinstance(proc, subprocess.Popen), argv
    proc.wait(timeout=120)
    module = argv[argv.index('-m') + 1]
    assert f'python -m {module}' in (tmp_path / 'help').read_text(), argv  # it ran: its usage


def test_the_gcs_emulator_variables_are_read_after_start_up():
  """The cloud tests' commands are forked only if every variable pointing at the emulator is
  one of LATE_VARIABLES (a new one would silently start them afresh)."""
  emulator = types.SimpleNamespace(
    url='http://127.0.0.1:1', proxy=types.SimpleNamespace(port=2), ca='ca.pem'
  )
  assert set(gcs_emulator.GcsEmulator.env(emulator)) <= zygote.LATE_VARIABLES
