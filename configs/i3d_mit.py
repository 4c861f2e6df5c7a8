"""I3D (3x1x1) R50 8x8x1 on Moments in Time v1 (339 classes), 48 epochs.

Run:    python -m cost_jax.main --config=configs/i3d_mit.py --workdir=runs/i3d_mit
Starts from torchvision's ImageNet ResNet-50 (`init.resnet2d`, downloaded on first use), as
the official config does.
Official result (10 clips x 3 crops, top-1 / top-5): 31.04 / 58.28
"""

from configs import i3d_k400, mit_data


def get_config():
  return mit_data.to_mit(i3d_k400.get_config())
