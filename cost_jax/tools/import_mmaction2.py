"""Import an MMAction2/CoST checkpoint (.pth or .npz) as a cost_jax model directory.

  python -m cost_jax.tools.import_mmaction2 CHECKPOINT.pth --output DIR \
      [--config configs/costb_k400.py]

Prints the detected architecture; with --config the checkpoint must match that config.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from cost_jax.models import count_params
from cost_jax.weights import import_mmaction2
from cost_jax.weights.saved import save_model

_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write the model to.', required=True)
_STRICT = flags.DEFINE_bool('strict', True, 'Fail on any missing, unexpected or mismatched key.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config the checkpoint must match.')


def describe(model_config) -> str:
  inflated = sum(map(sum, model_config.inflate))
  return (
    f'arch={model_config.arch} depth={model_config.depth} '
    f'base_channels={model_config.base_channels} num_classes={model_config.num_classes} '
    f'conv1_kernel={tuple(model_config.conv1_kernel)} '
    f'conv1_stride_t={model_config.conv1_stride_t} '
    f'pool1_stride_t={model_config.pool1_stride_t} inflated_blocks={inflated}'
  )


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('give exactly one checkpoint path')
  model_config, variables = import_mmaction2(argv[1], config=_CONFIG.value, strict=_STRICT.value)
  directory = save_model(_OUTPUT.value, model_config, variables)
  print(f'{argv[1]}: {describe(model_config)}')
  print(f'parameters: {count_params(variables["params"]):,}; written to {directory}')


if __name__ == '__main__':
  sys.exit(app.run(main))
