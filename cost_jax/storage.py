"""The one way the project touches a user's files: local paths and `gs://` URLs alike.

Every path a user gives (data directories, workdirs, checkpoints, weights, labels, videos, list
files, outputs) goes through these functions, built on `etils.epath`: orbax already uses it, and
with TensorFlow installed (always, here) it reaches `gs://` through `tf.io.gfile`, the same client
that tf.data, TFDS and the TFRecord writer use. So one GCS client serves data and files, with the
credentials every Google tool finds (`gcloud auth application-default login`, or the VM's
service account).

An object store is not a file system, and the helpers say how they differ:

* `write_bytes` / `write_text` / `write_json` publish a file whole: on a local disk through a
  temporary file renamed over the target, on a bucket as one object upload (an object is visible
  only once its upload completes, so readers never see half of it). No caller renames.
* `move` of a directory is a rename on a local disk and a copy of each object then a delete on a
  bucket (there is no rename there).
* `makedirs` is a no-op on a bucket (prefixes need no creation).

A path with any other scheme (`s3://`, `http://` where a file is needed, ...) raises
`UnsupportedLocationError` naming it, before anything is read or written.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from typing import IO, Any, Iterator

REMOTE_SCHEMES = ('gs',)
_SCHEME = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')


class UnsupportedLocationError(ValueError):
  """A path with a scheme this project cannot read or write."""


def scheme(path: str) -> str:
  """The URL scheme of `path` ('' for a local path)."""
  match = _SCHEME.match(os.fspath(path))
  return match.group(1).lower() if match else ''


def is_remote(path: str) -> bool:
  """Whether `path` is in a bucket (`gs://`)."""
  return scheme(path) in REMOTE_SCHEMES


def check(path: str, what: str = 'path') -> str:
  """`path` if this project can use it (local or gs://), else UnsupportedLocationError naming
  `what` (e.g. '--workdir') and the scheme."""
  found = scheme(path)
  if found and found not in REMOTE_SCHEMES:
    raise UnsupportedLocationError(
      f'{what}={path}: unsupported scheme {found}:// (use a local path or gs://)'
    )
  return path


def absolute(path: str, what: str = 'path') -> str:
  """A local path made absolute (user's `~` expanded); a gs:// URL unchanged (trailing '/' off)."""
  check(path, what)
  if is_remote(path):
    return path.rstrip('/') if path.rstrip('/').count('/') > 2 else path
  return os.path.abspath(os.path.expanduser(path))


def _epath(path: str):
  from etils import epath  # pylint: disable=g-import-not-at-top  (imports TF lazily)

  return epath.Path(check(os.fspath(path)))


def join(path: str, *parts: str) -> str:
  """`os.path.join` for local paths, '/'-joined for URLs."""
  if is_remote(path):
    return posixpath.join(path, *parts)
  return os.path.join(path, *parts)


def dirname(path: str) -> str:
  if is_remote(path):
    head = posixpath.dirname(path.rstrip('/'))
    return head if head.count('/') >= 2 and head != f'{scheme(path)}:' else path
  return os.path.dirname(path)


def basename(path: str) -> str:
  return (posixpath if is_remote(path) else os.path).basename(path.rstrip('/') or path)


def relpath(path: str, start: str) -> str:
  if is_remote(path):
    return posixpath.relpath(path[len(scheme(path)) + 2 :], start[len(scheme(start)) + 2 :])
  return os.path.relpath(path, start)


def exists(path: str) -> bool:
  return _epath(path).exists()


def isdir(path: str) -> bool:
  return _epath(path).is_dir()


def isfile(path: str) -> bool:
  p = _epath(path)
  return p.exists() and not p.is_dir()


def listdir(path: str) -> list[str]:
  """Names in the directory `path` (sorted; [] for a missing one)."""
  p = _epath(path)
  if not p.is_dir():
    return []
  return sorted(child.name for child in p.iterdir())


def glob(directory: str, pattern: str) -> list[str]:
  """Paths in `directory` whose name matches `pattern` (sorted)."""
  p = _epath(directory)
  if not p.is_dir():
    return []
  return sorted(os.fspath(child) for child in p.glob(pattern))


def walk_files(directory: str) -> list[str]:
  """Every file under `directory`, as paths relative to it (sorted)."""
  root = _epath(directory)
  out = []
  for folder, _, files in root.walk():
    rel = os.fspath(folder)[len(os.fspath(root)) :].lstrip('/')
    out += [posixpath.join(rel, f) if rel else f for f in files]
  return sorted(out)


def size(path: str) -> int:
  """A file's size in bytes (an object's size from its metadata on a bucket)."""
  return int(_epath(path).stat().length)


def makedirs(path: str) -> None:
  """Creates a local directory and its parents; nothing to do on a bucket."""
  if not is_remote(path):
    os.makedirs(check(path), exist_ok=True)


def open_file(path: str, mode: str = 'r', encoding: str | None = None) -> IO[Any]:
  """A file object for reading (or appending-free writing) `path`, local or remote."""
  if not is_remote(path):
    return open(path, mode, encoding=encoding if 'b' not in mode else None)
  return _epath(path).open(mode)


def read_bytes(path: str) -> bytes:
  return _epath(path).read_bytes()


def read_text(path: str) -> str:
  return _epath(path).read_text(encoding='utf-8')


def read_json(path: str) -> Any:
  return json.loads(read_text(path))


def write_bytes(path: str, data: bytes) -> None:
  """Publishes `data` at `path` whole (see the module's docstring)."""
  if is_remote(path):
    _epath(path).write_bytes(data)
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.tmp-', dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


def write_json(path: str, obj: Any) -> None:
  """JSON, indented and with sorted keys, published whole."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def remove(path: str) -> None:
  """Deletes a file (no error if it is already gone)."""
  with contextlib.suppress(FileNotFoundError):
    _epath(path).unlink()


def rmtree(path: str) -> None:
  """Deletes a directory and everything under it (no error if it is gone)."""
  if exists(path):
    _epath(path).rmtree()


def move(source: str, target: str) -> None:
  """Moves a file or directory: a rename on a local disk; on a bucket a copy of every object,
  then the deletion of the originals (an object store has no rename)."""
  if not is_remote(source) and not is_remote(target):
    os.rename(source, target)
    return
  if not isdir(source):
    _epath(source).copy(_epath(target))
    remove(source)
    return
  for rel in walk_files(source):
    _epath(join(source, rel)).copy(_epath(join(target, rel)), overwrite=True)
  rmtree(source)


def copy_to_local(source: str, target: str) -> None:
  """Copies the file `source` (local or remote) to the local path `target`."""
  with open_file(source, 'rb') as src, open(target, 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 22)


@contextlib.contextmanager
def local_file(path: str, suffix: str = '') -> Iterator[str]:
  """A local path holding `path`'s bytes: `path` itself when local, else a temporary copy
  (deleted on exit) for libraries that need a real file (PyAV, zip readers)."""
  if not is_remote(path):
    yield path
    return
  fd, tmp = tempfile.mkstemp(prefix='cost_jax-', suffix=suffix or os.path.splitext(path)[1])
  os.close(fd)
  try:
    copy_to_local(path, tmp)
    yield tmp
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)
