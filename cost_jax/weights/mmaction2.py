"""Import MMAction2 / CoST checkpoints (`.pth` or `.npz`) into Flax variables, without PyTorch."""

from __future__ import annotations

import re
from typing import Any, Mapping

import ml_collections
import numpy as np
from flax import traverse_util

from cost_jax.models.defaults import get_model_config
from cost_jax.models.recognizer import backbone_architecture
from cost_jax.models.resnet3d import STAGE_BLOCKS, blocks_per_stage, expand_inflate
from cost_jax.models.variables import abstract_variables
from cost_jax.weights import keymap
from cost_jax.weights.torch_pickle import load_state_dict

# Fields of the model config that a checkpoint's tensors determine. The temporal strides of the
# stem leave no trace in the weights; a given config decides them.
ARCH_FIELDS = (
  'arch',
  'depth',
  'stage_blocks',
  'base_channels',
  'num_classes',
  'conv1_kernel',
  'inflate',
)


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not fit the model; lists every offending key."""

  def __init__(
    self,
    path: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple, tuple]],
  ):
    self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
    lines = [f'{path}: checkpoint does not match the model']
    if missing:
      lines.append(f'  missing keys ({len(missing)}): ' + ', '.join(missing))
    if unexpected:
      lines.append(f'  unexpected keys ({len(unexpected)}): ' + ', '.join(unexpected))
    for key, got, want in mismatched:
      lines.append(f'  shape mismatch {key}: checkpoint {got}, model {want}')
    super().__init__('\n'.join(lines))


class ArchitectureMismatchError(ValueError):
  """The checkpoint describes another architecture than the config; lists the fields."""


def _strip_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k[len('module.') :] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def meta_config_int(meta: Mapping[str, Any] | None, name: str) -> int | None:
  """Reads e.g. `conv1_stride_t` from the config text MMAction2 stores in `meta['config']`."""
  text = str((meta or {}).get('config', ''))
  match = re.search(rf"['\"]?{name}['\"]?\s*[:=]\s*(\d+)", text)
  return int(match.group(1)) if match else None


def _block_flag(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[int, str]:
  """(inflated, arch) of one bottleneck from its keys and kernel shapes."""
  if f'{prefix}.conv2.conv.alpha' in sd:
    return 1, 'costa'
  if f'{prefix}.conv2.conv.fc1.weight' in sd:
    return 1, 'costb'
  if sd[f'{prefix}.conv1.conv.weight'].shape[2] > 1:
    return 1, 'i3d'
  if sd[f'{prefix}.conv2.conv.weight'].shape[2] > 1:
    return 1, '3x3x3'
  return 0, 'c2d'


def infer_model_config(
  state_dict: Mapping[str, np.ndarray],
  meta: Mapping[str, Any] | None = None,
  source: str = 'checkpoint',
) -> ml_collections.ConfigDict:
  """The architecture a state dict describes: arch, depth, width, classes, stem, inflate."""
  sd = _strip_prefix(state_dict)
  for key in ('backbone.conv1.conv.weight', 'cls_head.fc_cls.weight'):
    if key not in sd:
      raise ValueError(f'{source}: not an MMAction2 ResNet3d checkpoint, key {key!r} is missing')
  blocks = []
  for stage in range(1, 5):
    indices = {
      int(m.group(1)) for k in sd for m in [re.match(rf'backbone\.layer{stage}\.(\d+)\.', k)] if m
    }
    blocks.append(max(indices) + 1 if indices else 0)
  depth = next((d for d, b in STAGE_BLOCKS.items() if tuple(blocks) == b), None)
  stage_blocks = ()
  if depth is None:  # other numbers of bottleneck blocks: MMAction2's `stage_blocks`
    if not all(blocks):
      raise ValueError(f'{source}: blocks per stage {tuple(blocks)}: a stage has no block')
    depth, stage_blocks = 50, tuple(blocks)
  flags, archs = [], set()
  for stage, n in enumerate(blocks, start=1):
    stage_flags = []
    for i in range(n):
      flag, arch = _block_flag(sd, f'backbone.layer{stage}.{i}')
      stage_flags.append(flag)
      if flag:
        archs.add(arch)
    flags.append(tuple(stage_flags))
  if len(archs) > 1:
    raise ValueError(f'{source}: blocks of several kinds {sorted(archs)} in one checkpoint')
  arch = archs.pop() if archs else 'c2d'
  stem = sd['backbone.conv1.conv.weight']
  conv1_kernel = tuple(int(s) for s in stem.shape[2:])
  # Temporal strides leave no trace in the weights: take them from the stored config, else from
  # the convention of the official configs (a temporal stem kernel comes with strides 2).
  default_stride_t = 2 if conv1_kernel[0] > 1 else 1
  config = get_model_config(arch)
  config.update(
    dict(
      depth=depth,
      stage_blocks=stage_blocks,
      base_channels=int(stem.shape[0]),
      num_classes=int(sd['cls_head.fc_cls.weight'].shape[0]),
      conv1_kernel=conv1_kernel,
      conv1_stride_t=meta_config_int(meta, 'conv1_stride_t') or default_stride_t,
      pool1_stride_t=meta_config_int(meta, 'pool1_stride_t') or default_stride_t,
      inflate=tuple(flags),
    )
  )
  return config


def _field(config: Mapping[str, Any], field: str, defaults: Mapping[str, Any]) -> Any:
  """`config[field]`; a config saved before `field` existed (a workdir's or saved model's
  config.json) has its default."""
  return config.get(field, defaults[field])


def check_against(
  inferred: Mapping[str, Any], wanted: Mapping[str, Any], source: str, ignore: tuple[str, ...] = ()
) -> None:
  """Raises ArchitectureMismatchError listing each field of `ARCH_FIELDS` that differs."""
  diffs, defaults = [], get_model_config()
  for field in (f for f in ARCH_FIELDS if f not in ignore):
    got, want = _field(inferred, field, defaults), _field(wanted, field, defaults)
    if field == 'inflate':
      got_blocks = blocks_per_stage(inferred['depth'], _field(inferred, 'stage_blocks', defaults))
      want_blocks = blocks_per_stage(wanted['depth'], _field(wanted, 'stage_blocks', defaults))
      if got_blocks != want_blocks:
        continue  # the blocks differ already; the patterns cannot be compared block by block
      got, want = expand_inflate(got, got_blocks), expand_inflate(want, want_blocks)
    elif isinstance(want, (tuple, list)):
      got, want = tuple(got), tuple(want)
    if field == 'arch' and not any(map(any, inferred['inflate'])):
      continue  # no inflated block: `inflate` alone decides, whatever the arch is called
    if got != want:
      diffs.append(f'{field}: checkpoint {got}, config {want}')
  if diffs:
    raise ArchitectureMismatchError(
      f'{source}: checkpoint does not match the given config:\n  ' + '\n  '.join(diffs)
    )


_SHAPES: dict[str, dict[tuple, tuple]] = {}  # variable_shapes' cache


def variable_shapes(model_config: Mapping[str, Any]) -> dict[tuple, tuple]:
  """Flat {(collection, *path): shape} of a model's variables.

  Cached by the fields that decide them (the backbone's architecture and the class count): the
  model traces its init to find them, about 0.5 s at R50.
  """
  key = repr((backbone_architecture(model_config), model_config['num_classes']))
  if key not in _SHAPES:
    flat = traverse_util.flatten_dict(abstract_variables(model_config))
    _SHAPES[key] = {k: tuple(v.shape) for k, v in flat.items()}
  return dict(_SHAPES[key])


def state_dict_to_variables(
  state_dict: Mapping[str, np.ndarray],
  model_config: Mapping[str, Any],
  source: str = 'checkpoint',
  strict: bool = True,
) -> dict:
  """Converts a state dict to Flax variables of `model_config`.

  With `strict`, any missing, unexpected or shape-mismatched key raises CheckpointMismatchError
  listing all of them; otherwise missing leaves are left out of the result.
  """
  sd = _strip_prefix(state_dict)
  expected = variable_shapes(model_config)
  flat, unexpected, mismatched, mismatched_leaves = {}, [], [], set()
  for key, value in sd.items():
    module = key.rsplit('.', 1)[0]
    is_cost = f'{module}.alpha' in sd or f'{module}.fc1.weight' in sd
    target = keymap.torch_to_flax(key, is_cost)
    if target is None:
      if not key.endswith(keymap.IGNORED_SUFFIXES):
        unexpected.append(key)
      continue
    collection, path, convert = target
    leaf = (collection,) + path
    if leaf not in expected:
      unexpected.append(key)
      continue
    try:
      array = convert(np.asarray(value, np.float32))
    except ValueError:
      array = None
    if array is None or array.shape != expected[leaf]:
      mismatched.append((key, tuple(np.shape(value)), expected[leaf]))
      mismatched_leaves.add(leaf)
      continue
    flat[leaf] = array
  missing = [
    keymap.flax_to_torch_key(k[0], k[1:])
    for k in expected
    if k not in flat and k not in mismatched_leaves
  ]
  if strict and (missing or unexpected or mismatched):
    raise CheckpointMismatchError(source, missing, unexpected, mismatched)
  return traverse_util.unflatten_dict(flat)


def _resolve_model_config(config) -> Mapping[str, Any] | None:
  if config is None:
    return None
  return config.model if 'model' in config else config


def import_mmaction2(
  path: str, config=None, strict: bool = True, any_num_classes: bool = False
) -> tuple[ml_collections.ConfigDict, dict]:
  """Reads an MMAction2/CoST checkpoint and returns (model_config, variables).

  The architecture is inferred from the keys and shapes. When `config` (a full config or its
  `model` part) is given, the checkpoint must match it, and its run-time fields (bn_group_size,
  conv_impl, dtype, ...) are kept; with `any_num_classes` the class count may differ and the
  result has the checkpoint's (for fine-tuning, which then replaces the head).
  """
  state_dict, meta = load_state_dict(path)
  inferred = infer_model_config(state_dict, meta, source=path)
  wanted = _resolve_model_config(config)
  if wanted is not None:
    check_against(inferred, wanted, path, ignore=('num_classes',) if any_num_classes else ())
    model_config = ml_collections.ConfigDict(dict(wanted))
    model_config.num_classes = inferred.num_classes
  else:
    model_config = inferred
  variables = state_dict_to_variables(state_dict, model_config, source=path, strict=strict)
  return model_config, variables


def variables_to_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flax variables -> an MMAction2 state dict (torch layouts and key names), for export."""
  out = {}
  for (collection, *path), value in traverse_util.flatten_dict(
    {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  ).items():
    array = np.asarray(value)
    if path[-1] == 'kernel':
      if array.ndim == 5:
        array = keymap.conv_kernel_to_torch(array)
      elif array.ndim == 4:
        array = keymap.cost_kernel_to_torch(array)
      else:
        array = array.T
    out[keymap.flax_to_torch_key(collection, tuple(path))] = np.ascontiguousarray(array)
  return out
