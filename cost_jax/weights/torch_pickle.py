"""Read PyTorch checkpoints (`torch.save`, zip and legacy formats) into numpy arrays, no PyTorch.

A `.pth` written by torch >= 1.6 is a zip archive `<name>/data.pkl` + `<name>/data/<key>` (one raw
storage per key) + `<name>/byteorder`. Older files (torch < 1.6, or `torch.save(...,
_use_new_zipfile_serialization=False)`) use the legacy format: a run of pickles (magic number,
protocol version 1001, sys_info, the object, the list of storage keys), then for each key in that
list an int64 element count and the storage's raw little-endian bytes.

The object's pickle runs through a restricted unpickler: the few globals a tensor checkpoint needs
resolve to local stand-ins, everything else raises `UnsafeCheckpointError`, so no code from the
file ever runs. Stand-ins refuse the BUILD opcode, except `OrderedDict`, which accepts torch's
`_metadata` attribute and nothing else. The legacy header pickles may hold plain values only.
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
from typing import IO, Any, Callable, Mapping

import ml_dtypes
import numpy as np

from cost_jax import storage

__all__ = [
  'CheckpointFormatError',
  'UnsafeCheckpointError',
  'load_state_dict',
  'load_torch_checkpoint',
]


class UnsafeCheckpointError(ValueError):
  """The checkpoint's pickle asks for a global or an operation outside the allow-list."""


class CheckpointFormatError(ValueError):
  """The file is not a well-formed checkpoint (truncated, wrong magic, missing record, ...)."""


# Legacy typed-storage names as torch.save writes them -> numpy dtype of one element.
_STORAGE_DTYPES = {
  'DoubleStorage': np.float64,
  'FloatStorage': np.float32,
  'HalfStorage': np.float16,
  'BFloat16Storage': ml_dtypes.bfloat16,
  'LongStorage': np.int64,
  'IntStorage': np.int32,
  'ShortStorage': np.int16,
  'CharStorage': np.int8,
  'ByteStorage': np.uint8,
  'BoolStorage': np.bool_,
  'ComplexFloatStorage': np.complex64,
  'ComplexDoubleStorage': np.complex128,
  'UntypedStorage': np.uint8,
}
_RECORD_KEY = re.compile(r'[A-Za-z0-9_.-]+')
_MODULE_PREFIX = re.compile(r'^module\.')
_ZIP_MAGIC = b'PK\x03\x04'  # torch.load's own test for the zip format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


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
  """One storage: `size` elements of `dtype`, as a flat native-byte-order numpy array.

  `array` is None during the first pass over a legacy pickle, whose data follows the pickle.
  """

  __slots__ = ('key', 'dtype', 'size', 'array')

  def __init__(self, key: str, dtype: np.dtype, size: int, array: np.ndarray | None = None):
    self.key, self.dtype, self.size, self.array = key, dtype, size, array

  def __repr__(self) -> str:
    return f'<storage {self.key} {self.dtype}[{self.size}]>'


class _DtypeSpec(_Sealed):
  """Stand-in for a pickled `numpy.dtype`; only plain numeric dtypes."""

  __slots__ = ('dtype',)

  def __init__(self, dtype: np.dtype):
    self.dtype = dtype

  def __setstate__(self, state: Any) -> None:
    # numpy pickles a dtype's state as (version, byteorder, subdtype, names, fields, ...).
    if (
      not isinstance(state, tuple)
      or len(state) < 5
      or state[0] not in (3, 4)
      or state[1] not in ('<', '>', '|', '=')
      or any(s is not None for s in state[2:5])
    ):
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
        f'BUILD on OrderedDict may only set _metadata, got {_short(state)}'
      )
    if '_metadata' in state:
      self._metadata = state['_metadata']


def _check_hooks(hooks: Any) -> None:
  if not isinstance(hooks, dict) or hooks:
    raise UnsafeCheckpointError(f'tensor backward hooks are not supported: {_short(hooks)}')


