"""The official model settings (MMAction2 0.24.1 / CoST configs) as data; configs import them."""

from __future__ import annotations

import ml_collections

# Inflate patterns of the official configs (1 = the block's temporal/CoST layer is used).
INFLATE_R50 = ((0, 1, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (1, 0, 1))
INFLATE_R101 = ((0, 1, 0), (1, 0, 1, 0), (1, 0) * 11 + (1,), (0, 1, 0))
NO_INFLATE_R50 = ((0, 0, 0), (0, 0, 0, 0), (0,) * 6, (0, 0, 0))

# The input normalisation the models are trained with (torchvision's ImageNet statistics).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def get_model_config(arch: str = 'costb') -> ml_collections.ConfigDict:
  """The backbone + head of `Recognizer3D(ResNet3dCoST, I3DHead)` at R50, 8 frames."""
  return ml_collections.ConfigDict(
    dict(
      arch=arch,  # c2d | i3d | costa | costb | 3x3x3
      depth=50,  # 50 | 101 | 152
      stage_blocks=(),  # blocks per stage, e.g. (1, 1, 1, 1), instead of the depth's (3, 4, 6, 3)
      # (MMAction2's ResNet3d `stage_blocks`); () = the depth's. Small networks for tests.
      base_channels=64,  # width of the stem; stages use 1x, 2x, 4x, 8x (x4 expansion)
      num_classes=400,
      conv1_kernel=(1, 7, 7),
      conv1_stride_t=1,
      pool1_stride_t=1,
      with_pool2=True,  # MMAction2's temporal max-pool (2,1,1) after layer1
      inflate=NO_INFLATE_R50 if arch == 'c2d' else INFLATE_R50,
      spatial_strides=(1, 2, 2, 2),
      temporal_strides=(1, 1, 1, 1),
      dropout_ratio=0.5,
      conv_impl='auto',  # how convs and their gradients are computed (same numbers):
      # auto | fold2d | fold2d_custom_grads | conv3d; see models/recognizer.py
      bn_group_size=8,  # clips per BatchNorm group (official: per GPU, 8); 0 = global
      # float32 | float32_full | bfloat16 (mixed); see models/precision.py. float32 multiplies at
      # the official runs' precision: TF32 on NVIDIA GPUs, 3-pass bfloat16 on TPU.
      precision='float32',
      remat=False,  # rematerialise each residual block in the backward pass
      frozen_stages=-1,  # as MMAction2: -1 none; 0 the stem; k the stem and layer1..k
      # (no gradient, BatchNorm in inference mode)
      norm_eval=False,  # every BatchNorm in inference mode while training
    )
  )
