"""Tests for cost_jax.weights.torch_pickle (safe .pth reader, no PyTorch)."""

import collections
import io
import os
import pickle
import sys
import tarfile
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest

from cost_jax.weights import torch_pickle
from cost_jax.weights.torch_pickle import (
  CheckpointFormatError,
  UnsafeCheckpointError,
  load_state_dict,
  load_torch_checkpoint,
)
from tests import fixtures

FIXTURES = fixtures.FIXTURES
ARCHS = fixtures.ARCHS
_STORAGE_NAMES = {
  np.dtype(np.float32): 'FloatStorage',
  np.dtype(np.float64): 'DoubleStorage',
  np.dtype(np.float16): 'HalfStorage',
  np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage',
  np.dtype(np.int64): 'LongStorage',
  np.dtype(np.int32): 'IntStorage',
  np.dtype(np.uint8): 'ByteStorage',
  np.dtype(np.bool_): 'BoolStorage',
}


# A miniature torch.save: the same zip layout and pickle globals, written with stand-in modules
# named `torch` / `torch._utils` so that the pickler emits the real global names.


class _Storage:
  def __init__(self, key, flat):
    self.key, self.flat = key, np.ascontiguousarray(flat).reshape(-1)


class _Tensor:
  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def __reduce__(self):
    utils = sys.modules['torch._utils']
    return (
      utils._rebuild_tensor_v2,
      (
        self.storage,
        self.offset,
        tuple(self.size),
        tuple(self.stride),
        False,
        collections.OrderedDict(),
      ),
    )


def _tensor(array, key):
  array = np.asarray(array)
  strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
  return _Tensor(_Storage(key, array), 0, array.shape, strides)


@pytest.fixture
def fake_torch(monkeypatch):
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('only pickled, never called')

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in set(_STORAGE_NAMES.values()):
    setattr(torch, name, type(name, (), {'__module__': 'torch'}))
  torch._utils = utils
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils)
  return torch


def _write_zip(path, data_pkl, records=(), byteorder='little', root='archive'):
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
    zf.writestr(f'{root}/data.pkl', data_pkl)
    zf.writestr(f'{root}/byteorder', byteorder)
    for key, raw in records:
      zf.writestr(f'{root}/data/{key}', raw)
    zf.writestr(f'{root}/version', '3\n')
  return str(path)


def _save(obj, path, byteorder='little'):
  """Writes `obj` like torch.save would (needs the fake_torch fixture for tensors)."""
  records = {}
  torch = sys.modules['torch']

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      if not isinstance(o, _Storage):
        return None
      swapped = o.flat.byteswap() if byteorder != sys.byteorder else o.flat
      records[o.key] = swapped.tobytes()
      storage_type = getattr(torch, _STORAGE_NAMES[o.flat.dtype])
      return ('storage', storage_type, o.key, 'cpu', o.flat.size)

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump(obj)
  return _write_zip(path, buf.getvalue(), sorted(records.items()), byteorder)


# The reference checkpoints written by the real torch.save.


@pytest.mark.parametrize('arch', ARCHS)
def test_reference_checkpoints_read_completely(arch):
  state, meta = load_state_dict(f'{FIXTURES}/{arch}.pth')
  counts = fixtures.load_json('manifest.json')['archs'][arch]
  assert len(state) == counts['n_state_tensors']
  assert (
    sum(
      v.size
      for k, v in state.items()
      if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
    )
    == counts['n_params']
  )
  floats = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
  assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats.values())
  # BN running statistics after one train forward, recorded by MMAction2, start from these.
  bn_after = fixtures.io(arch)
  key = 'backbone.layer1.0.conv1.bn.num_batches_tracked'
  assert bn_after[f'train_bn_after:{key}'] == state[key] + 1
  nbt = state['backbone.conv1.bn.num_batches_tracked']
  assert nbt.dtype == np.int64 and nbt.shape == ()
  assert all(v.flags.c_contiguous and v.flags.writeable for v in state.values())
  assert meta['arch'] == arch and meta['mmaction2_version'] == '0.24.1'
  assert 'ResNet3dCoST' in meta['config']


