"""Regenerate the MMAction2 reference data in tests/testdata/mmaction2/ from the real PyTorch stack.

Builds the c2d / i3d / CoSTa / CoSTb models through MMAction2 0.24.1's registry, with the
official CoST code (github.com/hikvision-research/cost) imported from a clone, gives them
deterministic random weights, and writes what the cost_jax parity tests read: the checkpoints
(`{arch}.pth`), their inputs and outputs (`io.npz`), mmaction2's own 2-D -> 3-D inflation of
`resnet2d_tv.pth` (`inflation.npz`, `inflation.json`), stand-alone CoST layers
(`cost_layers.npz`), data-pipeline values (`pipeline.json`, `pipeline_e2e.npz`), bit-exact
resizes at the configs' scales (pipeline.json's `resize_exact`: the cases and the sha256 of
MMAction2's outputs; `resize_exact.npz`: a middle row and column of each resized frame),
MMAction2's own test-time pipelines on the inputs of the two lossless-frames tests
(`lossless_crops.npz`) and `manifest.json`. The numbers change with the stack, not from run to
run; the layout is fixed.

It runs in its own venv (torch, mmcv, mmaction2; no jax, no cost_jax), never in the project's.
From the repository root (about a minute to install once torch's wheel is at hand, then
seconds to run, on 2 cores):

  python3.11 -m venv /tmp/mmaction2-venv
  /tmp/mmaction2-venv/bin/pip install 'setuptools<81' wheel
  MMCV_WITH_OPS=0 /tmp/mmaction2-venv/bin/pip install --no-build-isolation \\
      -r tests/testdata/requirements-mmaction2.txt
  git clone https://github.com/hikvision-research/cost /tmp/cost-official
  /tmp/mmaction2-venv/bin/python tests/testdata/regenerate_mmaction2.py \\
      --cost-repo /tmp/cost-official --output /tmp/regen-out

`--pipeline-only` (no `--cost-repo`) writes only the data-pipeline files: pipeline.json,
pipeline_e2e.npz, resize_exact.npz and lossless_crops.npz.

`torch==2.13.0` resolves to the CPU build where pip can find it (a local wheel or the PyTorch CPU
index via `--extra-index-url`); mmcv 1.6.1 builds from source as the pure-Python package
(`MMCV_WITH_OPS=0`). torchvision is not installed: mmcv imports it at module level but needs it
only for `torchvision://` checkpoint names, which this script never uses, so a stand-in module
(`_install_torchvision_stand_in`) takes its place.

The lossless-frames tests (tests/test_input_pipeline.py, tests/test_data_prep.py) make their own
inputs: pattern frames (stored as PNG) and x264 videos, written with PyAV, which this venv does
not have. So lossless_crops.npz keeps those inputs (`NAME:frames`, and `NAME:video`: a file's
bytes) beside MMAction2's outputs; the script reads them from `--lossless-inputs` (by default
the committed file) and the tests check that their inputs are the recorded ones. When a test's
inputs change, record them anew with the project's venv and pass that file:

  .venv/bin/python -c 'from tests import test_data_prep as d, test_input_pipeline as p; \\
      import numpy as np; np.savez("/tmp/lossless-inputs.npz", **p.lossless_inputs(), \\
      **d.lossless_inputs("/tmp/lossless-videos"))'
  /tmp/mmaction2-venv/bin/python tests/testdata/regenerate_mmaction2.py --pipeline-only \\
      --output /tmp/regen-out --lossless-inputs /tmp/lossless-inputs.npz

Check the result against the JAX port with the project's own venv, then replace the folder:

  COST_JAX_FIXTURES=/tmp/regen-out .venv/bin/python -m pytest -q tests/test_models.py \\
      tests/test_cost_layer.py tests/test_weights.py tests/test_torch_pickle.py \\
      tests/test_sampling.py tests/test_transforms.py
  COST_JAX_FIXTURES=/tmp/regen-out .venv/bin/python -m pytest -q -k lossless \\
      tests/test_input_pipeline.py tests/test_data_prep.py
  cp /tmp/regen-out/* tests/testdata/mmaction2/
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import hashlib
import importlib.machinery
import json
import math
import os
import pprint
import subprocess
import sys
import types
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

ARCHS = ('c2d', 'i3d', 'costa', 'costb')
SEEDS = {'c2d': 101, 'i3d': 102, 'costa': 103, 'costb': 104}
INPUT_SEED, RESNET2D_SEED, COST_LAYER_SEED, VIDEO_SEED = 7, 2024, 11, 5
BASE_CHANNELS, NUM_CLASSES, DEPTH = 8, 10, 50
INPUT_SHAPE = (2, 3, 8, 64, 64)
STAGES = ('maxpool', 'layer1', 'layer2', 'layer3')
I3D_INFLATE = ((0, 1, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (1, 0, 1))
# (parameter count, state tensors) that the README documents: a check on the configs.
EXPECTED_COUNTS = {
  'c2d': (376722, 320),
  'i3d': (449938, 320),
  'costa': (377514, 328),
  'costb': (388634, 336),
}
TORCHVISION_STAND_IN_VERSION = '0.13.0'  # what the CoST release was installed with
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
COST_LAYER_IN_SHAPE = (2, 5, 5, 9, 8)
COST_LAYER_STRIDES = {'s111': (1, 1, 1), 's122': (1, 2, 2), 's222': (2, 2, 2)}
RESIZE_CASES = (
  (240, 320),
  (256, 340),
  (360, 480),
  (480, 640),
  (720, 1280),
  (1080, 1920),
  (256, 256),
  (320, 240),
  (480, 270),
  (100, 200),
  (300, 301),
  (512, 3),
  (3, 512),
  (255, 257),
  (171, 128),
  (90, 160),
)
CENTER_CROP_CASES = (
  (256, 341),
  (256, 256),
  (341, 256),
  (224, 224),
  (256, 455),
  (300, 301),
  (225, 301),
  (256, 1000),
  (200, 300),
)
THREE_CROP_CASES = (
  (256, 341),
  (341, 256),
  (256, 256),
  (256, 455),
  (256, 257),
  (257, 256),
  (256, 258),
)
VIDEO_SHAPE = (13, 24, 40, 3)
# Bit-exact resize references (`resize_exact` in pipeline.json, strips in resize_exact.npz):
# random uint8 frames `RandomState(seed).randint(0, 256, (n, h, w, 3), dtype=uint8)`, which the
# tests draw again (the legacy generator's stream is fixed across numpy versions).
# Eval cases: (name, (h, w), n, seed, short side, centre crop) -> Resize(scale=(-1, short side)),
# then CenterCrop, as the val pipelines (the test pipelines crop the same resized frame).
RESIZE_EXACT_EVAL = (
  ('up_240x320_to_256', (240, 320), 2, 21, 256, 224),
  ('same_256x340', (256, 340), 2, 22, 256, 224),
  ('down_360x480_to_256', (360, 480), 2, 23, 256, 224),
  ('down_720x1280_to_256', (720, 1280), 1, 24, 256, 224),
  ('half_512x684_to_256', (512, 684), 2, 25, 256, 224),  # OpenCV takes its INTER_AREA path
  ('up_135x181_to_256', (135, 181), 2, 26, 256, 224),
  ('double_171x128_to_256', (171, 128), 2, 27, 256, 224),
  ('down_37x53_to_32', (37, 53), 2, 28, 32, 28),
  ('up_37x53_to_64', (37, 53), 2, 29, 64, 56),
)
# Train cases: (name, (h, w), n, seed) -> the configs' RandomRescale((256, 320)), RandomCrop(224),
# Flip(0.5), with np.random seeded by `seed`; the draws are recorded.
RESIZE_EXACT_TRAIN_PIPELINE = (
  dict(type='RandomRescale', scale_range=(256, 320)),
  dict(type='RandomCrop', size=224),
  dict(type='Flip', flip_ratio=0.5),
)
RESIZE_EXACT_TRAIN = (
  ('train_256x340', (256, 340), 2, 31),
  ('train_240x320', (240, 320), 2, 32),
  ('train_360x480', (360, 480), 2, 33),
)
# The lossless-frames tests (tests/test_input_pipeline.py, tests/test_data_prep.py): their
# inputs, read from `--lossless-inputs`, go through MMAction2's own test-time pipelines.
LOSSLESS_SAMPLING = dict(clip_len=4, frame_interval=2, test_mode=True)
LOSSLESS_SHORT_SIDE, LOSSLESS_VAL_CROP, LOSSLESS_TEST_CROP, LOSSLESS_TEST_CLIPS = 32, 28, 32, 2
LOSSLESS_FRAME_TMPL = 'img_{:05}.png'  # RawframeDataset's layout: 1-based, as start_index=1
LOSSLESS_INPUTS = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'mmaction2', 'lossless_crops.npz'
)


# The stack.


def _install_torchvision_stand_in() -> None:
  """Puts a minimal `torchvision` in sys.modules; any real use of it fails loudly.

  mmcv 1.6.1 runs `import torchvision` in mmcv/runner/checkpoint.py and reads it only to resolve
  `torchvision://` model names; mmaction2 imports it lazily for TorchvisionTrans and
  torchvision backbones. None of these run here.
  """
  if 'torchvision' in sys.modules:
    return

  def refuse(name: str) -> Any:
    raise AttributeError(
      f'torchvision.{name}: torchvision is a stand-in in '
      'regenerate_mmaction2.py; this code path needs the real package'
    )

  for name in ('torchvision', 'torchvision.models'):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    module.__getattr__ = refuse
    sys.modules[name] = module
  sys.modules['torchvision'].__version__ = TORCHVISION_STAND_IN_VERSION
  sys.modules['torchvision'].models = sys.modules['torchvision.models']


def import_mmaction2() -> dict[str, str]:
  """Imports mmcv and mmaction2 (all the data pipeline needs); returns the versions."""
  _install_torchvision_stand_in()
  import mmaction
  import mmcv

  if (mmcv.__version__, mmaction.__version__) != ('1.6.1', '0.24.1'):
    raise SystemExit(
      f'need mmcv 1.6.1 and mmaction2 0.24.1, have {mmcv.__version__} and '
      f'{mmaction.__version__} (see requirements-mmaction2.txt)'
    )
  return {
    'torch': torch.__version__,
    'mmcv': mmcv.__version__,
    'mmaction2': mmaction.__version__,
    'numpy': np.__version__,
  }


def import_stack(cost_repo: str) -> dict[str, str]:
  """Imports mmcv, mmaction2 and the official CoST package (which registers its layers).

  Returns the versions, with the CoST checkout's commit.
  """
  versions = import_mmaction2()
  sys.path.insert(0, os.path.abspath(cost_repo))
  import cost  # registers ResNet3dCoST, CoSTa and CoSTb

  if not os.path.abspath(cost.__file__).startswith(os.path.abspath(cost_repo)):
    raise SystemExit(f'imported cost from {cost.__file__}, not from {cost_repo}')
  return dict(versions, cost=f'{cost.__version__} ({_git_head(cost_repo)})')


def _git_head(repo: str) -> str:
  try:
    return subprocess.run(
      ['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown commit'


# Models.


def model_config(arch: str, cost_repo: str) -> dict[str, Any]:
  """The official base config (c2d or i3d) at width 8 with 10 classes, CoST styles from i3d."""
  from mmcv import Config

  base = 'c2d_r50_8f.py' if arch == 'c2d' else 'i3d_r50_8f.py'
  model = Config.fromfile(os.path.join(cost_repo, 'configs', '_base_', 'models', base)).model
  model = _plain(model.to_dict())
  model['backbone'] = _insert_after(model['backbone'], 'depth', base_channels=BASE_CHANNELS)
  model['backbone']['pretrained'] = None
  model['cls_head'].update(num_classes=NUM_CLASSES, in_channels=BASE_CHANNELS * 8 * 4)
  if arch in ('costa', 'costb'):
    model['backbone']['inflate_style'] = arch
  backbone = model['backbone']
  expected_inflate = (0, 0, 0, 0) if arch == 'c2d' else I3D_INFLATE
  assert backbone['depth'] == DEPTH and _tuples(backbone['inflate']) == expected_inflate, base
  return model


def _plain(value: Any) -> Any:
  """Dicts and lists all the way down (mmcv's ConfigDict and lists of tuples)."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_plain(v) for v in value)
  return value


def _insert_after(d: dict[str, Any], after: str, **items: Any) -> dict[str, Any]:
  out = {}
  for key, value in d.items():
    out[key] = value
    if key == after:
      out.update(items)
  return out


def _tuples(value: Any) -> Any:
  return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def build(config: dict[str, Any]) -> nn.Module:
  from mmaction.models import build_model

  return build_model(copy.deepcopy(config))


def _value_kind(model: nn.Module, key: str) -> str:
  """Which random distribution a state_dict entry gets (see `draw`)."""
  from cost.models.common import CoSTa, CoSTb
  from torch.nn.modules.batchnorm import _BatchNorm

  prefix, _, name = key.rpartition('.')
  module, owner = model.get_submodule(prefix), prefix.rpartition('.')[2]
  if isinstance(module, _BatchNorm):
    return f'bn.{name}'
  if isinstance(module, (nn.Conv3d, nn.Conv2d, CoSTa, CoSTb)) and name == 'weight':
    return 'conv'
  if isinstance(module, CoSTa) and name == 'alpha':
    return 'alpha'
  if isinstance(module, (CoSTa, CoSTb)) and name == 'bias':
    return 'bias'
  if isinstance(module, nn.Linear) and owner in ('fc1', 'fc2'):
    return owner
  if isinstance(module, nn.Linear) and owner == 'fc_cls':
    return f'head.{name}'
  raise ValueError(f'no random rule for {key} ({type(module).__name__})')


def draw(rng: np.random.RandomState, kind: str, shape: tuple[int, ...]) -> np.ndarray:
  """One random tensor of the given kind; floats are float32, num_batches_tracked int64."""
  if kind == 'bn.num_batches_tracked':
    return np.array(rng.randint(1, 10000), np.int64)
  if kind == 'conv':
    value = rng.standard_normal(shape) * math.sqrt(1.0 / math.prod(shape[1:]))
  elif kind == 'bn.weight':
    value = rng.uniform(0.6, 1.4, shape)
  elif kind in ('bn.bias', 'bn.running_mean'):
    value = rng.normal(0.0, 0.2, shape)
  elif kind == 'bn.running_var':
    value = rng.uniform(0.5, 2.0, shape)
  elif kind in ('alpha', 'fc2'):
    value = rng.standard_normal(shape)
  elif kind in ('fc1', 'head.weight'):
    value = rng.standard_normal(shape) / math.sqrt(shape[1])
  elif kind in ('head.bias', 'bias'):
    value = rng.normal(0.0, 0.1, shape)
  else:
    raise ValueError(f'unknown kind {kind}')
  return value.astype(np.float32)


def randomize(model: nn.Module, seed: int) -> collections.OrderedDict:
  """Overwrites every parameter and buffer, drawn in state_dict order; returns a copy of them."""
  rng = np.random.RandomState(seed)
  state = model.state_dict()
  for key, tensor in state.items():
    value = draw(rng, _value_kind(model, key), tuple(tensor.shape))
    assert value.shape == tuple(tensor.shape), key
    state[key] = torch.from_numpy(value)
  model.load_state_dict(state, strict=True)
  state = model.state_dict()  # keeps torch's _metadata; copies, so later forwards leave it alone
  for key in state:
    state[key] = state[key].clone()
  return state


def save_checkpoint(
  path: str, arch: str, config: dict[str, Any], state: dict, versions: dict[str, str]
) -> None:
  meta = {
    'mmaction2_version': versions['mmaction2'],
    'mmcv_version': versions['mmcv'],
    'arch': arch,
    'depth': DEPTH,
    'base_channels': BASE_CHANNELS,
    'num_classes': NUM_CLASSES,
    'note': 'random non-trivial weights (not trained)',
    'config': pprint.pformat({'model': config}),
  }
  torch.save({'meta': meta, 'state_dict': state}, path)


def count(model: nn.Module) -> tuple[int, int]:
  return sum(p.numel() for p in model.parameters()), len(model.state_dict())


# Forward passes.


@contextlib.contextmanager
def stage_outputs(model: nn.Module) -> Iterator[dict[str, np.ndarray]]:
  """Records the outputs of the stem pool and layer1..3 (layer2's input went through pool2)."""
  out: dict[str, np.ndarray] = {}

  def hook(name: str) -> Callable:
    return lambda module, args, result: out.__setitem__(name, result.detach().numpy().copy())

  handles = [getattr(model.backbone, name).register_forward_hook(hook(name)) for name in STAGES]
  try:
    yield out
  finally:
    for handle in handles:
      handle.remove()


def eval_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
  """Eval mode: features, logits, stage outputs, and the test score of 2 clips of one video."""
  model.eval()
  with torch.no_grad(), stage_outputs(model) as stages:
    feat = model.extract_feat(x)
    logits = model.cls_head(feat)
  with torch.no_grad():
    test_score = model(x[None], return_loss=False)  # Recognizer3D: (videos, clips, ...)
  out = {
    'eval_feat': feat.numpy(),
    'eval_logits': logits.numpy(),
    'eval_test_score': np.asarray(test_score, np.float32),
  }
  out.update({f'eval_stage_{name}': stages[name] for name in STAGES})
  return out


def train_outputs(
  model: nn.Module, state: dict, x: torch.Tensor, labels: np.ndarray
) -> dict[str, np.ndarray]:
  """Train mode (batch-statistics BN, head dropout off): outputs, loss and updated BN buffers."""
  model.load_state_dict(state, strict=True)
  model.train()
  model.cls_head.dropout.eval()
  with torch.no_grad():
    feat = model.extract_feat(x)
    logits = model.cls_head(feat)
    loss = model.cls_head.loss(logits, torch.from_numpy(labels))['loss_cls']
  out = {
    'train_feat': feat.numpy(),
    'train_logits': logits.numpy(),
    'train_labels': labels,
    'train_loss_cls': np.asarray(loss.numpy(), np.float32),
  }
  for key, tensor in model.state_dict().items():
    if key.endswith(('running_mean', 'running_var', 'num_batches_tracked')):
      out[f'train_bn_after:{key}'] = tensor.numpy().copy()
  return out


def check_reload(config: dict[str, Any], path: str, x: torch.Tensor, logits: np.ndarray) -> None:
  """The saved .pth, loaded by mmcv into a fresh model, gives the same eval logits, bit for bit."""
  from mmcv.runner import load_checkpoint

  model = build(config)
  load_checkpoint(model, path, map_location='cpu', strict=True)
  model.eval()
  with torch.no_grad():
    again = model.cls_head(model.extract_feat(x)).numpy()
  if not np.array_equal(again, logits):
    raise AssertionError(f'{path}: reloaded model gives other logits')


def run_arch(
  arch: str, cost_repo: str, out_dir: str, x: torch.Tensor, versions: dict[str, str]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Builds, randomizes, saves and runs one arch; returns its manifest entry and io arrays."""
  config = model_config(arch, cost_repo)
  torch.manual_seed(SEEDS[arch])
  model = build(config)
  n_params, n_state = count(model)
  if (n_params, n_state) != EXPECTED_COUNTS[arch]:
    raise AssertionError(
      f'{arch}: {n_params} parameters, {n_state} tensors; expected {EXPECTED_COUNTS[arch]}'
    )
  state = randomize(model, SEEDS[arch])
  path = os.path.join(out_dir, f'{arch}.pth')
  save_checkpoint(path, arch, config, state, versions)
  io = eval_outputs(model, x)
  check_reload(config, path, x, io['eval_logits'])
  labels = np.random.RandomState(SEEDS[arch] + 1000).randint(0, NUM_CLASSES, 2).astype(np.int64)
  io.update(train_outputs(model, state, x, labels))
  entry = {
    'depth': DEPTH,
    'config': config,
    'n_params': n_params,
    'n_state_tensors': n_state,
    'io': {
      'io': {
        'input_shape': list(x.shape),
        'feat_shape': list(io['eval_feat'].shape),
        'logits_shape': list(io['eval_logits'].shape),
        'eval_logits_absmax': float(np.abs(io['eval_logits']).max()),
        'train_loss_cls': float(io['train_loss_cls']),
      }
    },
  }
  return entry, io


# The 2-D ResNet and mmaction2's inflation.


def resnet2d_layout(width: int = BASE_CHANNELS) -> list[tuple[str, tuple[int, ...], str]]:
  """(key, shape, kind) of a torchvision ResNet-50 state_dict at the given stem width."""
  entries: list[tuple[str, tuple[int, ...], str]] = []

  def conv_bn(conv: str, bn: str, cout: int, cin: int, k: int) -> None:
    entries.append((f'{conv}.weight', (cout, cin, k, k), 'conv'))
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
      entries.append((f'{bn}.{name}', (cout,), f'bn.{name}'))
    entries.append((f'{bn}.num_batches_tracked', (), 'bn.num_batches_tracked'))

  conv_bn('conv1', 'bn1', width, 3, 7)
  inplanes = width
  for stage, blocks in enumerate((3, 4, 6, 3)):
    planes = width * 2**stage
    for block in range(blocks):
      p = f'layer{stage + 1}.{block}'
      conv_bn(f'{p}.conv1', f'{p}.bn1', planes, inplanes, 1)
      conv_bn(f'{p}.conv2', f'{p}.bn2', planes, planes, 3)
      conv_bn(f'{p}.conv3', f'{p}.bn3', planes * 4, planes, 1)
      if block == 0:
        conv_bn(f'{p}.downsample.0', f'{p}.downsample.1', planes * 4, inplanes, 1)
      inplanes = planes * 4
  entries.append(('fc.weight', (NUM_CLASSES, inplanes), 'head.weight'))
  entries.append(('fc.bias', (NUM_CLASSES,), 'head.bias'))
  return entries


def write_resnet2d(path: str) -> collections.OrderedDict:
  rng = np.random.RandomState(RESNET2D_SEED)
  state = collections.OrderedDict(
    (key, torch.from_numpy(draw(rng, kind, shape))) for key, shape, kind in resnet2d_layout()
  )
  torch.save(state, path)
  return state


@contextlib.contextmanager
def recording_inflation(records: list) -> Iterator[None]:
  """Records (3-D module, 2-D name, 2-D keys used) from ResNet3d's conv/BN inflation helpers.

  The wrappers call mmaction2's own helpers unchanged and only observe what they copied.
  """
  from mmaction.models.backbones.resnet3d import ResNet3d

  names = ('_inflate_conv_params', '_inflate_bn_params')
  originals = {name: ResNet3d.__dict__[name] for name in names}

  def recorder(fn: Callable) -> staticmethod:
    def wrapped(module3d, state_dict_2d, name_2d, inflated_names):
      start = len(inflated_names)
      fn(module3d, state_dict_2d, name_2d, inflated_names)
      records.append((module3d, name_2d, list(inflated_names[start:])))

    return staticmethod(wrapped)

  try:
    for name in names:
      setattr(ResNet3d, name, recorder(originals[name].__func__))
    yield
  finally:
    for name in names:
      setattr(ResNet3d, name, originals[name])


def inflate(arch: str, cost_repo: str, resnet2d_path: str) -> tuple[dict, dict[str, str]]:
  """Builds `arch` with pretrained2d from the 2-D file: backbone state, 3-D key -> 2-D key."""
  config = model_config(arch, cost_repo)
  config['backbone']['pretrained'] = resnet2d_path
  records: list = []
  torch.manual_seed(SEEDS[arch])
  with recording_inflation(records):
    model = build(config)  # BaseRecognizer.__init__ -> backbone.init_weights -> inflate
  qualified = {id(module): name for name, module in model.backbone.named_modules()}
  from_2d = {}
  for module3d, name_2d, keys_2d in records:
    for key_2d in keys_2d:
      from_2d[qualified[id(module3d)] + key_2d[len(name_2d) :]] = key_2d
  return model.backbone.state_dict(), from_2d


def check_inflation(state3d: dict, state2d: dict, from_2d: dict[str, str]) -> None:
  """Every recorded tensor is the 2-D one (conv weights repeated over T and divided by kt)."""
  for key3d, key2d in from_2d.items():
    got, src = state3d[key3d], state2d[key2d]
    if got.ndim == 5:
      kt = got.shape[2]
      src = src.unsqueeze(2).expand_as(got) / kt
    if not torch.equal(got, src):
      raise AssertionError(f'inflated {key3d} is not {key2d}')


def run_inflation(cost_repo: str, out_dir: str) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
  """inflation.json content and, per arch, the inflated tensors (backbone-relative keys)."""
  path = os.path.join(out_dir, 'resnet2d_tv.pth')
  state2d = torch.load(path)
  report, tensors = {}, {}
  for arch in ARCHS:
    state3d, from_2d = inflate(arch, cost_repo, path)
    check_inflation(state3d, state2d, from_2d)
    used = set(from_2d.values())
    report[arch] = {
      'from_2d': from_2d,
      'kept_at_init': [k for k in state3d if k not in from_2d],
      'unused_2d_keys': [k for k in state2d if k not in used],
    }
    tensors[arch] = {k: v.numpy().copy() for k, v in state3d.items() if k in from_2d}
  return report, tensors


def merge_inflated(tensors: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """One entry per key when every arch that has it agrees, else `{arch}/{key}` entries."""
  keys = list(dict.fromkeys(k for arch in ARCHS for k in tensors[arch]))
  merged = {}
  for key in keys:
    values = {arch: tensors[arch][key] for arch in ARCHS if key in tensors[arch]}
    first = next(iter(values.values()))
    if all(
      v.dtype == first.dtype and v.shape == first.shape and np.array_equal(v, first)
      for v in values.values()
    ):
      merged[key] = first
    else:
      merged.update({f'{arch}/{key}': v for arch, v in values.items()})
  return merged


# Stand-alone CoST layers.


def cost_layer_cases(rng: np.random.RandomState) -> tuple[dict[str, np.ndarray], list[dict]]:
  """CoSTa/CoSTb (5 -> 6 channels, k 3, padding 1, bias) at three strides: views and outputs."""
  from cost.models.common import CoSTa, CoSTb
  from cost.models.common.conv_cost import conv3v

  arrays, cases = {}, []
  for cls in (CoSTa, CoSTb):
    for suffix, stride in COST_LAYER_STRIDES.items():
      tag = f'{cls.__name__}_{suffix}'
      layer = cls(5, 6, kernel_size=3, stride=stride, padding=1, bias=True)
      x = torch.from_numpy(rng.standard_normal(COST_LAYER_IN_SHAPE).astype(np.float32))
      arrays[f'{tag}:input'] = x.numpy()
      for key, value in randomize(layer, rng.randint(2**31)).items():
        arrays[f'{tag}:param:{key}'] = value.numpy()
      with torch.no_grad():
        views = conv3v(x, layer.weight, layer.stride, layer.padding, layer.dilation, layer.groups)
        output = layer(x)
      for name, view in zip(('hw', 'tw', 'th'), views):
        arrays[f'{tag}:view_{name}'] = view.numpy()
      arrays[f'{tag}:output'] = output.numpy()
      cases.append(
        {
          'tag': tag,
          'cls': cls.__name__,
          'in_channels': 5,
          'out_channels': 6,
          'kernel_size': 3,
          'stride': list(stride),
          'padding': 1,
          'bias': True,
          'input_shape': list(x.shape),
          'output_shape': list(output.shape),
        }
      )
  return arrays, cases


# The data pipeline.


def pipeline_step(cfg: dict[str, Any]) -> Callable[[dict], dict]:
  from mmaction.datasets.builder import PIPELINES
  from mmcv.utils import build_from_cfg

  return build_from_cfg(dict(cfg), PIPELINES)


def sample(
  total: int, clip_len: int, interval: int, num_clips: int, start_index: int = 0, **kwargs: Any
) -> list[int]:
  step = pipeline_step(
    dict(
      type='SampleFrames',
      clip_len=clip_len,
      frame_interval=interval,
      num_clips=num_clips,
      test_mode=True,
      **kwargs,
    )
  )
  return [int(i) for i in step(dict(total_frames=total, start_index=start_index))['frame_inds']]


def sample_frames_cases() -> list[dict[str, Any]]:
  """Every clip_len x interval x num_clips, with totals around clip_len and the clip span."""
  cases = []
  for clip_len in (1, 2, 4, 8, 16):
    for interval in (1, 2, 3, 8):
      for num_clips in (1, 2, 10):
        span = clip_len * interval
        totals = {
          1,
          2,
          clip_len - 1,
          clip_len,
          clip_len + 1,
          span - 1,
          span,
          span + 1,
          span + num_clips - 1,
          2 * span + 3,
          300,
        }
        for total in sorted(t for t in totals if t >= 1):
          cases.append(
            {
              'total_frames': total,
              'clip_len': clip_len,
              'frame_interval': interval,
              'num_clips': num_clips,
              'frame_inds': sample(total, clip_len, interval, num_clips),
            }
          )
  return cases


def sample_frames_extra() -> list[dict[str, Any]]:
  """start_index 1, out_of_bound_opt 'repeat_last' and twice_sample, for 8x8 clips."""
  variants = ((1, 'loop', False), (0, 'repeat_last', False), (0, 'loop', True))
  cases = []
  for total in (1, 5, 63, 64, 192):
    for num_clips in (1, 3):
      for start_index, oob, twice in variants:
        inds = sample(total, 8, 8, num_clips, start_index, out_of_bound_opt=oob, twice_sample=twice)
        cases.append(
          {
            'total_frames': total,
            'clip_len': 8,
            'frame_interval': 8,
            'num_clips': num_clips,
            'start_index': start_index,
            'out_of_bound_opt': oob,
            'twice_sample': twice,
            'frame_inds': inds,
          }
        )
  return cases


def _frames(hw: tuple[int, int], n: int = 1) -> list[np.ndarray]:
  return [np.zeros(hw + (3,), np.uint8) for _ in range(n)]


def resize_cases() -> list[dict[str, Any]]:
  step = pipeline_step(dict(type='Resize', scale=(-1, 256)))
  cases = []
  for hw in RESIZE_CASES:
    r = step(dict(imgs=_frames(hw), img_shape=hw, modality='RGB'))
    assert tuple(r['imgs'][0].shape[:2]) == tuple(r['img_shape'])
    cases.append(
      {
        'in_hw': list(hw),
        'out_hw': [int(v) for v in r['img_shape']],
        'scale_factor_wh': [float(v) for v in r['scale_factor']],
      }
    )
  return cases


def center_crop_cases() -> list[dict[str, Any]]:
  step = pipeline_step(dict(type='CenterCrop', crop_size=224))
  cases = []
  for hw in CENTER_CROP_CASES:
    r = step(dict(imgs=_frames(hw), img_shape=hw, modality='RGB'))
    cases.append(
      {
        'in_hw': list(hw),
        'crop_bbox_xyxy': [int(v) for v in r['crop_bbox']],
        'reported_img_shape': [int(v) for v in r['img_shape']],
        'actual_array_hw': list(r['imgs'][0].shape[:2]),
      }
    )
  return cases


def three_crop_cases(n_frames: int = 2) -> list[dict[str, Any]]:
  step = pipeline_step(dict(type='ThreeCrop', crop_size=256))
  cases = []
  for hw in THREE_CROP_CASES:
    r = step(dict(imgs=_frames(hw, n_frames), img_shape=hw, modality='RGB'))
    boxes = r['crop_bbox'][::n_frames]  # one box per frame, crop-major
    cases.append(
      {
        'in_hw': list(hw),
        'n_frames': n_frames,
        'crop_bboxes_xyxy': [[int(v) for v in box] for box in boxes],
        'out_hw': list(r['imgs'][0].shape[:2]),
      }
    )
  return cases


def e2e_configs() -> dict[str, list[dict[str, Any]]]:
  """Scaled-down copies of the released val and test pipelines (ArrayDecode for decord)."""

  def pipeline(num_clips: int, crop: dict[str, Any]) -> list[dict[str, Any]]:
    return [
      dict(type='SampleFrames', clip_len=4, frame_interval=2, num_clips=num_clips, test_mode=True),
      dict(type='ArrayDecode'),
      dict(type='Resize', scale=(-1, 16)),
      crop,
      dict(type='Normalize', **NORM),
      dict(type='FormatShape', input_format='NCTHW'),
    ]

  return {
    'val': pipeline(1, dict(type='CenterCrop', crop_size=14)),
    'test': pipeline(3, dict(type='ThreeCrop', crop_size=16)),
  }


def run_e2e(video: np.ndarray, config: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Runs one pipeline on the video; keeps the frame indices and the frames right after Resize."""
  results = dict(array=video, total_frames=len(video), start_index=0, modality='RGB')
  resized = None
  for cfg in config:
    results = pipeline_step(cfg)(results)
    if cfg['type'] == 'Resize':
      resized = np.stack(results['imgs'])
  return {
    'imgs': np.asarray(results['imgs'], np.float32),
    'frame_inds': np.asarray(results['frame_inds'], np.int64),
    'resized_uint8': resized.astype(np.uint8),
  }


def run_pipeline() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """pipeline.json content and pipeline_e2e.npz arrays."""
  video = np.random.RandomState(VIDEO_SEED).randint(0, 256, VIDEO_SHAPE).astype(np.uint8)
  arrays = {'video_THWC_uint8': video}
  e2e = {'video_shape_THWC': list(VIDEO_SHAPE), 'pipelines': {}}
  for name, config in e2e_configs().items():
    out = run_e2e(video, config)
    arrays.update({f'{name}_{k}': v for k, v in out.items()})
    e2e['pipelines'][name] = {
      'config': _plain_json(config),
      'out_shape': list(out['imgs'].shape),
      'frame_inds': out['frame_inds'].tolist(),
      'resized_hw': list(out['resized_uint8'].shape[1:3]),
    }
  data = {
    'source': 'mmaction2 0.24.1 pipeline classes',
    'sample_frames': {
      'common': {
        'test_mode': True,
        'start_index': 0,
        'out_of_bound_opt': 'loop',
        'twice_sample': False,
        'temporal_jitter': False,
      },
      'cases': sample_frames_cases(),
    },
    'sample_frames_extra': sample_frames_extra(),
    'resize_short_side_256': {'transform': 'Resize(scale=(-1, 256))', 'cases': resize_cases()},
    'center_crop_224': {'transform': 'CenterCrop(crop_size=224)', 'cases': center_crop_cases()},
    'three_crop_256': {'transform': 'ThreeCrop(crop_size=256)', 'cases': three_crop_cases()},
    'e2e': e2e,
  }
  return data, arrays


def _plain_json(value: Any) -> Any:
  return json.loads(json.dumps(value))


# Bit-exact resizes at the configs' scales.


def random_frames(hw: tuple[int, int], n: int, seed: int) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, 256, (n, *hw, 3), dtype=np.uint8)


def _sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _recorded(
  key: str, out: np.ndarray, strips: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
  """An output as the tests check it: the shape and sha256 of all of it; with `strips`, also its
  first frame's middle row and middle column in full (which show where, and by how much, another
  output differs)."""
  if strips is not None:
    strips[f'{key}:middle_row'] = out[0, out.shape[1] // 2].copy()
    strips[f'{key}:middle_col'] = out[0, :, out.shape[2] // 2].copy()
  return {'shape': list(out.shape), 'sha256': _sha256(out)}


def run_steps(frames: np.ndarray, configs: Any) -> tuple[dict, list[np.ndarray]]:
  """MMAction2's transforms in a row on (n, h, w, 3) frames: the results and a copy of the
  frames after each step (Flip flips in place)."""
  results = dict(imgs=list(frames), img_shape=frames.shape[1:3], modality='RGB')
  after = []
  for cfg in configs:
    results = pipeline_step(cfg)(results)
    after.append(np.stack(results['imgs']).copy())
  return results, after


def resize_exact_cases() -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """pipeline.json's `resize_exact` cases and their strips (resize_exact.npz)."""
  cases, strips = [], {}
  for name, hw, n, seed, short_side, crop in RESIZE_EXACT_EVAL:
    frames = random_frames(hw, n, seed)
    steps = (dict(type='Resize', scale=(-1, short_side)), dict(type='CenterCrop', crop_size=crop))
    _, (resized, cropped) = run_steps(frames, steps)
    cases.append(
      {
        'name': name,
        'setting': 'eval',
        'in_hw': list(hw),
        'n_frames': n,
        'seed': seed,
        'input_sha256': _sha256(frames),
        'pipeline': _plain_json(steps),
        'resized': _recorded(f'{name}/resized', resized, strips),
        'center_crop': _recorded(f'{name}/center_crop', cropped),
      }
    )
  for name, hw, n, seed in RESIZE_EXACT_TRAIN:
    frames = random_frames(hw, n, seed)
    np.random.seed(seed)
    results, (rescaled, _, flipped) = run_steps(frames, RESIZE_EXACT_TRAIN_PIPELINE)
    x1, y1, _, _ = (int(v) for v in results['crop_bbox'])
    cases.append(
      {
        'name': name,
        'setting': 'train',
        'in_hw': list(hw),
        'n_frames': n,
        'seed': seed,
        'input_sha256': _sha256(frames),
        'pipeline': _plain_json(RESIZE_EXACT_TRAIN_PIPELINE),
        'short_edge': int(results['short_edge']),
        'crop_top_left': [y1, x1],
        'flip': bool(results['flip']),
        'rescaled': _recorded(f'{name}/rescaled', rescaled, strips),
        'crop': _recorded(f'{name}/crop', flipped),
      }
    )
  return cases, strips


# The lossless-frames tests: MMAction2's test-time pipelines on the tests' own inputs.


def lossless_configs(
  init: tuple[dict[str, Any], ...], decode: tuple[dict[str, Any], ...]
) -> dict[str, list[dict[str, Any]]]:
  """The val and test pipelines of the two tests (no Normalize: they compare uint8 clips), with
  the loading steps of MMAction2's configs: `init` before SampleFrames, `decode` after it."""

  def pipeline(num_clips: int, crop: dict[str, Any]) -> list[dict[str, Any]]:
    return [
      *init,
      dict(type='SampleFrames', num_clips=num_clips, **LOSSLESS_SAMPLING),
      *decode,
      dict(type='Resize', scale=(-1, LOSSLESS_SHORT_SIDE)),
      crop,
      dict(type='FormatShape', input_format='NCTHW'),
    ]

  return {
    'val': pipeline(1, dict(type='CenterCrop', crop_size=LOSSLESS_VAL_CROP)),
    'test': pipeline(LOSSLESS_TEST_CLIPS, dict(type='ThreeCrop', crop_size=LOSSLESS_TEST_CROP)),
  }


# Frame folders (RawframeDataset) and video files (VideoDataset), as the released configs load them.
LOADING = {
  'frames': ((), (dict(type='RawFrameDecode'),)),
  'video': ((dict(type='DecordInit'),), (dict(type='DecordDecode'),)),
}


def read_lossless_inputs(path: str) -> dict[str, tuple[str, np.ndarray]]:
  """name -> ('frames', uint8 THWC frames) or ('video', the bytes of a video file), from the
  `{name}:frames` / `{name}:video` arrays of an .npz (the fixture itself, by default)."""
  inputs = {}
  with np.load(path) as data:
    for key in data.files:
      name, _, field = key.rpartition(':')
      if field in ('frames', 'video'):
        inputs[name] = (field, data[key])
  if not inputs:
    raise SystemExit(f'{path} holds no `NAME:frames` or `NAME:video` arrays')
  return inputs


def run_lossless(inputs: dict[str, tuple[str, np.ndarray]]) -> tuple[dict, dict[str, np.ndarray]]:
  """pipeline.json's `lossless_crops` entry and lossless_crops.npz: the inputs again, and per
  name and mode the pipeline's uint8 output (FormatShape's NCTHW) and frame indices."""
  import tempfile

  import mmcv

  arrays: dict[str, np.ndarray] = {}
  videos = {}
  with tempfile.TemporaryDirectory() as tmp:
    for i, (name, (kind, data)) in enumerate(sorted(inputs.items())):
      arrays[f'{name}:{kind}'] = data
      if kind == 'frames':  # PNG files (lossless); mmcv writes BGR arrays
        frame_dir = os.path.join(tmp, f'frames{i}')
        for t, frame in enumerate(data):
          path = os.path.join(frame_dir, LOSSLESS_FRAME_TMPL.format(t + 1))
          mmcv.imwrite(np.ascontiguousarray(frame[..., ::-1]), path)
        start = dict(frame_dir=frame_dir, total_frames=len(data), start_index=1)
        start['filename_tmpl'] = LOSSLESS_FRAME_TMPL
      else:
        start = dict(filename=os.path.join(tmp, f'video{i}{os.path.splitext(name)[1]}'))
        start['start_index'] = 0
        with open(start['filename'], 'wb') as f:
          f.write(data.tobytes())
      entry = {'input': kind}
      for mode, config in lossless_configs(*LOADING[kind]).items():
        results = dict(start, modality='RGB')
        for cfg in config:
          results = pipeline_step(cfg)(results)
        imgs = np.asarray(results['imgs'])
        assert imgs.dtype == np.uint8, imgs.dtype
        arrays[f'{name}:{mode}'] = imgs
        arrays[f'{name}:{mode}_frame_inds'] = np.asarray(results['frame_inds'], np.int64)
        entry[f'{mode}_shape'] = list(imgs.shape)
      videos[name] = entry
  configs = {kind: lossless_configs(*loading) for kind, loading in LOADING.items()}
  return {'pipelines': _plain_json(configs), 'videos': videos}, arrays


# Output.


def write_json(path: str, data: Any, **kwargs: Any) -> None:
  with open(path, 'w') as f:
    json.dump(data, f, **kwargs)
    f.write('\n')


def write_models(cost_repo: str, out_dir: str, versions: dict[str, str]) -> dict[str, Any]:
  """{arch}.pth and io.npz; returns the per-arch manifest entries."""
  x = np.random.RandomState(INPUT_SEED).standard_normal(INPUT_SHAPE).astype(np.float32)
  io = {'input': x}
  entries = {}
  for arch in ARCHS:
    entries[arch], arrays = run_arch(arch, cost_repo, out_dir, torch.from_numpy(x), versions)
    io.update({f'{arch}/{k}': v for k, v in arrays.items()})
    print(
      f'{arch}: {entries[arch]["n_params"]} parameters, '
      f'loss {entries[arch]["io"]["io"]["train_loss_cls"]:.4f}',
      flush=True,
    )
  np.savez_compressed(os.path.join(out_dir, 'io.npz'), **io)
  return entries


def write_inflation(cost_repo: str, out_dir: str, entries: dict[str, Any]) -> None:
  """resnet2d_tv.pth, inflation.npz and inflation.json; adds the summaries to `entries`."""
  write_resnet2d(os.path.join(out_dir, 'resnet2d_tv.pth'))
  report, tensors = run_inflation(cost_repo, out_dir)
  np.savez_compressed(os.path.join(out_dir, 'inflation.npz'), **merge_inflated(tensors))
  write_json(os.path.join(out_dir, 'inflation.json'), report, indent=1, sort_keys=True)
  for arch in ARCHS:
    entries[arch]['inflation'] = {
      'source_file': 'resnet2d_tv.pth',
      'n_from_2d': len(report[arch]['from_2d']),
      'kept_at_init': report[arch]['kept_at_init'],
      'unused_2d_keys': report[arch]['unused_2d_keys'],
    }


def write_pipeline(out_dir: str, lossless_inputs: str) -> None:
  """pipeline.json, pipeline_e2e.npz, resize_exact.npz and lossless_crops.npz."""
  inputs = read_lossless_inputs(lossless_inputs)  # before writing: it may be the file replaced
  pipeline, e2e_arrays = run_pipeline()
  pipeline['resize_exact'], strips = resize_exact_cases()
  pipeline['lossless_crops'], lossless_arrays = run_lossless(inputs)
  write_json(os.path.join(out_dir, 'pipeline.json'), pipeline, separators=(',', ':'))
  np.savez_compressed(os.path.join(out_dir, 'pipeline_e2e.npz'), **e2e_arrays)
  np.savez_compressed(os.path.join(out_dir, 'resize_exact.npz'), **strips)
  np.savez_compressed(os.path.join(out_dir, 'lossless_crops.npz'), **lossless_arrays)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cost-repo', help='checkout of github.com/hikvision-research/cost')
  parser.add_argument('--output', required=True, help='folder to write (created if missing)')
  parser.add_argument(
    '--pipeline-only',
    action='store_true',
    help='write only the data-pipeline files (no models, no --cost-repo needed)',
  )
  parser.add_argument(
    '--lossless-inputs',
    default=LOSSLESS_INPUTS,
    help=".npz with the lossless-frames tests' inputs (default: the committed fixture)",
  )
  args = parser.parse_args(argv)
  if not args.pipeline_only and not args.cost_repo:
    parser.error('--cost-repo is required unless --pipeline-only')
  os.makedirs(args.output, exist_ok=True)
  if args.pipeline_only:
    import_mmaction2()
    write_pipeline(args.output, args.lossless_inputs)
    print(f'wrote the pipeline files to {args.output}')
    return
  versions = import_stack(args.cost_repo)
  torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
  entries = write_models(args.cost_repo, args.output, versions)
  write_inflation(args.cost_repo, args.output, entries)
  layer_arrays, layer_cases = cost_layer_cases(np.random.RandomState(COST_LAYER_SEED))
  np.savez_compressed(os.path.join(args.output, 'cost_layers.npz'), **layer_arrays)
  write_pipeline(args.output, args.lossless_inputs)
  manifest = {
    'set': 'shared',
    'versions': {k: versions[k] for k in ('torch', 'mmcv', 'mmaction2', 'numpy')},
    'base_channels': BASE_CHANNELS,
    'num_classes': NUM_CLASSES,
    'archs': entries,
    'inputs': {'io': list(INPUT_SHAPE)},
    'resnet2d': {
      'resnet2d_tv.pth': {
        'depth': DEPTH,
        'width': BASE_CHANNELS,
        'n_tensors': len(resnet2d_layout()),
      }
    },
    'cost_layers': layer_cases,
  }
  write_json(os.path.join(args.output, 'manifest.json'), manifest, indent=1)
  print(f'wrote {sorted(os.listdir(args.output))} to {args.output} (cost {versions["cost"]})')


if __name__ == '__main__':
  main()
