"""CoST(a) R50 8x8x1 on Kinetics-400, 160 epochs.

Run:    python -m cost_jax.main --config=configs/costa_k400.py --workdir=runs/costa_k400
Starts from torchvision's ImageNet ResNet-50 (`init.resnet2d`, downloaded on first use), as
the official config does.
Official result (10 clips x 3 crops, top-1 / top-5): 72.89 / 90.46
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model = base.get_model_config('costa')
  return config