def test_raw_checkpoint_object_and_metadata():
  obj = load_torch_checkpoint(f'{FIXTURES}/costb.pth')
  assert list(obj) == ['meta', 'state_dict']
  sd = obj['state_dict']
  assert isinstance(sd, collections.OrderedDict)
  assert sd._metadata['backbone.layer2.0.conv2.conv'] == {'version': 1}
  assert sd['backbone.layer2.0.conv2.conv.fc2.weight'].shape == (3, 3)


def test_torchvision_state_dict_without_wrapper():
  state, meta = load_state_dict(f'{FIXTURES}/resnet2d_tv.pth')
  assert meta == {}
  assert len(state) == 320 and list(state)[:2] == ['conv1.weight', 'bn1.weight']
  assert state['fc.weight'].shape == (10, 256)
  # mmaction2 copied the stem (kt = 1) and its BN unchanged when inflating into c2d.
  _, inflated = fixtures.inflation('c2d')
  np.testing.assert_array_equal(inflated['conv1.conv.weight'][:, :, 0], state['conv1.weight'])
  np.testing.assert_array_equal(inflated['conv1.bn.running_var'], state['bn1.running_var'])


# Broken files.


@pytest.mark.parametrize('keep', [0.5, -40])
def test_truncated_checkpoint(tmp_path, keep):
  data = open(f'{FIXTURES}/c2d.pth', 'rb').read()
  path = tmp_path / 'cut.pth'
  path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
  with pytest.raises(CheckpointFormatError, match='cut.pth'):
    load_state_dict(path)


def test_random_bytes_and_legacy_format(tmp_path):
  noise = tmp_path / 'noise.pth'
  noise.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(CheckpointFormatError, match='noise.pth.*not a zip'):
    load_torch_checkpoint(noise)
  legacy = tmp_path / 'legacy.pth'
  legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b'rest')
  # The legacy format is read now: past the magic number, the header is cut short.
  with pytest.raises(CheckpointFormatError, match='legacy.pth.*protocol version.*truncated'):
    load_torch_checkpoint(legacy)


def test_zip_without_data_pkl(tmp_path):
  path = tmp_path / 'nopkl.pth'
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/version', '3\n')
  with pytest.raises(CheckpointFormatError, match='nopkl.pth.*data.pkl'):
    load_torch_checkpoint(path)


def test_missing_and_short_data_records(tmp_path, fake_torch):
  path = _save({'w': _tensor(np.ones(6, np.float32), '0')}, tmp_path / 'a.pth')
  with zipfile.ZipFile(path) as zf:
    pkl = zf.read('archive/data.pkl')
  missing = _write_zip(tmp_path / 'missing.pth', pkl)
  with pytest.raises(CheckpointFormatError, match='missing.pth.*archive/data/0'):
    load_torch_checkpoint(missing)
  short = _write_zip(tmp_path / 'short.pth', pkl, [('0', b'\0' * 20)])
  with pytest.raises(CheckpointFormatError, match='short.pth.*20 bytes'):
    load_torch_checkpoint(short)


# Hostile pickles: nothing may run.


def _global(module, name):
  return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _stack_global(module, name):
  def unicode(s):
    return b'\x8c' + bytes([len(s)]) + s.encode()

  return unicode(module) + unicode(name) + b'\x93'


def _str(s):
  raw = s.encode()
  return b'X' + len(raw).to_bytes(4, 'little') + raw


def _call(func, *args):
  """Opcodes for func(*args) with string arguments, wrapped in a dict as a state_dict value."""
  return b'\x80\x04}' + _str('state_dict') + func + b'(' + b''.join(args) + b'tR' + b's.'


def _payloads(marker):
  cmd = f'touch {marker}'
  code = f"open({str(marker)!r}, 'w').close()"
  return {
    'os.system': _call(_global('os', 'system'), _str(cmd)),
    'posix.system': _call(_global('posix', 'system'), _str(cmd)),
    'builtins.eval': _call(_stack_global('builtins', 'eval'), _str(code)),
    '__builtin__.exec': _call(_global('__builtin__', 'exec'), _str(code)),
    'subprocess.Popen': _call(
      _global('subprocess', 'Popen'), b'](' + _str('touch') + _str(str(marker)) + b'e'
    ),
  }


def test_payload_is_live_under_plain_pickle(tmp_path):
  marker = tmp_path / 'pwned'
  pickle.loads(_payloads(marker)['builtins.eval'])  # Control: the stock unpickler runs it.
  assert marker.exists()


