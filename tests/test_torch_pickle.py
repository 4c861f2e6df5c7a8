"""Tests for cost_jax.weights.torch_pickle (safe .pth reader, no PyTorch)."""

import collections
import io
import os
import pickle
import sys
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest

from cost_jax.weights import torch_pickle
from cost_jax.weights.torch_pickle import CheckpointFormatError
from cost_jax.weights.torch_pickle import UnsafeCheckpointError
from cost_jax.weights.torch_pickle import load_state_dict
from cost_jax.weights.torch_pickle import load_torch_checkpoint

FIXTURES = '/work/shared/fixtures/mmaction2'
ARCHS = ('c2d', 'i3d', 'costa', 'costb')
_STORAGE_NAMES = {
    np.dtype(np.float32): 'FloatStorage', np.dtype(np.float64): 'DoubleStorage',
    np.dtype(np.float16): 'HalfStorage', np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage',
    np.dtype(np.int64): 'LongStorage', np.dtype(np.int32): 'IntStorage',
    np.dtype(np.uint8): 'ByteStorage', np.dtype(np.bool_): 'BoolStorage',
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
    return (utils._rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size),
                                       tuple(self.stride), False, collections.OrderedDict()))


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
def test_fixture_matches_npz(arch):
  state, meta = load_state_dict(f'{FIXTURES}/{arch}.pth')
  with np.load(f'{FIXTURES}/{arch}_state.npz') as ref:
    assert list(state) == ref.files
    for key in ref.files:
      assert state[key].dtype == ref[key].dtype, key
      assert state[key].shape == ref[key].shape, key
      np.testing.assert_array_equal(state[key], ref[key], err_msg=key)
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
  with np.load(f'{FIXTURES}/c2d_inflated_backbone.npz') as inflated:
    np.testing.assert_array_equal(inflated['conv1.conv.weight'][:, :, 0], state['conv1.weight'])
    np.testing.assert_array_equal(inflated['conv1.bn.running_var'], state['bn1.running_var'])


# Broken files.

@pytest.mark.parametrize('keep', [0.5, -40])
def test_truncated_checkpoint(tmp_path, keep):
  data = open(f'{FIXTURES}/c2d.pth', 'rb').read()
  path = tmp_path / 'cut.pth'
  path.write_bytes(data[:int(len(data) * keep)] if keep > 0 else data[:keep])
  with pytest.raises(CheckpointFormatError, match='cut.pth'):
    load_state_dict(path)


def test_random_bytes_and_legacy_format(tmp_path):
  noise = tmp_path / 'noise.pth'
  noise.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(CheckpointFormatError, match='noise.pth.*not a zip'):
    load_torch_checkpoint(noise)
  legacy = tmp_path / 'legacy.pth'
  legacy.write_bytes(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + b'rest')
  with pytest.raises(CheckpointFormatError, match='legacy.pth.*legacy'):
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
  return (b'\x80\x04}' + _str('state_dict') + func + b'(' + b''.join(args) + b'tR' + b's.')


def _payloads(marker):
  cmd = f'touch {marker}'
  code = f"open({str(marker)!r}, 'w').close()"
  return {
      'os.system': _call(_global('os', 'system'), _str(cmd)),
      'posix.system': _call(_global('posix', 'system'), _str(cmd)),
      'builtins.eval': _call(_stack_global('builtins', 'eval'), _str(code)),
      '__builtin__.exec': _call(_global('__builtin__', 'exec'), _str(code)),
      'subprocess.Popen': _call(_global('subprocess', 'Popen'),
                                b'](' + _str('touch') + _str(str(marker)) + b'e'),
  }


def test_payload_is_live_under_plain_pickle(tmp_path):
  marker = tmp_path / 'pwned'
  pickle.loads(_payloads(marker)['builtins.eval'])  # Control: the stock unpickler runs it.
  assert marker.exists()


@pytest.mark.parametrize('name', ['os.system', 'posix.system', 'builtins.eval',
                                  '__builtin__.exec', 'subprocess.Popen'])
def test_malicious_pickle_is_refused(tmp_path, name):
  marker = tmp_path / 'pwned'
  path = _write_zip(tmp_path / 'evil.pth', _payloads(marker)[name])
  with pytest.raises(UnsafeCheckpointError, match=f'evil.pth.*{name}'):
    load_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize('module,name', [
    ('torch', 'load'), ('torch._utils', '_rebuild_qtensor'),
    ('torch._tensor', '_rebuild_from_type_v2'), ('torch.serialization', '_get_layout'),
    ('copyreg', '_reconstructor'), ('numpy.core.multiarray', '_reconstruct')])
def test_unknown_globals_are_refused(tmp_path, module, name):
  path = _write_zip(tmp_path / 'unknown.pth', _call(_global(module, name)))
  with pytest.raises(UnsafeCheckpointError, match=f'unknown.pth.*{module}.{name}'):
    load_torch_checkpoint(path)


@pytest.mark.parametrize('target', [
    _global('torch._utils', '_rebuild_tensor_v2'),  # Would set attributes on a stand-in.
    _global('torch', 'FloatStorage'),
    _global('collections', 'OrderedDict') + b')R',  # Only _metadata may be set.
])
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
  meta = {'best_score': np.float64(0.75), 'iter': np.int64(3), 'blob': b'\x00\xffxy',
          'empty': b'', 'tags': {'a', 'b'}, 'frozen': frozenset([1]), 'z': 1 + 2j,
          'nested': [1, (2.5, None, True)], 'text': 'é'}
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
  obj = {'state_dict': collections.OrderedDict([
      ('module.conv.weight', _tensor(np.ones((2, 2), np.float32), '0')),
      ('module.bn.num_batches_tracked', _tensor(np.array(4, np.int64), '1')),
      ('head.module.fc', _tensor(np.zeros(3, np.float32), '2'))])}
  state, meta = load_state_dict(_save(obj, tmp_path / 'ddp.pth'))
  assert list(state) == ['conv.weight', 'bn.num_batches_tracked', 'head.module.fc']
  assert meta == {} and state['bn.num_batches_tracked'] == 4
  clash = {'a.b': _tensor(np.ones(1, np.float32), '0'),
           'module.a.b': _tensor(np.ones(1, np.float32), '1')}
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
