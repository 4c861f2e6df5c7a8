"""Weight import: MMAction2/CoST checkpoints and 2D ImageNet ResNets, without PyTorch."""

from cost_jax.weights.inflate import InflationReport, inflate_resnet2d
from cost_jax.weights.mmaction2 import (
  CheckpointMismatchError,
  import_mmaction2,
  infer_model_config,
  state_dict_to_variables,
  variables_to_state_dict,
)

__all__ = [
  'CheckpointMismatchError',
  'InflationReport',
  'import_mmaction2',
  'infer_model_config',
  'inflate_resnet2d',
  'state_dict_to_variables',
  'variables_to_state_dict',
]