@pytest.mark.parametrize(
  'name', ['os.system', 'posix.system', 'builtins.eval', '__builtin__.exec', 'subprocess.Popen']
)
def test_malicious_pickle_is_refused(tmp_path, name):
  marker = tmp_path / 'pwned'
  path = _write_zip(tmp_path / 'evil.pth', _payloads(marker)[name])
  with pytest.raises(UnsafeCheckpointError, match=f'evil.pth.*{name}'):
    load_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize(
  'module,name',
  [
    ('torch', 'load'),
    ('torch._utils', '_rebuild_qtensor'),
    ('torch._tensor', '_rebuild_from_type_v2'),
    ('torch.serialization', '_get_layout'),
    ('copyreg', '_reconstructor'),
    ('numpy.core.multiarray', '_reconstruct'),
  ],
)
def test_unknown_globals_are_refused(tmp_path, module, name):
  path = _write_zip(tmp_path / 'unknown.pth', _call(_global(module, name)))
  with pytest.raises(UnsafeCheckpointError, match=f'unknown.pth.*{module}.{name}'):
    load_torch_checkpoint(path)


@pytest.mark.parametrize(
  'target',
  [
    _global('torch._utils', '_rebuild_tensor_v2'),  # Would set attributes on a stand-in.
    _global('torch', 'FloatStorage'),
    _global('collections', 'OrderedDict') + b')R',  # Only _metadata may be set.
  ],
)
def test_build_opcode_is_refused(tmp_path, target):
  pkl = b'\x80\x02' + target + b'}' + _str('__class__') + b'Ns' + b'b.'
  path = _write_zip(tmp_path / 'build.pth', pkl)
  with pytest.raises(UnsafeCheckpointError, match='build.pth.*BUILD'):
    load_torch_checkpoint(path)
  rebuild = torch_pickle._ALLOWED_GLOBALS['torch._utils', '_rebuild_tensor_v2']
  assert not hasattr(rebuild, '__dict__')


# Crafted but legitimate checkpoints.


def test_strided_offset_and_shared_storage_views(tmp_path, fake_torch):
  flat = np.arange(24, dtype=np.float32)
  storage = _Storage('0', flat)
  obj = {
    'transposed': _Tensor(storage, 3, (3, 2), (1, 3)),
    'offset_rows': _Tensor(storage, 10, (2, 4), (6, 1)),
    'expanded': _Tensor(storage, 5, (3, 4), (0, 1)),
    'empty': _Tensor(storage, 0, (0, 7), (7, 1)),
  }
  got = load_torch_checkpoint(_save(obj, tmp_path / 'views.pth'))
  np.testing.assert_array_equal(got['transposed'], flat[3:9].reshape(2, 3).T)
  np.testing.assert_array_equal(got['offset_rows'], flat[10:22].reshape(2, 6)[:, :4])
  np.testing.assert_array_equal(got['expanded'], np.broadcast_to(flat[5:9], (3, 4)))
  assert got['empty'].shape == (0, 7)
  assert all(v.flags.c_contiguous and v.flags.owndata for v in got.values())
  got['expanded'][0, 0] = -1  # Copies: views of one storage do not alias each other.
  assert got['expanded'][1, 0] == 5 and got['transposed'][2, 0] == 5


def test_view_past_the_storage_is_refused(tmp_path, fake_torch):
  storage = _Storage('0', np.zeros(10, np.float32))
  path = _save({'w': _Tensor(storage, 4, (2, 4), (4, 1))}, tmp_path / 'oob.pth')
  with pytest.raises(CheckpointFormatError, match='oob.pth.*element 11'):
    load_torch_checkpoint(path)


@pytest.mark.parametrize('byteorder', ['little', 'big'])
def test_dtypes_and_byte_order(tmp_path, fake_torch, byteorder):
  rng = np.random.default_rng(1)
  arrays = {
    'f32': rng.normal(size=(2, 3)).astype(np.float32),
    'f64': rng.normal(size=(4,)),
    'f16': rng.normal(size=(3, 1)).astype(np.float16),
    'bf16': rng.normal(size=(5,)).astype(ml_dtypes.bfloat16),
    'i64': np.array(123456789012, np.int64),
    'i32': np.array([-7, 8], np.int32),
    'u8': np.array([0, 255], np.uint8),
    'bool': np.array([True, False, True]),
  }
  obj = {k: _tensor(v, str(i)) for i, (k, v) in enumerate(arrays.items())}
  got = load_torch_checkpoint(_save(obj, tmp_path / 'dtypes.pth', byteorder))
  for key, want in arrays.items():
    assert got[key].dtype == want.dtype and got[key].dtype.isnative, key
    np.testing.assert_array_equal(got[key], want, err_msg=key)


