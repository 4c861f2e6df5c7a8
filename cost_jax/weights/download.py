"""Resolve a weights reference (`torchvision://name`, URL, `gs://` object, `file://` URL or path)
to a local file.

URLs are downloaded once into a cache directory, through a temporary file that is renamed into
place only when complete (and, for torch-hub style names `name-<sha256 prefix>.ext`, verified).
A `gs://` object is copied into the same local cache (under `gs/<bucket>/<object>`), and copied
again when the object's size changes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

import tqdm
from absl import logging

from cost_jax import storage

__all__ = [
  'TORCHVISION_BASE_URL',
  'TORCHVISION_FILES',
  'WeightsUnavailableError',
  'is_remote',
  'resolve_weights',
]

# ImageNet ResNets as mmcv 1.6.1's `load_checkpoint('torchvision://<name>')` downloads them: the
# URLs of open-mmlab/mmcv v1.6.1 mmcv/model_zoo/torchvision_0.12.json (also torchvision 0.12's
# `model_urls`), split into base URL + file name. mmcv lower-cases the name, as done here.
TORCHVISION_BASE_URL = 'https://download.pytorch.org/models/'
TORCHVISION_FILES = {
  'resnet18': 'resnet18-f37072fd.pth',
  'resnet34': 'resnet34-b627a593.pth',
  'resnet50': 'resnet50-0676ba61.pth',
  'resnet101': 'resnet101-63fe2227.pth',
  'resnet152': 'resnet152-394f9c45.pth',
}

TIMEOUT_S = 30.0  # Per socket operation (connect, each read).
_CHUNK = 1 << 20
_LOG_MIN_BYTES = 8 << 20  # Without a terminal, files smaller than this download silently.
# torch.hub's convention: `<name>-<first hex digits of the SHA-256>.<ext>`. At least 8 digits
# with one letter, so that a date (`-20200614.pth`) is not taken for a hash.
_HASH_PREFIX = re.compile(r'-(?=[0-9]*[a-f])([0-9a-f]{8,64})\.')


class WeightsUnavailableError(OSError):
  """A weights file is missing or cannot be downloaded; the message says how to go on offline."""


def is_remote(ref: str) -> bool:
  """Whether resolving `ref` may need the network (`torchvision://`, `http(s)://`, `gs://`)."""
  return ref.split('://', 1)[0].lower() in ('torchvision', 'http', 'https', 'gs') and '://' in ref


def _cache_dir(cache_dir: str | None) -> str:
  if cache_dir:
    return os.path.expanduser(cache_dir)
  return os.path.expanduser(os.environ.get('COST_JAX_CACHE') or '~/.cache/cost_jax/weights')


def _pass_file(field: str, filename: str) -> str:
  """How to give a local file instead: `--config.{field}=...`, or for a notebook parameter (an
  upper-case name such as CHECKPOINT) an assignment."""
  if field.isupper():
    return f"{field} = '/path/to/{filename}'"
  return f'--config.{field}=/path/to/{filename}'


def _offline_hint(field: str, filename: str) -> str:
  return (
    f'To work offline, download it elsewhere and pass the local file: {_pass_file(field, filename)}'
  )


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      digest.update(chunk)
  return digest.hexdigest()


class _Progress:
  """A tqdm bar, periodic log lines (about every 10%), or nothing."""

  def __init__(self, name: str, total: int | None, progress: bool | None):
    self._name, self._total, self._done = name, total, 0
    tty = sys.stderr.isatty()
    self._bar = None
    self._log = False
    if progress or (progress is None and tty):
      self._bar = tqdm.tqdm(
        total=total,
        unit='B',
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        file=sys.stderr,
        leave=False,
      )
    elif progress is None and (total is None or total >= _LOG_MIN_BYTES):
      self._log = True
      self._step = max(total // 10, 1) if total else 64 << 20
      self._next = self._step
      self._start = time.monotonic()
      logging.info(
        'downloading %s (%s)', name, f'{total / 2**20:.1f} MiB' if total else 'size unknown'
      )

  def update(self, n: int) -> None:
    self._done += n
    if self._bar is not None:
      self._bar.update(n)
    elif self._log and self._done >= self._next:
      self._next += self._step
      of = f' of {self._total / 2**20:.1f}' if self._total else ''
      rate = self._done / 2**20 / max(time.monotonic() - self._start, 1e-3)
      logging.info(
        'downloading %s: %.1f%s MiB (%.1f MiB/s)', self._name, self._done / 2**20, of, rate
      )

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _content_length(resp: http.client.HTTPResponse) -> int | None:
  try:
    value = int(resp.headers.get('Content-Length', ''))
  except ValueError:
    return None
  return value if value >= 0 else None


class _Failure(Exception):
  """Why a download failed, in a few words; becomes a WeightsUnavailableError."""


def _fetch(url: str, out: IO[bytes], name: str, progress: bool | None) -> str:
  """Streams `url` into `out`; returns the SHA-256 hex digest. Raises a one-line reason."""
  request = urllib.request.Request(url, headers={'User-Agent': 'cost_jax'})
  received, total = 0, None
  digest = hashlib.sha256()
  try:
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
      total = _content_length(resp)
      bar = _Progress(name, total, progress)
      try:
        for chunk in iter(lambda: resp.read1(_CHUNK), b''):  # What has arrived.
          try:
            out.write(chunk)
          except OSError as e:  # Not a network error: report it as such.
            raise _Failure(f'cannot write to the weights cache: {e}') from e
          digest.update(chunk)
          received += len(chunk)
          bar.update(len(chunk))
      finally:
        bar.close()
  except urllib.error.HTTPError as e:
    raise _Failure(f'HTTP {e.code} {e.reason}') from e
  except urllib.error.URLError as e:
    reason = e.reason
    if isinstance(reason, (socket.timeout, TimeoutError)):
      raise _Failure(f'unreachable (no answer within {TIMEOUT_S:g} s)') from e
    raise _Failure(f'unreachable ({reason})') from e
  except (socket.timeout, TimeoutError) as e:
    raise _Failure(
      f'connection stalled for {TIMEOUT_S:g} s after {received} of '
      f'{total if total is not None else "?"} bytes'
    ) from e
  except (http.client.HTTPException, OSError) as e:
    if isinstance(e, http.client.IncompleteRead):
      received += len(e.partial)
    raise _Failure(
      f'connection dropped mid-file after {received} of '
      f'{total if total is not None else "?"} bytes ({type(e).__name__}: {e})'
    ) from e
  if total is not None and received != total:
    raise _Failure(
      f'connection dropped mid-file: received {received} of {total} bytes (Content-Length)'
    )
  return digest.hexdigest()


def _partial_file(final: str, cache_dir: str, hint: str) -> tuple[int, str]:
  """(fd, path) of a new temporary file beside `final` in the cache, to be renamed onto it."""
  try:
    os.makedirs(os.path.dirname(final), exist_ok=True)
    return tempfile.mkstemp(
      prefix=f'.{os.path.basename(final)}.', suffix='.part', dir=os.path.dirname(final)
    )
  except OSError as e:
    raise WeightsUnavailableError(
      f'cannot write to the weights cache {cache_dir} ({e.strerror or e}); set '
      f'$COST_JAX_CACHE to a writable directory.\n{hint}'
    ) from e


def _download(url: str, label: str, cache_dir: str, progress: bool | None, field: str) -> str:
  """The cached copy of `url`, downloaded (and hash-checked) if missing."""
  name = os.path.basename(urllib.parse.urlparse(url).path)
  if name in ('', '.', '..'):
    raise WeightsUnavailableError(f'{label}: the URL does not end in a file name')
  hint = _offline_hint(field, name)
  match = _HASH_PREFIX.search(name)
  prefix = match.group(1) if match else None
  final = os.path.join(cache_dir, name)
  if os.path.isfile(final):
    if prefix is None or _sha256(final).startswith(prefix):
      return final
    logging.warning(
      'cached %s does not match the SHA-256 prefix %s of its name; removing it '
      'and downloading it again',
      final,
      prefix,
    )
    os.remove(final)
  fd, tmp = _partial_file(final, cache_dir, hint)
  try:
    with os.fdopen(fd, 'wb') as out:
      try:
        digest = _fetch(url, out, name, progress)
      except _Failure as e:
        raise WeightsUnavailableError(f'cannot download {label}: {e}.\n{hint}') from e
      out.flush()
      os.fsync(out.fileno())
    if prefix is not None and not digest.startswith(prefix):
      raise WeightsUnavailableError(
        f'checksum mismatch for {label}: the name expects a SHA-256 starting with {prefix}, '
        f'the downloaded file has {digest}.\n{hint}'
      )
    os.replace(tmp, final)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return final


def _from_bucket(ref: str, cache_dir: str, field: str) -> str:
  """The cached local copy of the object `ref` (copied when missing or of another size)."""
  hint = _offline_hint(field, storage.basename(ref) or 'weights.pth')
  try:
    if not storage.isfile(ref):
      raise WeightsUnavailableError(f'weights object {ref} does not exist; check the path.\n{hint}')
    size = storage.size(ref)
  except WeightsUnavailableError:
    raise
  except Exception as e:  # the bucket's client: no credentials, no network, no permission
    raise WeightsUnavailableError(f'cannot read {ref}: {e}.\n{hint}') from e
  final = os.path.join(cache_dir, 'gs', *ref.split('://', 1)[1].split('/'))
  if os.path.isfile(final) and os.path.getsize(final) == size:
    return final
  fd, tmp = _partial_file(final, cache_dir, hint)
  os.close(fd)
  try:
    storage.copy_to_local(ref, tmp)
    os.replace(tmp, final)
  except WeightsUnavailableError:
    raise
  except Exception as e:
    raise WeightsUnavailableError(f'cannot copy {ref}: {e}.\n{hint}') from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return final


def _local(path: str, field: str) -> str:
  if not os.path.exists(path):
    raise WeightsUnavailableError(
      f'weights file {path} does not exist; pass an existing file: '
      f'{_pass_file(field, os.path.basename(path) or "weights.pth")}'
    )
  if not os.path.isfile(path):
    raise WeightsUnavailableError(f'weights file {path} is not a regular file')
  return path


def resolve_weights(
  ref: str,
  *,
  cache_dir: str | None = None,
  progress: bool | None = None,
  field: str = 'init.resnet2d',
) -> str:
  """The local file that a weights reference names, downloading it first if needed.

  Args:
    ref: `torchvision://resnet50` (also resnet18/34/101/152; the files mmcv 1.6.1 loads),
      an `http(s)://` URL, a `gs://` object, a `file://` URL, or a local path.
    cache_dir: Where downloads go; default `$COST_JAX_CACHE`, else `~/.cache/cost_jax/weights`.
      A file already there is reused (after re-checking a hash prefix in its name).
    progress: True: a tqdm bar; False: silent; None: a bar if stderr is a terminal, else a few
      log lines for files of 8 MiB or more.
    field: The config field the reference came from, named in the offline hint of errors; an
      upper-case name is a notebook parameter (the hint then shows an assignment to it).

  Returns:
    The path of the local file.

  Raises:
    WeightsUnavailableError: Unknown name or scheme, missing local file, or a failed download
      (unreachable, HTTP error, connection dropped, checksum mismatch); the message names the
      URL or path, the reason and how to pass a local file instead.
  """
  scheme = ref.split('://', 1)[0].lower() if '://' in ref else ''
  if scheme == 'torchvision':
    model = ref.split('://', 1)[1].lower()
    if model not in TORCHVISION_FILES:
      raise WeightsUnavailableError(
        f'{ref}: unknown torchvision model {model!r}; known: {", ".join(TORCHVISION_FILES)}'
      )
    url = TORCHVISION_BASE_URL + TORCHVISION_FILES[model]
    return _download(url, f'{ref} ({url})', _cache_dir(cache_dir), progress, field)
  if scheme in ('http', 'https'):
    return _download(ref, ref, _cache_dir(cache_dir), progress, field)
  if scheme in storage.REMOTE_SCHEMES:
    return _from_bucket(ref, _cache_dir(cache_dir), field)
  if scheme == 'file':
    parsed = urllib.parse.urlparse(ref)
    if parsed.netloc not in ('', 'localhost'):
      raise WeightsUnavailableError(f'{ref}: file:// URL on another host ({parsed.netloc})')
    return _local(urllib.request.url2pathname(parsed.path), field)
  if scheme:
    raise WeightsUnavailableError(
      f'{ref}: unsupported scheme {scheme}://; use torchvision://, http(s)://, gs://, file:// '
      'or a local path'
    )
  return _local(os.path.expanduser(ref), field)
