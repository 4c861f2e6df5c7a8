"""I3D (3x1x1) R50 8x8x1 on Kinetics-400, 160 epochs.

Run:    python -m cost_jax.main --config=configs/i3d_k400.py --workdir=runs/i3d_k400
Starts from torchvision's ImageNet ResNet-50 (`init.resnet2d`, downloaded on first use), as
the official config does.
Official result (10 clips x 3 crops, top-1 / top-5): 73.40 / 90.91
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model = base.get_model_config('i3d')
  return config