def test_meta_with_plain_data_and_numpy_scalars(tmp_path, fake_torch):
  meta = {
    'best_score': np.float64(0.75),
    'iter': np.int64(3),
    'blob': b'\x00\xffxy',
    'empty': b'',
    'tags': {'a', 'b'},
    'frozen': frozenset([1]),
    'z': 1 + 2j,
    'nested': [1, (2.5, None, True)],
    'text': 'é',
  }
  obj = {'meta': meta, 'state_dict': {'w': _tensor(np.ones(2, np.float32), '0')}}
  state, got = load_state_dict(_save(obj, tmp_path / 'meta.pth'))
  assert got == meta
  assert type(got['best_score']) is np.float64 and type(got['iter']) is np.int64
  assert list(state) == ['w']


def test_numpy_object_dtype_is_refused(tmp_path):
  pkl = pickle.dumps({'meta': {'x': np.dtype(object)}}, protocol=2)
  path = _write_zip(tmp_path / 'obj.pth', pkl)
  with pytest.raises(UnsafeCheckpointError, match="obj.pth.*dtype 'O"):
    load_torch_checkpoint(path)


def test_module_prefix_is_stripped(tmp_path, fake_torch):
  obj = {
    'state_dict': collections.OrderedDict(
      [
        ('module.conv.weight', _tensor(np.ones((2, 2), np.float32), '0')),
        ('module.bn.num_batches_tracked', _tensor(np.array(4, np.int64), '1')),
        ('head.module.fc', _tensor(np.zeros(3, np.float32), '2')),
      ]
    )
  }
  state, meta = load_state_dict(_save(obj, tmp_path / 'ddp.pth'))
  assert list(state) == ['conv.weight', 'bn.num_batches_tracked', 'head.module.fc']
  assert meta == {} and state['bn.num_batches_tracked'] == 4
  clash = {
    'a.b': _tensor(np.ones(1, np.float32), '0'),
    'module.a.b': _tensor(np.ones(1, np.float32), '1'),
  }
  with pytest.raises(CheckpointFormatError, match='clash.pth.*collides'):
    load_state_dict(_save(clash, tmp_path / 'clash.pth'))


def test_non_tensor_state_dict_is_rejected(tmp_path, fake_torch):
  obj = {'state_dict': {'w': _tensor(np.ones(1, np.float32), '0'), 'step': 3}}
  with pytest.raises(CheckpointFormatError, match="bad.pth.*'step'"):
    load_state_dict(_save(obj, tmp_path / 'bad.pth'))
  with pytest.raises(CheckpointFormatError, match='list.pth.*list'):
    load_state_dict(_save([1, 2], tmp_path / 'list.pth'))


# .npz state dicts.


def test_npz_round_trip(tmp_path):
  state, _ = load_state_dict(f'{FIXTURES}/costa.pth')
  path = tmp_path / 'costa.npz'
  np.savez(path, **{'module.' + k: v for k, v in state.items()})
  again, meta = load_state_dict(path)
  assert meta == {} and list(again) == list(state)
  for key, value in state.items():
    assert again[key].dtype == value.dtype
    np.testing.assert_array_equal(again[key], value)


def test_bad_npz(tmp_path):
  pickled = tmp_path / 'objects.npz'
  np.savez(pickled, w=np.array([{'a': 1}], dtype=object))
  with pytest.raises(CheckpointFormatError, match='objects.npz'):
    load_state_dict(pickled)
  noise = tmp_path / 'noise.npz'
  noise.write_bytes(b'PK\x03\x04' + os.urandom(64))
  with pytest.raises(CheckpointFormatError, match='noise.npz'):
    load_state_dict(noise)


# The legacy (pre-1.6) torch.save format: header pickles, object pickle, key list, raw storages.

TORCH_FORMATS = os.path.join(os.path.dirname(__file__), 'testdata', 'torch_formats')
_MAGIC = 0x1950A86A20F9469CFC6C


