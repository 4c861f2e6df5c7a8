"""Shared defaults: the official CoST recipe (MMAction2 0.24.1, 8 GPUs x 8 clips).

Variants import this module, call `get_config()` and override only what differs. Every field is
plain data; `cost_jax` reads it, nothing here runs code.
"""

import ml_collections

# Inflate patterns of the official configs (1 = the block's temporal/CoST layer is used).
INFLATE_R50 = ((0, 1, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (1, 0, 1))
INFLATE_R101 = ((0, 1, 0), (1, 0, 1, 0), (1, 0) * 11 + (1,), (0, 1, 0))
NO_INFLATE_R50 = ((0, 0, 0), (0, 0, 0, 0), (0,) * 6, (0, 0, 0))

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def get_model_config(arch: str = 'costb') -> ml_collections.ConfigDict:
  """The backbone + head of `Recognizer3D(ResNet3dCoST, I3DHead)` at R50, 8 frames."""
  return ml_collections.ConfigDict(dict(
      arch=arch,                 # c2d | i3d | costa | costb | 3x3x3
      depth=50,                  # 50 | 101 | 152
      base_channels=64,          # width of the stem; stages use 1x, 2x, 4x, 8x (x4 expansion)
      num_classes=400,
      conv1_kernel=(1, 7, 7),
      conv1_stride_t=1,
      pool1_stride_t=1,
      with_pool2=True,           # MMAction2's temporal max-pool (2,1,1) after layer1
      inflate=NO_INFLATE_R50 if arch == 'c2d' else INFLATE_R50,
      spatial_strides=(1, 2, 2, 2),
      temporal_strides=(1, 1, 1, 1),
      dropout_ratio=0.5,
      cost_impl='fold2d',        # fold2d (views as batched 2D convs) | conv3d (three 3D convs)
      bn_group_size=8,           # clips per BatchNorm group (official: per GPU, 8); 0 = global
      dtype='float32',           # compute dtype; parameters stay float32
      remat=False,               # rematerialise each residual block in the backward pass
      frozen_stages=-1,          # as MMAction2: -1 none; 0 the stem; k the stem and layer1..k
                                 # (no gradient, BatchNorm in inference mode)
      norm_eval=False,           # every BatchNorm in inference mode while training
  ))


def get_config() -> ml_collections.ConfigDict:
  """CoST(b) R50 8x8x1 on Kinetics-400, as the official release trains it."""
  config = ml_collections.ConfigDict()
  config.model = get_model_config('costb')

  config.data = ml_collections.ConfigDict(dict(
      data_dir='data/kinetics400/tfrecords',
      train_split='train',
      val_split='val',
      test_split='val',          # the official test set is the validation list
      clip_len=8,
      frame_interval=8,
      train_num_clips=1,
      val_num_clips=1,
      test_num_clips=10,
      train_scale_range=(256, 320),   # RandomRescale of the short side
      crop_size=224,                  # RandomCrop (train) and CenterCrop (val)
      val_short_side=256,
      test_short_side=256,
      test_crop_size=256,             # ThreeCrop
      test_num_crops=3,
      flip_ratio=0.5,
      mean=IMAGENET_MEAN_RGB,
      std=IMAGENET_STD_RGB,
      shuffle_buffer=1024,
      normalize_on_device=True,  # ship uint8, normalise inside the jitted step
      prefetch=2,
  ))

  config.batch_size = 64         # global clips per optimiser step (8 devices x 8 clips)
  config.eval_batch_size = 64    # global clips per val step
  config.test_batch_size = 8     # global videos per test step (each carries all its views)
  config.test_views_per_chunk = 10   # views of a video pushed through the model at once
  config.test_average = 'prob'   # prob (official) | score
  config.grad_accum_steps = 1

  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd',
      base_lr=0.01,              # for base_batch_size; scaled linearly with the global batch
      base_batch_size=64,
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-4,         # added to the gradient of every parameter, as torch.optim.SGD
      grad_clip_norm=40.0,
      lr_schedule='step',
      lr_decay_epochs=(80, 120),
      lr_decay_factor=0.1,
      warmup_epochs=0,
      backbone_lr_mult=1.0,      # learning rate of the backbone / that of the head (fine-tuning)
  ))
  config.num_epochs = 160

  # Where the weights start. Set at most one. Each takes a local path, a file:// or http(s) URL
  # (downloaded once into $COST_JAX_CACHE), and resnet2d also 'torchvision://resnet50' etc.
  # A checkpoint with another num_classes keeps its backbone and gets a new head (fine-tuning).
  config.init = ml_collections.ConfigDict(dict(
      # The official `pretrained2d=True, pretrained='torchvision://resnet50'`: torchvision's
      # ImageNet ResNet, inflated to 3D. '' trains from random weights (with a warning).
      resnet2d='torchvision://resnet50',
      mmaction2='',              # an MMAction2 / CoST .pth (or .npz) to start from
      checkpoint='',             # a cost_jax workdir, checkpoint or saved model to start from
      required=False,            # True: refuse to start from random weights
  ))

  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_epochs = 5       # official K400 `evaluation.interval` (MiT: 1)
  # The official K400 configs save every 5 epochs and keep all; here every epoch, keeping the
  # last `keep_checkpoints` plus the best by val top-1: the same disk, and a preempted run loses
  # at most one epoch instead of five.
  config.checkpoint_every_epochs = 1
  config.checkpoint_every_steps = 0
  config.keep_checkpoints = 3
  config.steps_per_epoch = -1    # -1: from the manifest (num_examples // batch_size)
  return config
