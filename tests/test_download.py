"""Tests for cost_jax.weights.download against a local HTTP server (127.0.0.1 only)."""

import hashlib
import http.server
import logging
import os
import socket
import threading
import time

import pytest

from cost_jax.weights import download
from cost_jax.weights.download import WeightsUnavailableError, is_remote, resolve_weights
from cost_jax.weights.torch_pickle import load_state_dict

ZIP_PTH = os.path.join(os.path.dirname(__file__), 'testdata', 'torch_formats', 'zip.pth')
BODY = open(ZIP_PTH, 'rb').read()
SHA = hashlib.sha256(BODY).hexdigest()
GOOD = f'resnet50-{SHA[:8]}.pth'


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves `server.routes[path] = (body, content_length, stall_s)`; counts requests."""

  def do_GET(self):  # noqa: N802 (http.server's name)
    self.server.requests.append(self.path)
    route = self.server.routes.get(self.path)
    if route is None:
      self.send_error(404, 'Not Found')
      return
    body, length, stall_s = route
    self.send_response(200)
    self.send_header('Content-Type', 'application/octet-stream')
    self.send_header('Content-Length', str(length))
    self.end_headers()
    self.wfile.write(body)
    self.wfile.flush()
    time.sleep(stall_s)
    self.close_connection = True

  def log_message(self, *args):
    pass


@pytest.fixture
def server():
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  httpd.daemon_threads = True
  httpd.routes, httpd.requests = {}, []
  httpd.url = f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.routes[f'/models/{GOOD}'] = (BODY, len(BODY), 0)
  thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield httpd
  httpd.shutdown()
  httpd.server_close()


def _one_or_two_lines(e):
  message = str(e.value)
  assert message and message.count('\n') <= 1, message
  return message


def test_download_verifies_and_is_cached(server, tmp_path):
  url = f'{server.url}/models/{GOOD}'
  path = resolve_weights(url, cache_dir=str(tmp_path), progress=False)
  assert path == str(tmp_path / GOOD)
  assert open(path, 'rb').read() == BODY and os.listdir(tmp_path) == [GOOD]
  assert server.requests == [f'/models/{GOOD}']
  assert resolve_weights(url, cache_dir=str(tmp_path), progress=False) == path
  assert len(server.requests) == 1  # Second call: from the cache, no request.
  state, _ = load_state_dict(path)
  assert state['0.weight'].shape == (4, 3, 3, 3)


def test_cache_dir_from_environment(server, tmp_path, monkeypatch):
  monkeypatch.setenv('COST_JAX_CACHE', str(tmp_path / 'env_cache'))
  path = resolve_weights(f'{server.url}/models/{GOOD}', progress=False)
  assert path == str(tmp_path / 'env_cache' / GOOD)


def test_torchvision_reference(server, tmp_path, monkeypatch):
  monkeypatch.setattr(download, 'TORCHVISION_BASE_URL', f'{server.url}/models/')
  monkeypatch.setitem(download.TORCHVISION_FILES, 'resnet50', GOOD)
  path = resolve_weights('torchvision://ResNet50', cache_dir=str(tmp_path), progress=False)
  assert path == str(tmp_path / GOOD) and server.requests == [f'/models/{GOOD}']


def test_torchvision_table_is_mmcv_161():
  urls = {k: download.TORCHVISION_BASE_URL + v for k, v in download.TORCHVISION_FILES.items()}
  assert urls == {
    'resnet18': 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
    'resnet34': 'https://download.pytorch.org/models/resnet34-b627a593.pth',
    'resnet50': 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    'resnet101': 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
    'resnet152': 'https://download.pytorch.org/models/resnet152-394f9c45.pth',
  }


def test_torchvision_file_name_and_checksum(server, tmp_path, monkeypatch):
  # The real table entry, served with other bytes: the request names the published file, and
  # its hash prefix rejects what came back.
  monkeypatch.setattr(download, 'TORCHVISION_BASE_URL', f'{server.url}/models/')
  server.routes['/models/resnet101-63fe2227.pth'] = (BODY, len(BODY), 0)
  with pytest.raises(WeightsUnavailableError) as e:
    resolve_weights('torchvision://resnet101', cache_dir=str(tmp_path), progress=False)
  message = _one_or_two_lines(e)
  assert server.requests == ['/models/resnet101-63fe2227.pth']
  assert 'torchvision://resnet101' in message and 'checksum mismatch' in message
  assert 'starting with 63fe2227' in message and SHA in message
  assert message.endswith(
    'download it elsewhere and pass the local file: '
    '--config.init.resnet2d=/path/to/resnet101-63fe2227.pth'
  )
  assert os.listdir(tmp_path) == []  # Nothing kept, under the final name or any other.


def test_wrong_checksum(server, tmp_path):
  server.routes['/w/model-deadbeef.pth'] = (BODY, len(BODY), 0)
  url = f'{server.url}/w/model-deadbeef.pth'
  with pytest.raises(WeightsUnavailableError) as e:
    resolve_weights(url, cache_dir=str(tmp_path), progress=False, field='init.mmaction2')
  message = _one_or_two_lines(e)
  assert url in message and 'deadbeef' in message and SHA in message
  assert '--config.init.mmaction2=/path/to/model-deadbeef.pth' in message
  assert os.listdir(tmp_path) == []


def test_name_without_hash_or_with_a_date_is_not_checked(server, tmp_path):
  for name in ('plain.pth', 'ckpt-20200614.pth'):
    server.routes[f'/{name}'] = (BODY, len(BODY), 0)
    path = resolve_weights(f'{server.url}/{name}', cache_dir=str(tmp_path), progress=False)
    assert open(path, 'rb').read() == BODY


def test_corrupt_cached_file_is_downloaded_again(server, tmp_path):
  (tmp_path / GOOD).write_bytes(b'garbage')
  path = resolve_weights(f'{server.url}/models/{GOOD}', cache_dir=str(tmp_path), progress=False)
  assert open(path, 'rb').read() == BODY and len(server.requests) == 1
  (tmp_path / 'nohash.pth').write_bytes(b'kept as is')  # No hash in the name: reused as is.
  path = resolve_weights(f'{server.url}/nohash.pth', cache_dir=str(tmp_path))
  assert open(path, 'rb').read() == b'kept as is' and len(server.requests) == 1


def test_connection_dropped_mid_file(server, tmp_path):
  half = len(BODY) // 2
  server.routes['/cut/resnet50-0676ba61.pth'] = (BODY[:half], len(BODY), 0)
  url = f'{server.url}/cut/resnet50-0676ba61.pth'
  with pytest.raises(WeightsUnavailableError) as e:
    resolve_weights(url, cache_dir=str(tmp_path), progress=False)
  message = _one_or_two_lines(e)
  assert url in message and 'connection dropped mid-file' in message
  assert f'received {half} of {len(BODY)} bytes' in message
  assert '--config.init.resnet2d=/path/to/resnet50-0676ba61.pth' in message
  assert os.listdir(tmp_path) == []


def test_stalled_connection_times_out(server, tmp_path, monkeypatch):
  monkeypatch.setattr(download, 'TIMEOUT_S', 0.3)
  server.routes['/slow.pth'] = (BODY[:100], len(BODY), 1.5)
  with pytest.raises(WeightsUnavailableError) as e:
    resolve_weights(f'{server.url}/slow.pth', cache_dir=str(tmp_path), progress=False)
  message = _one_or_two_lines(e)
  assert 'stalled for 0.3 s after 100 of' in message
  assert os.listdir(tmp_path) == []


def test_unreachable_server(tmp_path):
  with socket.socket() as s:  # A port on 127.0.0.1 that nothing listens on.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}/models/resnet50-0676ba61.pth'
  with pytest.raises(WeightsUnavailableError) as e:
    resolve_weights(url, cache_dir=str(tmp_path), progress=False)
  message = _one_or_two_lines(e)
  assert url in message and 'unreachable' in message and 'refused' in message.lower()
  assert isinstance(e.value, OSError)
  assert os.listdir(tmp_path) == []


def test_http_404(server, tmp_path):
  url = f'{server.url}/models/missing-0676ba61.pth'
  with pytest.raises(WeightsUnavailableError) as e:
    resolve_weights(url, cache_dir=str(tmp_path), progress=False)
  message = _one_or_two_lines(e)
  assert url in message and 'HTTP 404' in message
  assert '--config.init.resnet2d=/path/to/missing-0676ba61.pth' in message
  assert os.listdir(tmp_path) == []


def test_file_urls_and_local_paths(tmp_path):
  assert resolve_weights(ZIP_PTH) == ZIP_PTH
  assert resolve_weights('file://' + ZIP_PTH) == ZIP_PTH
  spaced = tmp_path / 'my weights.pth'
  spaced.write_bytes(b'x')
  assert resolve_weights('file://' + str(spaced).replace(' ', '%20')) == str(spaced)


def test_missing_local_path(tmp_path):
  missing = str(tmp_path / 'nope' / 'resnet50.pth')
  for ref in (missing, 'file://' + missing):
    with pytest.raises(WeightsUnavailableError) as e:
      resolve_weights(ref, field='init.mmaction2')
    message = _one_or_two_lines(e)
    assert f'{missing} does not exist' in message
    assert '--config.init.mmaction2=/path/to/resnet50.pth' in message
  with pytest.raises(WeightsUnavailableError, match='is not a regular file'):
    resolve_weights(str(tmp_path))


def test_unknown_model_and_scheme():
  with pytest.raises(
    WeightsUnavailableError, match="unknown torchvision model 'resnet5'.*resnet50"
  ):
    resolve_weights('torchvision://resnet5')
  with pytest.raises(WeightsUnavailableError, match='unsupported scheme s3://'):
    resolve_weights('s3://bucket/resnet50.pth')


def test_progress_reporting(server, tmp_path, monkeypatch, caplog, capsys):
  url = f'{server.url}/models/{GOOD}'
  resolve_weights(url, cache_dir=str(tmp_path / 'bar'), progress=True)
  assert GOOD in capsys.readouterr().err  # The tqdm bar.
  monkeypatch.setattr(download, '_LOG_MIN_BYTES', 0)
  with caplog.at_level(logging.INFO):
    resolve_weights(url, cache_dir=str(tmp_path / 'log'), progress=None)  # stderr: no terminal.
  assert f'downloading {GOOD}' in caplog.text
  assert not capsys.readouterr().err


def test_is_remote():
  assert is_remote('torchvision://resnet50') and is_remote('https://x/y.pth')
  assert is_remote('HTTP://x/y.pth')
  assert not is_remote('file:///tmp/y.pth') and not is_remote('/tmp/y.pth')
  assert not is_remote('relative/http://odd.pth')
  assert not is_remote('')