class _View:
  """A legacy storage view: `size` elements of `root` from element `offset` on."""

  def __init__(self, key, root, offset, size):
    self.key, self.root, self.offset, self.size = key, root, offset, size


def _sys_info(little_endian=True):
  return {
    'protocol_version': 1001,
    'little_endian': little_endian,
    'type_sizes': {'short': 2, 'int': 4, 'long': 4},
  }


def _header(magic=_MAGIC, protocol=1001, sys_info=None):
  return b''.join(
    pickle.dumps(x, protocol=2)
    for x in (magic, protocol, _sys_info() if sys_info is None else sys_info)
  )


def _save_legacy(obj, path, keys=None, **header):
  """Writes `obj` like torch.save(..., _use_new_zipfile_serialization=False) would.

  Returns the path and the offsets where the sections start.
  """
  torch = sys.modules['torch']
  roots = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      if not isinstance(o, (_Storage, _View)):
        return None
      root = o.root if isinstance(o, _View) else o
      roots[root.key] = root
      view = (o.key, o.offset, o.size) if isinstance(o, _View) else None
      storage_type = getattr(torch, _STORAGE_NAMES[root.flat.dtype])
      return ('storage', storage_type, root.key, 'cpu', root.flat.size, view)

  marks = {}
  buf = io.BytesIO()
  buf.write(_header(**header))
  marks['object'] = buf.tell()
  Pickler(buf, protocol=2).dump(obj)
  marks['keys'] = buf.tell()
  keys = sorted(roots) if keys is None else keys
  pickle.dump(keys, buf, protocol=2)
  marks['data'] = buf.tell()
  for key in (k for k in keys if k in roots):  # Keys the pickle does not use get no data.
    flat = roots[key].flat
    buf.write(flat.size.to_bytes(8, 'little'))
    buf.write((flat.byteswap() if sys.byteorder != 'little' else flat).tobytes())
  path.write_bytes(buf.getvalue())
  return str(path), marks


def _mmaction2_checkpoint():
  """{'meta': ..., 'state_dict': OrderedDict with _metadata}, as mmcv's save_checkpoint writes."""
  rng = np.random.default_rng(2)
  arrays = collections.OrderedDict(
    [
      ('backbone.conv1.conv.weight', rng.normal(size=(4, 3, 1, 3, 3)).astype(np.float32)),
      ('backbone.conv1.bn.running_var', rng.uniform(size=4).astype(np.float32)),
      ('backbone.conv1.bn.num_batches_tracked', np.array(7, np.int64)),
      ('cls_head.fc_cls.bias', rng.normal(size=(5,)).astype(np.float16)),
    ]
  )
  state = collections.OrderedDict(
    (k, _tensor(v, str(100 + i))) for i, (k, v) in enumerate(arrays.items())
  )
  state._metadata = collections.OrderedDict([('', {'version': 1}), ('backbone', {'version': 1})])
  meta = {
    'mmaction2_version': '0.24.1',
    'epoch': 4,
    'config': 'model = dict(...)',
    'CLASSES': ('a', 'b'),
  }
  return {'meta': meta, 'state_dict': state}, arrays


def test_legacy_dtypes(tmp_path, fake_torch):
  rng = np.random.default_rng(1)
  arrays = {
    'f32': rng.normal(size=(2, 3)).astype(np.float32),
    'f64': rng.normal(size=(4,)),
    'f16': rng.normal(size=(3, 1)).astype(np.float16),
    'bf16': rng.normal(size=(5,)).astype(ml_dtypes.bfloat16),
    'i64': np.array(123456789012, np.int64),
    'i32': np.array([-7, 8], np.int32),
    'u8': np.array([0, 255], np.uint8),
    'bool': np.array([True, False, True]),
    'empty': np.zeros((0, 3), np.float32),
  }
  obj = {k: _tensor(v, str(i)) for i, (k, v) in enumerate(arrays.items())}
  path, _ = _save_legacy(obj, tmp_path / 'dtypes.pth')
  got = load_torch_checkpoint(path)
  assert list(got) == list(arrays)
  for key, want in arrays.items():
    assert got[key].dtype == want.dtype and got[key].dtype.isnative, key
    assert got[key].shape == want.shape, key
    np.testing.assert_array_equal(got[key], want, err_msg=key)
  assert all(v.flags.c_contiguous and v.flags.writeable for v in got.values())


