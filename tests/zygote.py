"""Starts the tests' `python -m MODULE ...` and `python -c CODE` commands from an interpreter that
has already imported TensorFlow, JAX and the project's libraries, by forking it (a zygote, as
Android starts apps).

Importing TensorFlow, JAX, Flax, orbax and clu takes about 7 CPU-seconds, often more than the
tiny run the command makes; the suite starts about a hundred such commands. A forked child is
a new process with its own pid, exit status, signals, environment, working directory and
standard streams; it runs the module as `python -m` does (`runpy`, `__main__`, `sys.argv`,
`sys.path[0]`), or the code as `-c` does, and ends as an interpreter does (threads joined,
atexit handlers, streams flushed, the same exit status), less the final teardown of every object
(`_exit`). What it skips is the import: the entry modules themselves (they define flags)
are imported in the child, never in the zygote. It inherits the zygote's garbage-collector
settings (tests/garbage_collector.py: when the collector runs, not what a command computes).

A command is forked only where that cannot change what it does: a `-m` command of
`FORKED_MODULES` or a `-c` command, with the environment the zygote was started with except for
variables that are read after start-up (`LATE_VARIABLES`). Any other command runs as a plain
subprocess, and the tests of start-up behaviour (tests/test_quiet_startup.py, the doc-command
checks) start fresh interpreters on purpose.

Server: `python -m tests.zygote SOCKET` (one per pytest worker, started on first use).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import types

from tests import garbage_collector

# `python -m` modules the zygote may start (and any `python -c` code).
FORKED_MODULES = frozenset(
  {
    'cost_jax.main',
    'cost_jax.predict',
    'cost_jax.export',
    'cost_jax.analyze',
    'cost_jax.tools.import_mmaction2',
    'data_prep.build',
    'tests.pod_scale_step',
    'tests.fault_injection',
    'tests.batch_recording',
  }
)
# Heavy libraries imported before forking (never an entry module: those define absl flags).
PRELOAD = (
  'tensorflow',
  'tensorflow_datasets',
  'jax',
  'jax.numpy',
  'flax.linen',
  'optax',
  'orbax.checkpoint',
  'clu.metric_writers',
  'clu.periodic_actions',
  'av',
  'cost_jax.training.loop',
  'cost_jax.training.evaluate',
  'cost_jax.data.input_pipeline',
)
# Variables that the preloaded libraries read when they are used, not when they are imported:
# XLA's flags (read when JAX creates its CPU client), the GCS clients' endpoints, proxies and
# credentials (read when a client or file system is created), the download cache.
LATE_VARIABLES = frozenset(
  {
    'XLA_FLAGS',
    'COST_JAX_CACHE',
    'STORAGE_EMULATOR_HOST',
    'TENSORSTORE_GCS_HTTP_URL',
    'https_proxy',
    'http_proxy',
    'HTTPS_PROXY',
    'no_proxy',
    'NO_PROXY',
    'CURL_CA_BUNDLE',
    'GOOGLE_AUTH_TOKEN_FOR_TESTING',
    'NO_GCE_CHECK',
    'GCE_METADATA_HOST',
    'GCE_METADATA_IP',
    'GCE_METADATA_ROOT',
    'GOOGLE_CLOUD_PROJECT',
    'GCS_READ_CACHE_DISABLED',
    'GCS_READ_CACHE_BLOCK_SIZE_MB',
    # Read by tests.fault_injection and tests.batch_recording, entry modules imported in the child.
    'COST_JAX_FAULT',
    'COST_JAX_RECORD_BATCHES',
    'PYTEST_CURRENT_TEST',  # pytest's name of the running test
  }
)


# -- the server -----------------------------------------------------------------------------------


def _child(request: dict, fds: list[int]) -> None:
  """In the forked child: become the requested command (does not return). The zygote keeps
  Python's own signal handlers, so the child starts with those of a new interpreter."""
  try:
    _run_command(request, fds)
    status = 0
  except SystemExit as e:
    status = _exit_status(e.code)
  except KeyboardInterrupt:  # the interpreter prints it, then dies of SIGINT
    sys.excepthook(*sys.exc_info())
    status = -signal.SIGINT
  except BaseException:
    sys.excepthook(*sys.exc_info())
    status = 1
  _exit(status)


