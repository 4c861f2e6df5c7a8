r"""Import an MMAction2/CoST checkpoint (.pth or .npz) as a cost_jax model directory.

  python -m cost_jax.tools.import_mmaction2 CHECKPOINT.pth --output DIR \
      [--config configs/costb_k400.py]

Prints the detected architecture; with --config the checkpoint must match that config.
Without a checkpoint or --output it prints a short usage and exits with status 2; a checkpoint
that cannot be imported is one line, status 2. COST_JAX_VERBOSE=1 shows the start-up logs of
TensorFlow, XLA and JAX, and orbax's log of the save.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from cost_jax import cli
from cost_jax.checkpoints import orbax_quiet
from cost_jax.models import count_params
from cost_jax.weights import import_mmaction2
from cost_jax.weights.saved import save_model

PROG = 'cost_jax.tools.import_mmaction2'
_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write the model to (required).')
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


def _usage_mistake(argv) -> str | None:
  """What is wrong with the command line, if anything (shown below the usage)."""
  missing = ['a checkpoint path'] if len(argv) < 2 else []
  if not _OUTPUT.value:
    missing.append('--output')
  if missing:
    return cli.required_message(missing)
  if len(argv) > 2:
    return f'give one checkpoint path, not {len(argv) - 1}: {argv[1:]}'
  return None


def main(argv):
  mistake = _usage_mistake(argv)
  if mistake:
    print(f'{cli.usage(__doc__, PROG)}\n', file=sys.stderr)
    sys.exit(cli.report(cli.UsageError(mistake)))
  if not cli.verbose():
    orbax_quiet.quiet_logs()  # dozens of INFO lines per save
  try:
    model_config, variables = import_mmaction2(argv[1], config=_CONFIG.value, strict=_STRICT.value)
    directory = save_model(_OUTPUT.value, model_config, variables)
  except cli.user_errors() as e:
    sys.exit(cli.report(e))
  print(f'{argv[1]}: {describe(model_config)}')
  print(f'parameters: {count_params(variables["params"]):,}; written to {directory}')


if __name__ == '__main__':
  sys.exit(app.run(main))