def test_legacy_views_share_one_storage(tmp_path, fake_torch):
  flat = np.arange(24, dtype=np.float32)
  root = _Storage('0', flat)
  window = _View('1', root, 4, 12)  # Old torch saved storage views (offset 4, 12 elements).
  obj = {
    'transposed': _Tensor(root, 3, (3, 2), (1, 3)),
    'offset_rows': _Tensor(root, 10, (2, 4), (6, 1)),
    'expanded': _Tensor(root, 5, (3, 4), (0, 1)),
    'whole': _Tensor(root, 0, (4, 6), (6, 1)),
    'in_view': _Tensor(window, 2, (2, 3), (3, 1)),
    'view_again': _Tensor(window, 0, (12,), (1,)),
  }
  path, _ = _save_legacy(obj, tmp_path / 'views.pth')
  with open(path, 'rb') as f:
    assert f.read().count(flat.tobytes()) == 1  # One storage record serves all six tensors.
  got = load_torch_checkpoint(path)
  np.testing.assert_array_equal(got['transposed'], flat[3:9].reshape(2, 3).T)
  np.testing.assert_array_equal(got['offset_rows'], flat[10:22].reshape(2, 6)[:, :4])
  np.testing.assert_array_equal(got['expanded'], np.broadcast_to(flat[5:9], (3, 4)))
  np.testing.assert_array_equal(got['whole'], flat.reshape(4, 6))
  np.testing.assert_array_equal(got['in_view'], flat[6:12].reshape(2, 3))
  np.testing.assert_array_equal(got['view_again'], flat[4:16])
  assert all(v.flags.c_contiguous and v.flags.owndata for v in got.values())
  got['whole'][0, 5] = -1  # Copies: views of one storage do not alias each other.
  assert got['transposed'][2, 0] == 5 and got['in_view'][0, 0] == 6


def test_legacy_mmaction2_checkpoint(tmp_path, fake_torch):
  obj, arrays = _mmaction2_checkpoint()
  path, _ = _save_legacy(obj, tmp_path / 'mma.pth')
  raw = load_torch_checkpoint(path)
  assert list(raw) == ['meta', 'state_dict'] and raw['meta'] == obj['meta']
  assert isinstance(raw['state_dict'], collections.OrderedDict)
  assert raw['state_dict']._metadata == {'': {'version': 1}, 'backbone': {'version': 1}}
  state, meta = load_state_dict(path)
  assert meta == obj['meta'] and list(state) == list(arrays)
  for key, want in arrays.items():
    assert state[key].dtype == want.dtype and state[key].shape == want.shape, key
    np.testing.assert_array_equal(state[key], want, err_msg=key)


@pytest.mark.parametrize('name', ['legacy.pth', 'zip.pth'])
def test_real_torch_files_match_expected(name):
  """Written by torch 2.13.0 (testdata/torch_formats/generate.py), legacy and zip format."""
  obj = load_torch_checkpoint(os.path.join(TORCH_FORMATS, name))
  assert obj['meta'] == {'mmaction2_version': '0.24.1', 'epoch': 3, 'note': 'torch_formats fixture'}
  state = obj['state_dict']
  assert isinstance(state, collections.OrderedDict)
  assert dict(state._metadata) == {'': {'version': 1}, '0': {'version': 1}, '1': {'version': 2}}
  with np.load(os.path.join(TORCH_FORMATS, 'expected.npz')) as want:
    assert list(state) == want.files
    for key in want.files:
      assert state[key].dtype == want[key].dtype, key
      assert state[key].shape == want[key].shape, key
      np.testing.assert_array_equal(state[key], want[key], err_msg=key)
  assert state['0.weight'].shape == (4, 3, 3, 3) and state['0.weight'].dtype == np.float32
  np.testing.assert_array_equal(state['extra.view'], state['extra.base'][1:, ::2])
  assert state['1.num_batches_tracked'].dtype == np.int64
  assert state['1.num_batches_tracked'].shape == ()
  assert state['extra.half'].dtype == np.float16


def test_real_legacy_and_zip_agree():
  legacy, meta_legacy = load_state_dict(os.path.join(TORCH_FORMATS, 'legacy.pth'))
  zipped, meta_zip = load_state_dict(os.path.join(TORCH_FORMATS, 'zip.pth'))
  assert meta_legacy == meta_zip and list(legacy) == list(zipped)
  for key, value in legacy.items():
    assert value.dtype == zipped[key].dtype
    np.testing.assert_array_equal(value, zipped[key], err_msg=key)