def _exit_status(code: object) -> int:
  """The status `raise SystemExit(code)` gives an interpreter (a message is printed, then 1)."""
  if code is None:
    return 0
  if isinstance(code, int):
    return code & 0xFF
  print(code, file=sys.stderr)
  return 1


def _exit(status: int) -> None:
  """Ends the child as an interpreter's exit does, up to its final teardown: threading's exit
  hooks (concurrent.futures' workers are told to stop) and non-daemon threads joined, then atexit
  handlers, then the standard streams flushed. The teardown of every module and object left
  (about 1 CPU-second once TensorFlow and JAX are loaded) is skipped with `os._exit`, as
  multiprocessing's forked children skip it. A negative status is the signal the interpreter
  dies of (an uncaught KeyboardInterrupt: SIGINT)."""
  threading._shutdown()  # what the interpreter calls: threading's exit hooks, then the joins
  atexit._run_exitfuncs()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  if status < 0:
    signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
  os._exit(status)


def _run_command(request: dict, fds: list[int]) -> None:
  for target, fd in enumerate(fds):
    os.dup2(fd, target)
    os.close(fd)
  os.chdir(request['cwd'])
  os.environ.clear()
  os.environ.update(request['env'])
  option, target, args = request['argv'][1:3] + [request['argv'][3:]]
  if option == '-m':
    sys.argv = [target, *args]
    sys.path[0] = os.getcwd()
    import runpy

    runpy.run_module(target, run_name='__main__', alter_sys=True)
  else:  # -c: the code runs in a new __main__, with the working directory first on the path
    sys.argv = ['-c', *args]
    sys.path[0] = ''
    main = types.ModuleType('__main__')
    sys.modules['__main__'] = main
    exec(compile(target, '<string>', 'exec'), main.__dict__)


def _serve(path: str) -> None:
  import importlib

  for name in PRELOAD:
    importlib.import_module(name)
  garbage_collector.quiet()  # as in the workers; the children inherit it
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(path)
  listener.listen(64)
  print('ready', flush=True)
  null = os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 1)  # nothing more for the pipe that the client no longer reads
  os.close(null)
  selector = selectors.DefaultSelector()
  selector.register(listener, selectors.EVENT_READ)
  children: dict[int, socket.socket] = {}  # pid -> the connection that asked for it
  parent = os.getppid()
  while True:
    for key, _ in selector.select(timeout=0.05):
      if key.fileobj is listener:
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        pid = os.fork()
        if pid == 0:
          selector.close()
          listener.close()
          for other in children.values():
            other.close()
          conn.close()
          _child(json.loads(message), fds)
        for fd in fds:
          os.close(fd)
        conn.sendall(json.dumps({'pid': pid}).encode() + b'\n')
        children[pid] = conn
    while children:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if pid == 0:
        break
      conn = children.pop(pid, None)
      if conn is not None:
        try:
          code = os.waitstatus_to_exitcode(status)
          conn.sendall(json.dumps({'returncode': code}).encode() + b'\n')
        except OSError:
          pass
        conn.close()
    if os.getppid() != parent:  # the pytest worker is gone (this process was re-parented)
      return


# -- the client -----------------------------------------------------------------------------------

_server: dict[str, object] = {}
_lock = threading.Lock()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_server(env: dict[str, str]) -> None:
  """Starts this worker's zygote with `env`, the first forked command's environment."""
  directory = tempfile.mkdtemp(prefix='cost_jax_zygote_')
  if len(directory) > 90:  # a socket's path has at most 107 bytes
    directory = tempfile.mkdtemp(prefix='cost_jax_zygote_', dir='/tmp')
  path = os.path.join(directory, 'socket')
  proc = subprocess.Popen(
    [sys.executable, '-m', 'tests.zygote', path],
    cwd=REPO,
    env=env,
    stdin=subprocess.DEVNULL,
    stdout=subprocess.PIPE,
    text=True,
  )
  line = proc.stdout.readline()
  if line.strip() != 'ready':
    proc.kill()
    raise RuntimeError(f'the test zygote did not start (exit {proc.wait()})')
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  atexit.register(proc.kill)  # runs first
  _server.update(path=path, env=env)


