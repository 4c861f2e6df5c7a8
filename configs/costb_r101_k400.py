"""CoST(b) R101 8x8x1 on Kinetics-400 (ImageNet-initialised from torchvision ResNet-101).

Run:    python -m cost_jax.main --config=configs/costb_r101_k400.py --workdir=runs/costb_r101_k400
The official release reports this model but not in the R50 table above; see its README.
"""

from configs import base
from configs import costb_k400


def get_config():
  config = costb_k400.get_config()
  config.model.depth = 101
  config.model.inflate = base.INFLATE_R101
  return config
