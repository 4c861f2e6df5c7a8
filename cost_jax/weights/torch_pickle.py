"""Read PyTorch checkpoints (`torch.save` zip format) into numpy arrays, without PyTorch.

A `.pth` written by torch >= 1.6 is a zip archive `<name>/data.pkl` + `<name>/data/<key>` (one raw
storage per key) + `<name>/byteorder`. The pickle runs through a restricted unpickler: the few
globals a tensor checkpoint needs resolve to local stand-ins, everything else raises
`UnsafeCheckpointError`, so no code from the file ever runs. Stand-ins refuse the BUILD opcode,
except `OrderedDict`, which accepts torch's `_metadata` attribute and nothing else.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import sys
import zipfile
from typing import Any, Callable, Mapping

import ml_dtypes
import numpy as np

__all__ = ['CheckpointFormatError', 'UnsafeCheckpointError', 'load_state_dict',
           'load_torch_checkpoint']


class UnsafeCheckpointError(ValueError):
  """The checkpoint's pickle asks for a global or an operation outside the allow-list."""


class CheckpointFormatError(ValueError):
  """The file is not a well-formed checkpoint (truncated, not a zip, missing record, ...)."""


# Legacy typed-storage names as torch.save writes them -> numpy dtype of one element.
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'ComplexFloatStorage': np.complex64,
    'ComplexDoubleStorage': np.complex128, 'UntypedStorage': np.uint8,
}
_RECORD_KEY = re.compile(r'[A-Za-z0-9_.-]+')
_MODULE_PREFIX = re.compile(r'^module\.')


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _short(x: Any) -> str:
  text = repr(x)
  return text if len(text) <= 80 else text[:77] + '...'


class _Sealed:
  """Base of the stand-ins: no `__dict__`, and the pickle's BUILD opcode is refused."""
  __slots__ = ()

  def __setstate__(self, state: Any) -> None:
    raise UnsafeCheckpointError(f'BUILD (set state) on {self!r} is not allowed')


class _Callable(_Sealed):
  """An allow-listed global that the pickle may call (REDUCE); wraps a checked function."""
  __slots__ = ('name', 'fn')

  def __init__(self, name: str, fn: Callable[..., Any]):
    self.name, self.fn = name, fn

  def __call__(self, *args: Any) -> Any:
    return self.fn(*args)

  def __repr__(self) -> str:
    return self.name


class _StorageType(_Sealed):
  """Stand-in for `torch.FloatStorage` & co.: only names the element dtype."""
  __slots__ = ('name', 'dtype')

  def __init__(self, name: str, dtype: Any):
    self.name, self.dtype = name, np.dtype(dtype)

  def __repr__(self) -> str:
    return f'torch.{self.name}'


class _Storage(_Sealed):
  """One `data/<key>` record as a flat native-byte-order numpy array."""
  __slots__ = ('key', 'array')

  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, array

  def __repr__(self) -> str:
    return f'<storage {self.key} {self.array.dtype}[{self.array.size}]>'


class _DtypeSpec(_Sealed):
  """Stand-in for a pickled `numpy.dtype`; only plain numeric dtypes."""
  __slots__ = ('dtype',)

  def __init__(self, dtype: np.dtype):
    self.dtype = dtype

  def __setstate__(self, state: Any) -> None:
    # numpy pickles a dtype's state as (version, byteorder, subdtype, names, fields, ...).
    if (not isinstance(state, tuple) or len(state) < 5 or state[0] not in (3, 4)
        or state[1] not in ('<', '>', '|', '=') or any(s is not None for s in state[2:5])):
      raise UnsafeCheckpointError(f'unsupported numpy dtype state {_short(state)}')
    if state[1] in '<>':
      self.dtype = self.dtype.newbyteorder(state[1])

  def __repr__(self) -> str:
    return f'numpy.dtype({self.dtype.str!r})'


class _StateDict(collections.OrderedDict):
  """`collections.OrderedDict` that takes torch's `_metadata` attribute via BUILD, nothing else."""

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, dict) or set(state) - {'_metadata'}:
      raise UnsafeCheckpointError(
          f'BUILD on OrderedDict may only set _metadata, got {_short(state)}')
    if '_metadata' in state:
      self._metadata = state['_metadata']