@pytest.mark.parametrize(
  'section,delta',
  [
    ('start', 5),
    ('start', 16),
    ('start', 30),
    ('object', 0),
    ('object', 40),
    ('keys', 0),
    ('keys', 4),
    ('data', 0),
    ('data', 5),
    ('data', 8),
    ('data', 11),
    ('end', -1),
  ],
)
def test_legacy_truncated(tmp_path, fake_torch, section, delta):
  obj, _ = _mmaction2_checkpoint()
  path, marks = _save_legacy(obj, tmp_path / 'full.pth')
  data = open(path, 'rb').read()
  marks.update(start=0, end=len(data))
  cut = tmp_path / 'cut.pth'
  cut.write_bytes(data[: marks[section] + delta])
  with pytest.raises(CheckpointFormatError, match='cut.pth: .*truncated'):
    load_torch_checkpoint(cut)
  empty = tmp_path / 'empty.pth'
  empty.write_bytes(b'')
  with pytest.raises(CheckpointFormatError, match='empty.pth: empty file'):
    load_torch_checkpoint(empty)


@pytest.mark.parametrize(
  'header,message',
  [
    ({'magic': 0x1950A86A20F9469CFC6D}, 'not a zip.*wrong magic number 0x1950a86a20f9469cfc6d'),
    ({'magic': 'hello'}, "wrong magic number 'hello'"),
    ({'protocol': 1000}, 'unknown legacy protocol version 1000 \\(expected 1001\\)'),
    ({'sys_info': {'protocol_version': 1001}}, 'bad sys_info.*little_endian'),
    ({'sys_info': _sys_info(little_endian=False)}, 'big-endian'),
  ],
)
def test_legacy_bad_header(tmp_path, fake_torch, header, message):
  path, _ = _save_legacy(
    {'w': _tensor(np.ones(2, np.float32), '0')}, tmp_path / 'bad.pth', **header
  )
  with pytest.raises(CheckpointFormatError, match=f'bad.pth: .*{message}'):
    load_torch_checkpoint(path)


def test_legacy_storage_keys_and_sizes(tmp_path, fake_torch):
  obj = {'a': _tensor(np.ones(6, np.float32), '7'), 'b': _tensor(np.zeros(2, np.int64), '8')}
  path, _ = _save_legacy(obj, tmp_path / 'nokey.pth', keys=['7'])
  with pytest.raises(CheckpointFormatError, match="nokey.pth: storage key '8'.*missing"):
    load_torch_checkpoint(path)
  path, marks = _save_legacy(obj, tmp_path / 'count.pth')
  data = bytearray(open(path, 'rb').read())
  data[marks['data'] : marks['data'] + 8] = (5).to_bytes(8, 'little')  # Storage '7' says 5, not 6.
  (tmp_path / 'count.pth').write_bytes(bytes(data))
  with pytest.raises(CheckpointFormatError, match='count.pth: storage 7 has 5 elements'):
    load_torch_checkpoint(path)
  path, _ = _save_legacy(obj, tmp_path / 'extra.pth', keys=['7', '8', '9'])
  with pytest.raises(CheckpointFormatError, match="extra.pth: storage key '9' is listed"):
    load_torch_checkpoint(path)


def test_legacy_out_of_bounds_views(tmp_path, fake_torch):
  root = _Storage('0', np.zeros(10, np.float32))
  path, _ = _save_legacy({'w': _Tensor(root, 4, (2, 4), (4, 1))}, tmp_path / 'oob.pth')
  with pytest.raises(CheckpointFormatError, match='oob.pth: .*element 11 of storage 0'):
    load_torch_checkpoint(path)
  window = _View('1', root, 6, 5)  # Elements 6..10 of a 10-element storage.
  path, _ = _save_legacy({'w': _Tensor(window, 0, (2,), (1,))}, tmp_path / 'view.pth')
  with pytest.raises(CheckpointFormatError, match='view.pth: storage view 1 .*runs past'):
    load_torch_checkpoint(path)
  window = _View('1', root, 2, 4)
  path, _ = _save_legacy({'w': _Tensor(window, 1, (4,), (1,))}, tmp_path / 'inview.pth')
  with pytest.raises(CheckpointFormatError, match='inview.pth: .*element 4 of storage 1'):
    load_torch_checkpoint(path)


