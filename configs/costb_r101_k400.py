"""CoST(b) R101 8x8x1 on Kinetics-400, from torchvision's ImageNet ResNet-101.

Run:    python -m cost_jax.main --config=configs/costb_r101_k400.py --workdir=runs/costb_r101_k400
Not an official recipe: the official release has an R101 model config (costb_r101_8f) and model
files, but no training config and no accuracy for it. This one is the R50 Kinetics-400 recipe
with that backbone, so no official number can be quoted for it.
"""

from configs import base, costb_k400


def get_config():
  config = costb_k400.get_config()
  config.model.depth = 101
  config.model.inflate = base.INFLATE_R101
  config.init.resnet2d = 'torchvision://resnet101'
  return config