def _check_hooks(hooks: Any) -> None:
  if not isinstance(hooks, dict) or hooks:
    raise UnsafeCheckpointError(f'tensor backward hooks are not supported: {_short(hooks)}')


def _tensor_view(storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
  """Copies the strided view `storage[offset:]` (torch semantics) into a new C-order array."""
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError(f'tensor storage is {_short(storage)}, not a data record')
  if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
          and all(_is_int(s) and s >= 0 for s in size + stride)
          and _is_int(offset) and offset >= 0):
    raise CheckpointFormatError(
        f'bad tensor geometry offset={_short(offset)} size={_short(size)} '
        f'stride={_short(stride)}')
  data = storage.array
  if math.prod(size) == 0:
    return np.zeros(size, data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise CheckpointFormatError(
        f'tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of '
        f'storage {storage.key}, which holds {data.size}')
  item = data.dtype.itemsize
  view = np.ndarray(size, data.dtype, buffer=data, offset=offset * item,
                    strides=tuple(s * item for s in stride))
  return np.array(view, order='C', copy=True)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> np.ndarray:
  del requires_grad, metadata  # Autograd flags and tensor metadata have no numpy meaning.
  _check_hooks(hooks)
  return _tensor_view(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> np.ndarray:
  del requires_grad
  _check_hooks(hooks)
  if not isinstance(data, np.ndarray):
    raise CheckpointFormatError(f'parameter data is {_short(data)}, not a tensor')
  return data


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
  if not (isinstance(dims, (tuple, list)) and all(_is_int(d) for d in dims)):
    raise CheckpointFormatError(f'bad torch.Size {_short(dims)}')
  return tuple(dims)


def _codecs_encode(text: Any, encoding: Any = 'utf-8') -> bytes:
  # Pickle protocol 2 (torch.save's default) writes bytes as _codecs.encode(str, 'latin1').
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise UnsafeCheckpointError(f'_codecs.encode only for latin1 bytes, got {_short(encoding)}')
  return text.encode('latin1')


def _bytes(*args: Any) -> bytes:
  if args == ():
    return b''
  if len(args) == 1 and isinstance(args[0], bytes):
    return args[0]
  raise UnsafeCheckpointError(f'bytes{_short(args)} is not plain data')


def _bytearray(*args: Any) -> bytearray:
  if len(args) == 2:
    return bytearray(_codecs_encode(*args))
  return bytearray(_bytes(*args))


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
  if not all(isinstance(x, (int, float)) for x in (real, imag)):
    raise UnsafeCheckpointError(f'complex({_short(real)}, {_short(imag)}) is not plain data')
  return complex(real, imag)


def _collection(kind: type) -> Callable[..., Any]:
  def build(items: Any = ()) -> Any:
    if not isinstance(items, (list, tuple)):
      raise UnsafeCheckpointError(f'{kind.__name__}() from {_short(items)} is not plain data')
    return kind(items)
  return build


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> _DtypeSpec:
  del align, copy
  if not isinstance(spec, str):
    raise UnsafeCheckpointError(f'numpy.dtype({_short(spec)}) is not a plain dtype')
  try:
    dtype = np.dtype(spec)
  except TypeError as e:
    raise CheckpointFormatError(f'bad numpy dtype {spec!r}') from e
  if dtype.kind not in 'biufc' or dtype.fields is not None or dtype.subdtype is not None:
    raise UnsafeCheckpointError(f'numpy dtype {spec!r} is not a plain numeric dtype')
  return _DtypeSpec(dtype)


def _numpy_scalar(spec: Any, data: Any = None) -> Any:
  if not isinstance(spec, _DtypeSpec) or not isinstance(data, bytes):
    raise UnsafeCheckpointError(f'numpy scalar from {_short((spec, data))} is not plain data')
  if len(data) != spec.dtype.itemsize:
    raise CheckpointFormatError(f'numpy scalar of {spec!r} from {len(data)} bytes')
  return np.frombuffer(data, spec.dtype).astype(spec.dtype.newbyteorder('='))[0]


def _allowed_globals() -> dict[tuple[str, str], Any]:
  """(module, name) -> stand-in for every global a tensor checkpoint may reference."""
  table: dict[tuple[str, str], Any] = {('collections', 'OrderedDict'): _StateDict}
  calls = {
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
      ('torch._utils', '_rebuild_tensor'): _tensor_view,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      ('torch', 'Size'): _torch_size,
      ('_codecs', 'encode'): _codecs_encode,
      ('numpy', 'dtype'): _numpy_dtype,
      ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
      ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
  }
  # Protocol 2 pickles written by Python 3 name the builtins module '__builtin__'.
  for module in ('builtins', '__builtin__'):
    calls.update({
        (module, 'set'): _collection(set), (module, 'frozenset'): _collection(frozenset),
        (module, 'bytes'): _bytes, (module, 'bytearray'): _bytearray,
        (module, 'complex'): _complex,
    })
  for (module, name), fn in calls.items():
    table[module, name] = _Callable(f'{module}.{name}', fn)
  for name, dtype in _STORAGE_DTYPES.items():
    table['torch', name] = _StorageType(name, dtype)
  return table


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles `data.pkl`: allow-listed globals only; storages come from the zip records."""

  def __init__(self, data: bytes, read_record: Callable[[str], bytes], byteorder: str):
    super().__init__(io.BytesIO(data))
    self._read_record = read_record
    self._swap = byteorder != sys.byteorder
    self._storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    found = _ALLOWED_GLOBALS.get((module, name))
    if found is None:
      raise UnsafeCheckpointError(
          f'refused global {module}.{name}: not on the allow-list of a tensor checkpoint')
    return found

  def persistent_load(self, pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
      raise CheckpointFormatError(f'unsupported persistent id {_short(pid)}')
    _, storage_type, key, location, numel = pid
    if not (isinstance(storage_type, _StorageType) and isinstance(key, str)
            and _RECORD_KEY.fullmatch(key) and isinstance(location, str)
            and _is_int(numel) and numel >= 0):
      raise CheckpointFormatError(f'bad storage reference {_short(pid)}')
    cached = self._storages.get(key)
    if cached is not None:
      if cached.array.dtype != storage_type.dtype or cached.array.size != numel:
        raise CheckpointFormatError(f'storage {key} is referenced with two types or sizes')
      return cached
    raw = self._read_record(key)
    dtype = storage_type.dtype
    if len(raw) != numel * dtype.itemsize:
      raise CheckpointFormatError(
          f'record data/{key} has {len(raw)} bytes, expected {numel} x {dtype.itemsize}')
    if dtype == np.bool_:
      array = np.frombuffer(raw, np.uint8) != 0
    else:
      array = np.frombuffer(raw, dtype)
      if self._swap:
        array = array.byteswap()
    self._storages[key] = _Storage(key, array)
    return self._storages[key]


def _archive_prefix(zf: zipfile.ZipFile, path: str) -> str:
  """The archive's root folder: torch.save writes `<root>/data.pkl`."""
  roots = [n[:-len('/data.pkl')] for n in zf.namelist()
           if n.endswith('/data.pkl') and n.count('/') == 1]
  if len(roots) != 1:
    raise CheckpointFormatError(
        f'{path}: expected one <archive>/data.pkl record in the zip, found {len(roots)} '
        f'(members: {_short(zf.namelist()[:5])})')
  return roots[0]


def _not_zip_message(path: str) -> str:
  with open(path, 'rb') as f:
    head = f.read(2)
  if head[:1] == b'\x80':
    return (f'{path}: legacy (pre-1.6, non-zip) torch.save format is not supported; '
            're-save it with a current torch')
  return f'{path}: not a zip archive, so not a torch.save checkpoint (torch >= 1.6)'


def _load_zip(path: str) -> Any:
  """Opens the torch.save archive and runs `data.pkl` through the restricted unpickler."""
  with zipfile.ZipFile(path) as zf:
    prefix = _archive_prefix(zf, path)
    members = set(zf.namelist())
    byteorder = 'little'  # Files written before the byteorder record existed are little-endian.
    if f'{prefix}/byteorder' in members:
      byteorder = zf.read(f'{prefix}/byteorder').decode('ascii', 'replace').strip()
    if byteorder not in ('little', 'big'):
      raise CheckpointFormatError(f'{path}: bad byteorder record {byteorder!r}')

    def read_record(key: str) -> bytes:
      name = f'{prefix}/data/{key}'
      if name not in members:
        raise CheckpointFormatError(f'missing record {name}')
      return zf.read(name)

    unpickler = _RestrictedUnpickler(zf.read(f'{prefix}/data.pkl'), read_record, byteorder)
    try:
      return unpickler.load()
    except UnsafeCheckpointError as e:
      raise UnsafeCheckpointError(f'{path}: {e}') from e
    except CheckpointFormatError as e:
      raise CheckpointFormatError(f'{path}: {e}') from e
    except Exception as e:  # Whatever else a malformed pickle triggers.
      raise CheckpointFormatError(
          f'{path}: malformed {prefix}/data.pkl: {type(e).__name__}: {e}') from e


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
  """Loads a `torch.save` zip checkpoint; every tensor becomes a numpy array.

  Args:
    path: The `.pth`/`.pt` file.

  Returns:
    The unpickled top-level object (e.g. `{'meta': {...}, 'state_dict': OrderedDict}`) with
    tensors as C-contiguous numpy arrays in native byte order (bfloat16 via `ml_dtypes`).

  Raises:
    UnsafeCheckpointError: The pickle references a global or operation outside the allow-list.
    CheckpointFormatError: The file is truncated, not a zip, or misses a record.
    FileNotFoundError: There is no such file.
  """
  path = os.fspath(path)
  try:
    return _load_zip(path)
  except (UnsafeCheckpointError, CheckpointFormatError, FileNotFoundError):
    raise
  except zipfile.BadZipFile as e:
    if zipfile.is_zipfile(path):
      raise CheckpointFormatError(f'{path}: corrupt zip archive: {e}') from e
    raise CheckpointFormatError(_not_zip_message(path)) from e
  except (EOFError, ValueError, OSError) as e:
    raise CheckpointFormatError(f'{path}: unreadable zip archive: {e}') from e


def _load_npz(path: str) -> dict[str, np.ndarray]:
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, Mapping):
      raise CheckpointFormatError(f'{path}: an .npy array, not an .npz archive')
    with npz:
      return {key: npz[key] for key in npz.files}
  except (CheckpointFormatError, FileNotFoundError):
    raise
  except (ValueError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
    raise CheckpointFormatError(f'{path}: not a readable .npz of plain arrays: {e}') from e


def _split_checkpoint(obj: Any, path: str) -> tuple[Any, dict]:
  """(state_dict, meta) from an MMCV-style wrapper or a bare state dict."""
  if isinstance(obj, dict) and 'state_dict' in obj:
    meta = obj.get('meta') or {}
    if not isinstance(meta, dict):
      raise CheckpointFormatError(f'{path}: meta is {type(meta).__name__}, not a dict')
    return obj['state_dict'], meta
  if isinstance(obj, dict) and all(isinstance(v, np.ndarray) for v in obj.values()):
    return obj, {}
  keys = _short(list(obj)[:5]) if isinstance(obj, dict) else type(obj).__name__
  raise CheckpointFormatError(
      f"{path}: neither {{'state_dict': ...}} nor a mapping of tensors (top level: {keys})")


def load_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
  """Loads a model state dict from a `.pth` (torch.save zip) or `.npz` file.

  A leading `module.` (DataParallel) is stripped from every key, as mmcv's loader does.

  Args:
    path: `.npz` (keys as in the state dict) or any torch.save zip checkpoint, with or without
      MMCV's `{'meta': ..., 'state_dict': ...}` wrapper.

  Returns:
    `(state_dict, meta)`: arrays in file order, and the checkpoint's `meta` ({} if none).

  Raises:
    UnsafeCheckpointError, CheckpointFormatError: As `load_torch_checkpoint`; also for
      non-tensor values, keys that collide after stripping and unreadable `.npz` files.
  """
  path = os.fspath(path)
  if path.endswith('.npz'):
    state, meta = _load_npz(path), {}
  else:
    state, meta = _split_checkpoint(load_torch_checkpoint(path), path)
  if not isinstance(state, dict):
    raise CheckpointFormatError(f'{path}: state_dict is {type(state).__name__}, not a dict')
  out: dict[str, np.ndarray] = {}
  for key, value in state.items():
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
      raise CheckpointFormatError(
          f'{path}: state_dict entry {_short(key)} is {type(value).__name__}, not a tensor')
    name = _MODULE_PREFIX.sub('', key)
    if name in out:
      raise CheckpointFormatError(f'{path}: key {key!r} collides with {name!r} after '
                                  'stripping the module. prefix')
    out[name] = value
  return out, meta
