"""CoST(b) R50 8x8x1 on Moments in Time v1 (339 classes), 48 epochs.

Run:    python -m cost_jax.main --config=configs/costb_mit.py --workdir=runs/costb_mit
Starts from torchvision's ImageNet ResNet-50 (`init.resnet2d`, downloaded on first use), as
the official config does.
Official result (10 clips x 3 crops, top-1 / top-5): 32.23 / 59.84
"""

from configs import costb_k400, mit_data


def get_config():
  return mit_data.to_mit(costb_k400.get_config())
