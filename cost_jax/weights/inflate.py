"""2D ImageNet ResNet (torchvision layout) -> 3D model, as MMAction2's `pretrained2d=True`.

Each 3D conv takes the 2D kernel of the same name when the shapes agree without the temporal
axis, repeated over time and divided by the temporal kernel size; BatchNorm tensors are copied.
Everything else (the CoST coefficients alpha / fc1 / fc2, the head, and any conv whose shape does
not fit) keeps the model's own initialisation. The 2D `fc` is ignored.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from cost_jax.models.variables import init_variables
from cost_jax.weights import mmaction2
from cost_jax.weights.torch_pickle import load_state_dict

_BN_LEAVES = ('weight', 'bias', 'running_mean', 'running_var')


@dataclasses.dataclass
class InflationReport:
  from_2d: dict[str, str]  # 3D key -> 2D key it was inflated from
  kept_at_init: list[str]  # 3D keys the 2D file did not provide
  unused_2d_keys: list[str]  # 2D keys no 3D tensor used


def _names_2d(module_3d: str) -> tuple[str, str]:
  """A 3D ConvModule name (backbone-relative) -> (2D conv name, 2D BN name)."""
  if module_3d.endswith('.downsample'):
    return f'{module_3d}.0', f'{module_3d}.1'
  head, _, last = module_3d.rpartition('.')
  bn = last.replace('conv', 'bn')
  return module_3d, f'{head}.{bn}' if head else bn


def inflate_state_dict(
  state_2d: Mapping[str, np.ndarray], state_3d: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], InflationReport]:
  """Inflates backbone-relative 3D tensors (torch layout) from a torchvision 2D state dict."""
  out = dict(state_3d)
  from_2d, used = {}, set()
  modules = {k.rsplit('.', 2)[0] for k in state_3d if k.endswith('.conv.weight')}
  for module in sorted(modules):
    conv2d_name, bn2d_name = _names_2d(module)
    key3d, key2d = f'{module}.conv.weight', f'{conv2d_name}.weight'
    w3d = state_3d[key3d]
    if key2d in state_2d:
      w2d = np.asarray(state_2d[key2d], np.float32)
      if w2d.shape == w3d.shape[:2] + w3d.shape[3:]:
        kt = w3d.shape[2]
        out[key3d] = np.repeat(w2d[:, :, None], kt, axis=2) / kt
        from_2d[key3d] = key2d
        used.add(key2d)
      else:
        logging.warning(
          'inflate: %s %s does not fit %s %s; kept at init', key2d, w2d.shape, key3d, w3d.shape
        )
    for leaf in _BN_LEAVES:
      k3, k2 = f'{module}.bn.{leaf}', f'{bn2d_name}.{leaf}'
      if k3 in state_3d and k2 in state_2d and np.size(state_2d[k2]) == np.size(state_3d[k3]):
        out[k3] = np.asarray(state_2d[k2], np.float32).reshape(state_3d[k3].shape)
        from_2d[k3] = k2
        used.add(k2)
  kept = [k for k in state_3d if k not in from_2d]
  unused = [k for k in state_2d if k not in used and not k.endswith('num_batches_tracked')]
  return out, InflationReport(from_2d, kept, unused)


def inflate_resnet2d(
  path: str, model_config: Mapping[str, Any], seed: int = 0, return_report: bool = False
):
  """Flax variables of `model_config`, initialised from the 2D ResNet checkpoint at `path`."""
  state_2d, _ = load_state_dict(path)
  variables = jax.jit(functools.partial(init_variables, model_config))(jax.random.key(seed))
  full = mmaction2.variables_to_state_dict(variables)
  backbone = {k[len('backbone.') :]: v for k, v in full.items() if k.startswith('backbone.')}
  inflated, report = inflate_state_dict(state_2d, backbone)
  if not report.from_2d:
    raise ValueError(
      f'{path}: no tensor matched the model; is it a torchvision ResNet state '
      f'dict of width {model_config["base_channels"]}?'
    )
  if report.unused_2d_keys:
    logging.info('inflate: 2D keys not used: %s', report.unused_2d_keys)
  full.update({f'backbone.{k}': v for k, v in inflated.items()})
  result = mmaction2.state_dict_to_variables(full, model_config, source=path)
  return (result, report) if return_report else result