def _forkable(argv: list[str]) -> bool:
  if len(argv) < 3 or argv[0] != sys.executable:
    return False
  return argv[1] == '-c' or (argv[1] == '-m' and argv[2] in FORKED_MODULES)


def _same_start(env: dict[str, str], base_env: dict[str, str]) -> bool:
  """Whether a process started with `env` would import the libraries as the zygote did."""
  keys = (set(env) | set(base_env)) - LATE_VARIABLES
  return all(env.get(k) == base_env.get(k) for k in keys)


class Child:
  """The part of `subprocess.Popen` the tests use, for a child of the zygote."""

  def __init__(self, conn: socket.socket, args: list[str]):
    self.args = args
    self._conn = conn
    self._buffer = b''
    self.pid = self._message(None)['pid']
    self.returncode: int | None = None

  def _message(self, timeout: float | None) -> dict:
    self._conn.settimeout(timeout)
    while b'\n' not in self._buffer:
      data = self._conn.recv(4096)
      if not data:
        raise RuntimeError(f'the test zygote died while running {self.args}')
      self._buffer += data
    line, self._buffer = self._buffer.split(b'\n', 1)
    return json.loads(line)

  def poll(self) -> int | None:
    if self.returncode is None:
      try:
        self.returncode = self._message(0.0)['returncode']
      except (BlockingIOError, TimeoutError):
        return None
      self._conn.close()
    return self.returncode

  def wait(self, timeout: float | None = None) -> int:
    if self.returncode is None:
      try:
        self.returncode = self._message(timeout)['returncode']
      except TimeoutError:
        raise subprocess.TimeoutExpired(self.args, timeout) from None
      self._conn.close()
    return self.returncode

  def send_signal(self, signum: int) -> None:
    if self.returncode is None:
      os.kill(self.pid, signum)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)

  def terminate(self) -> None:
    self.send_signal(signal.SIGTERM)


def Popen(argv: list[str], *, env: dict[str, str], cwd, stdout=None, stderr=None, **kwargs):
  """`subprocess.Popen(argv, env=env, cwd=cwd, stdout=..., stderr=...)`, forked from the zygote
  where that changes nothing (module docstring); `stdout`/`stderr`: None, a file, DEVNULL or
  STDOUT (stderr)."""
  if kwargs or not _forkable(argv):
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr, **kwargs)
  with _lock:
    if not _server:
      _start_server(dict(env))
  if not _same_start(env, _server['env']):
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
  opened = []

  def fd_of(stream, default: int) -> int:
    if stream is None:
      return default
    if stream == subprocess.DEVNULL:
      opened.append(open(os.devnull, 'w'))
      return opened[-1].fileno()
    return stream.fileno()

  out = fd_of(stdout, 1)
  err = out if stderr == subprocess.STDOUT else fd_of(stderr, 2)
  null = open(os.devnull)
  request = json.dumps({'argv': list(argv), 'env': dict(env), 'cwd': os.fspath(cwd)}).encode()
  conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  try:
    conn.connect(_server['path'])
    socket.send_fds(conn, [request], [null.fileno(), out, err])
  finally:
    null.close()
    for f in opened:
      f.close()
  return Child(conn, list(argv))


def run(argv: list[str], *, env: dict[str, str], cwd, timeout: float | None = None):
  """`subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)`
  through `Popen` above."""
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    proc = Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
    try:
      proc.wait(timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      raise
    out.seek(0)
    err.seek(0)
    text = [f.read().decode(errors='replace') for f in (out, err)]
    return subprocess.CompletedProcess(argv, proc.returncode, *text)


if __name__ == '__main__':
  _serve(sys.argv[1])