def _legacy_file(tmp_path, name, header=None, obj_pkl=None, keys_pkl=None):
  obj_pkl = pickle.dumps({'meta': {}}, protocol=2) if obj_pkl is None else obj_pkl
  keys_pkl = pickle.dumps([], protocol=2) if keys_pkl is None else keys_pkl
  path = tmp_path / name
  path.write_bytes((_header() if header is None else header) + obj_pkl + keys_pkl)
  return path


@pytest.mark.parametrize(
  'name', ['os.system', 'posix.system', 'builtins.eval', '__builtin__.exec', 'subprocess.Popen']
)
@pytest.mark.parametrize('where', ['magic', 'sys_info', 'object', 'keys'])
def test_legacy_malicious_pickles_are_refused(tmp_path, name, where):
  marker = tmp_path / 'pwned'
  evil = _payloads(marker)[name]
  magic, protocol = pickle.dumps(_MAGIC, protocol=2), pickle.dumps(1001, protocol=2)
  info = pickle.dumps(_sys_info(), protocol=2)
  parts = {
    'magic': {'header': evil + protocol + info},
    'sys_info': {'header': magic + protocol + evil},
    'object': {'obj_pkl': evil},
    'keys': {'keys_pkl': evil},
  }[where]
  path = _legacy_file(tmp_path, 'evil.pth', **parts)
  with pytest.raises(UnsafeCheckpointError, match=f'evil.pth: .*{name}'):
    load_state_dict(path)
  assert not marker.exists()


def test_legacy_header_takes_plain_values_only(tmp_path):
  # OrderedDict is fine in the object pickle but not in a header pickle.
  info = collections.OrderedDict(_sys_info())
  header = (
    pickle.dumps(_MAGIC, protocol=2)
    + pickle.dumps(1001, protocol=2)
    + pickle.dumps(info, protocol=2)
  )
  path = _legacy_file(tmp_path, 'od.pth', header=header)
  with pytest.raises(UnsafeCheckpointError, match='od.pth: .*collections.OrderedDict'):
    load_torch_checkpoint(path)
  persid = _legacy_file(tmp_path, 'persid.pth', keys_pkl=b'\x80\x02K\x01Q.')
  with pytest.raises(CheckpointFormatError, match='persid.pth: persistent id 1'):
    load_torch_checkpoint(persid)


@pytest.mark.parametrize(
  'target',
  [
    _global('torch._utils', '_rebuild_tensor_v2'),
    _global('collections', 'OrderedDict') + b')R',
  ],
)
def test_legacy_build_opcode_is_refused(tmp_path, target):
  pkl = b'\x80\x02' + target + b'}' + _str('__class__') + b'Ns' + b'b.'
  path = _legacy_file(tmp_path, 'build.pth', obj_pkl=pkl)
  with pytest.raises(UnsafeCheckpointError, match='build.pth: .*BUILD'):
    load_torch_checkpoint(path)


def test_legacy_cuda_storage_type(tmp_path, fake_torch, monkeypatch):
  # Old legacy files may name the storage type of CUDA tensors torch.cuda.FloatStorage.
  cuda = types.ModuleType('torch.cuda')
  cuda.FloatStorage = type('FloatStorage', (), {'__module__': 'torch.cuda'})
  monkeypatch.setitem(sys.modules, 'torch.cuda', cuda)
  monkeypatch.setattr(fake_torch, 'FloatStorage', cuda.FloatStorage)
  path, _ = _save_legacy({'m': _tensor(np.arange(3, dtype=np.float32), '0')}, tmp_path / 'c.pth')
  assert b'torch.cuda\nFloatStorage' in open(path, 'rb').read()
  np.testing.assert_array_equal(load_torch_checkpoint(path)['m'], [0, 1, 2])


def test_tar_format_is_refused(tmp_path):
  path = tmp_path / 'old.pth'
  with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
    for name in ('storages', 'tensors', 'pickle'):
      info = tarfile.TarInfo(name)
      info.size = 4
      tar.addfile(info, io.BytesIO(b'\x80\x02N.'))
  with pytest.raises(CheckpointFormatError, match='old.pth: the oldest, tar-based torch.save'):
    load_torch_checkpoint(path)