def _tensor_view(storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
  """Copies the strided view `storage[offset:]` (torch semantics) into a new C-order array."""
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError(f'tensor storage is {_short(storage)}, not a data record')
  if not (
    isinstance(size, tuple)
    and isinstance(stride, tuple)
    and len(size) == len(stride)
    and all(_is_int(s) and s >= 0 for s in size + stride)
    and _is_int(offset)
    and offset >= 0
  ):
    raise CheckpointFormatError(
      f'bad tensor geometry offset={_short(offset)} size={_short(size)} stride={_short(stride)}'
    )
  if math.prod(size) == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise CheckpointFormatError(
      f'tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of '
      f'storage {storage.key}, which holds {storage.size}'
    )
  data = storage.array
  if data is None:  # First pass over a legacy pickle: geometry checked, data not read yet.
    return np.empty(0, storage.dtype)
  item = data.dtype.itemsize
  view = np.ndarray(
    size, data.dtype, buffer=data, offset=offset * item, strides=tuple(s * item for s in stride)
  )
  return np.array(view, order='C', copy=True)


def _rebuild_tensor_v2(
  storage: Any,
  offset: Any,
  size: Any,
  stride: Any,
  requires_grad: Any,
  hooks: Any,
  metadata: Any = None,
) -> np.ndarray:
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
    calls.update(
      {
        (module, 'set'): _collection(set),
        (module, 'frozenset'): _collection(frozenset),
        (module, 'bytes'): _bytes,
        (module, 'bytearray'): _bytearray,
        (module, 'complex'): _complex,
      }
    )
  for (module, name), fn in calls.items():
    table[module, name] = _Callable(f'{module}.{name}', fn)
  for name, dtype in _STORAGE_DTYPES.items():
    table['torch', name] = _StorageType(name, dtype)
    # Like torch.load, which maps any '...Storage' name to its dtype: very old legacy files may
    # name the storage type of CUDA tensors (e.g. optimizer state) torch.cuda.FloatStorage.
    table['torch.cuda', name] = table['torch', name]
  return table


_ALLOWED_GLOBALS = _allowed_globals()


def _decode_storage(raw: Any, dtype: np.dtype, swap: bool) -> np.ndarray:
  if dtype == np.bool_:
    return np.frombuffer(raw, np.uint8) != 0
  array = np.frombuffer(raw, dtype)
  return array.byteswap() if swap else array


class _Storages:
  """Resolves the pickle's persistent ids to `_Storage`s, each root storage read once.

  Zip ids are `('storage', type, key, location, numel)`; legacy ids add a sixth item, None or
  `(view_key, offset, numel)` for a storage view. `read_record(key)` gives a root storage's raw
  bytes; without it (first pass over a legacy pickle) storages only record type and size.
  """

  def __init__(self, read_record: Callable[[str], Any] | None, byteorder: str, legacy: bool):
    self._read_record = read_record
    self._swap = byteorder != sys.byteorder
    self._legacy = legacy
    self.roots: dict[str, _Storage] = {}
    self._views: dict[str, tuple[str, int, _Storage]] = {}

  def __call__(self, pid: Any) -> _Storage:
    if not (
      isinstance(pid, tuple) and len(pid) == (6 if self._legacy else 5) and pid[0] == 'storage'
    ):
      raise CheckpointFormatError(f'unsupported persistent id {_short(pid)}')
    _, storage_type, key, location, numel = pid[:5]
    if not (
      isinstance(storage_type, _StorageType)
      and isinstance(key, str)
      and _RECORD_KEY.fullmatch(key)
      and isinstance(location, str)
      and _is_int(numel)
      and numel >= 0
    ):
      raise CheckpointFormatError(f'bad storage reference {_short(pid)}')
    root = self._root(key, storage_type.dtype, numel)
    view = pid[5] if self._legacy else None
    return root if view is None else self._view(root, view)

  def _root(self, key: str, dtype: np.dtype, numel: int) -> _Storage:
    cached = self.roots.get(key)
    if cached is not None:
      if cached.dtype != dtype or cached.size != numel:
        raise CheckpointFormatError(f'storage {key} is referenced with two types or sizes')
      return cached
    array = None
    if self._read_record is not None:
      raw = self._read_record(key)
      if len(raw) != numel * dtype.itemsize:
        raise CheckpointFormatError(
          f'record data/{key} has {len(raw)} bytes, expected {numel} x {dtype.itemsize}'
        )
      array = _decode_storage(raw, dtype, self._swap)
    self.roots[key] = _Storage(key, dtype, numel, array)
    return self.roots[key]

  def _view(self, root: _Storage, view: Any) -> _Storage:
    """A legacy storage view: `numel` elements of `root` from element `offset` on."""
    if not (
      isinstance(view, tuple)
      and len(view) == 3
      and isinstance(view[0], str)
      and all(_is_int(v) and v >= 0 for v in view[1:])
    ):
      raise CheckpointFormatError(f'bad storage view {_short(view)} of storage {root.key}')
    key, offset, numel = view
    if offset + numel > root.size:
      raise CheckpointFormatError(
        f'storage view {key} (offset {offset}, {numel} elements) runs past storage '
        f'{root.key}, which holds {root.size}'
      )
    cached = self._views.get(key)
    if cached is not None:
      if cached[:2] != (root.key, offset) or cached[2].size != numel:
        raise CheckpointFormatError(f'storage view {key} is defined twice, differently')
      return cached[2]
    array = None if root.array is None else root.array[offset : offset + numel]
    self._views[key] = (root.key, offset, _Storage(key, root.dtype, numel, array))
    return self._views[key][2]


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a checkpoint's object: allow-listed globals only; storages from `storages`."""

  def __init__(self, file: IO[bytes], storages: _Storages):
    super().__init__(file)
    self._storages = storages

  def find_class(self, module: str, name: str) -> Any:
    found = _ALLOWED_GLOBALS.get((module, name))
    if found is None:
      raise UnsafeCheckpointError(
        f'refused global {module}.{name}: not on the allow-list of a tensor checkpoint'
      )
    return found

  def persistent_load(self, pid: Any) -> _Storage:
    return self._storages(pid)


class _PlainUnpickler(pickle.Unpickler):
  """Unpickles a legacy header pickle (magic, protocol, sys_info, key list): plain values only."""

  def find_class(self, module: str, name: str) -> Any:
    raise UnsafeCheckpointError(
      f'refused global {module}.{name} in a legacy header pickle, which holds plain values only'
    )

  def persistent_load(self, pid: Any) -> Any:
    raise CheckpointFormatError(f'persistent id {_short(pid)} in a legacy header pickle')


def _pickle_error(e: Exception, what: str) -> str:
  if isinstance(e, EOFError) or 'truncated' in str(e):
    return f'{what} is truncated (file cut short?)'
  return f'malformed {what}: {type(e).__name__}: {e}'


def _unpickle(unpickler: pickle.Unpickler, what: str) -> Any:
  """Runs `unpickler`; errors other than ours become a `CheckpointFormatError` about `what`."""
  try:
    return unpickler.load()
  except (UnsafeCheckpointError, CheckpointFormatError):
    raise
  except Exception as e:  # Whatever else a malformed pickle triggers.
    raise CheckpointFormatError(_pickle_error(e, what)) from e


def _archive_prefix(zf: zipfile.ZipFile) -> str:
  """The archive's root folder: torch.save writes `<root>/data.pkl`."""
  roots = [
    n[: -len('/data.pkl')] for n in zf.namelist() if n.endswith('/data.pkl') and n.count('/') == 1
  ]
  if len(roots) != 1:
    raise CheckpointFormatError(
      f'expected one <archive>/data.pkl record in the zip, found {len(roots)} '
      f'(members: {_short(zf.namelist()[:5])})'
    )
  return roots[0]


def _load_zip(path: str) -> Any:
  """Opens the torch.save archive and runs `data.pkl` through the restricted unpickler."""
  with zipfile.ZipFile(path) as zf:
    prefix = _archive_prefix(zf)
    members = set(zf.namelist())
    byteorder = 'little'  # Files written before the byteorder record existed are little-endian.
    if f'{prefix}/byteorder' in members:
      byteorder = zf.read(f'{prefix}/byteorder').decode('ascii', 'replace').strip()
    if byteorder not in ('little', 'big'):
      raise CheckpointFormatError(f'bad byteorder record {byteorder!r}')

    def read_record(key: str) -> bytes:
      name = f'{prefix}/data/{key}'
      if name not in members:
        raise CheckpointFormatError(f'missing record {name}')
      return zf.read(name)

    storages = _Storages(read_record, byteorder, legacy=False)
    data_pkl = io.BytesIO(zf.read(f'{prefix}/data.pkl'))
    return _unpickle(_RestrictedUnpickler(data_pkl, storages), f'{prefix}/data.pkl')


def _legacy_header(buf: io.BytesIO) -> None:
  """Reads and checks the magic number, protocol version and sys_info pickles."""
  not_torch = 'not a zip archive (torch >= 1.6) nor a legacy torch.save file'
  try:
    magic = _unpickle(_PlainUnpickler(buf), 'magic number')
  except CheckpointFormatError as e:
    raise CheckpointFormatError(f'{not_torch}: {e}') from e
  if not _is_int(magic) or magic != _LEGACY_MAGIC:
    shown = hex(magic) if _is_int(magic) else _short(magic)
    raise CheckpointFormatError(
      f'{not_torch}: wrong magic number {shown} (expected {_LEGACY_MAGIC:#x})'
    )
  version = _unpickle(_PlainUnpickler(buf), 'protocol version')
  if not _is_int(version) or version != _LEGACY_PROTOCOL:
    raise CheckpointFormatError(
      f'unknown legacy protocol version {_short(version)} (expected {_LEGACY_PROTOCOL})'
    )
  sys_info = _unpickle(_PlainUnpickler(buf), 'sys_info pickle')
  if not (isinstance(sys_info, dict) and isinstance(sys_info.get('little_endian'), bool)):
    raise CheckpointFormatError(f'bad sys_info {_short(sys_info)}: no little_endian flag')
  if not sys_info['little_endian']:
    # torch versions differ in the byte order they wrote there: native, little, or a mix.
    raise CheckpointFormatError(
      'written on a big-endian machine (sys_info little_endian=False), where the storage '
      'byte order depends on the torch version; re-save it on a little-endian machine'
    )


def _legacy_records(
  data: bytes, pos: int, keys: Any, roots: Mapping[str, _Storage]
) -> dict[str, memoryview]:
  """Slices each listed storage's bytes from the data section that starts at `pos`."""
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise CheckpointFormatError(f'storage key list is {_short(keys)}, not a list of strings')
  whole = memoryview(data)
  records: dict[str, memoryview] = {}
  for i, key in enumerate(keys):
    storage = roots.get(key)
    if storage is None:
      raise CheckpointFormatError(f'storage key {key!r} is listed but the pickle does not use it')
    if key in records:
      raise CheckpointFormatError(f'storage key {key!r} is listed twice')
    if pos + 8 > len(data):
      raise CheckpointFormatError(
        f'file is truncated before the data of storage {key} ({i + 1} of {len(keys)})'
      )
    count = int.from_bytes(data[pos : pos + 8], 'little', signed=True)
    if count != storage.size:
      raise CheckpointFormatError(
        f'storage {key} has {count} elements in the data section, {storage.size} in the pickle'
      )
    nbytes = count * storage.dtype.itemsize
    pos += 8
    if pos + nbytes > len(data):
      raise CheckpointFormatError(
        f'file is truncated inside storage {key} ({i + 1} of {len(keys)}): short storage data, '
        f'{len(data) - pos} of {nbytes} bytes'
      )
    records[key] = whole[pos : pos + nbytes]
    pos += nbytes
  missing = [k for k in roots if k not in records]
  if missing:
    raise CheckpointFormatError(
      f'storage key {missing[0]!r} used by the pickle is missing from the storage key list '
      f'({len(missing)} missing)'
    )
  return records


def _load_legacy(path: str) -> Any:
  """Reads a legacy torch.save file: header pickles, object pickle, key list, storage data.

  The object pickle comes before the storage data, whose element sizes only the pickle's
  storage types tell; so it is unpickled twice: once for the storage layout, once with data.
  """
  with open(path, 'rb') as f:
    data = f.read()
  if not data:
    raise CheckpointFormatError('empty file, not a torch.save checkpoint')
  buf = io.BytesIO(data)
  _legacy_header(buf)
  start = buf.tell()
  layout = _Storages(None, 'little', legacy=True)
  _unpickle(_RestrictedUnpickler(buf, layout), 'object pickle')
  keys = _unpickle(_PlainUnpickler(buf), 'storage key list')
  records = _legacy_records(data, buf.tell(), keys, layout.roots)
  buf.seek(start)
  storages = _Storages(records.__getitem__, 'little', legacy=True)  # Always little-endian.
  return _unpickle(_RestrictedUnpickler(buf, storages), 'object pickle')


def _is_tar(head: bytes) -> bool:
  return head[257:262] == b'ustar'


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
  """Loads a `torch.save` checkpoint (zip or legacy format); every tensor becomes a numpy array.

  Args:
    path: The `.pth`/`.pt` file.

  Returns:
    The unpickled top-level object (e.g. `{'meta': {...}, 'state_dict': OrderedDict}`) with
    tensors as C-contiguous numpy arrays in native byte order (bfloat16 via `ml_dtypes`).

  Raises:
    UnsafeCheckpointError: A pickle references a global or operation outside the allow-list.
    CheckpointFormatError: The file is truncated, not a torch.save file, or misses a record.
    FileNotFoundError: There is no such file.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    head = f.read(512)
  try:
    if head.startswith(_ZIP_MAGIC):
      return _load_zip(path)
    if _is_tar(head):
      raise CheckpointFormatError(
        'the oldest, tar-based torch.save format is not supported; re-save it with a newer torch'
      )
    return _load_legacy(path)
  except UnsafeCheckpointError as e:
    raise UnsafeCheckpointError(f'{path}: {e}') from e
  except CheckpointFormatError as e:
    raise CheckpointFormatError(f'{path}: {e}') from e
  except zipfile.BadZipFile as e:
    raise CheckpointFormatError(f'{path}: corrupt or truncated zip archive: {e}') from e
  except (EOFError, ValueError, OSError) as e:
    raise CheckpointFormatError(f'{path}: unreadable checkpoint: {e}') from e


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
    f"{path}: neither {{'state_dict': ...}} nor a mapping of tensors (top level: {keys})"
  )


def load_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
  """Loads a model state dict from a `.pth` (torch.save, zip or legacy) or `.npz` file.

  A leading `module.` (DataParallel) is stripped from every key, as mmcv's loader does.

  Args:
    path: `.npz` (keys as in the state dict) or any torch.save checkpoint, with or without
      MMCV's `{'meta': ..., 'state_dict': ...}` wrapper.

  Returns:
    `(state_dict, meta)`: arrays in file order, and the checkpoint's `meta` ({} if none).

  Raises:
    UnsafeCheckpointError, CheckpointFormatError: As `load_torch_checkpoint`; also for
      non-tensor values, keys that collide after stripping and unreadable `.npz` files.
  """
  path = os.fspath(path)
  if storage.is_remote(path):  # a temporary local copy; errors name the object
    with storage.local_file(path) as local:
      try:
        return load_state_dict(local)
      except (CheckpointFormatError, UnsafeCheckpointError) as e:
        raise type(e)(str(e).replace(local, path)) from None
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
        f'{path}: state_dict entry {_short(key)} is {type(value).__name__}, not a tensor'
      )
    name = _MODULE_PREFIX.sub('', key)
    if name in out:
      raise CheckpointFormatError(
        f'{path}: key {key!r} collides with {name!r} after stripping the module. prefix'
      )
    out[name] = value
  return out, meta
