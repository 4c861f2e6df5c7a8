"""Shared defaults: the official CoST recipe (MMAction2 0.24.1, 8 GPUs x 8 clips).

Variants import this module, call `get_config()` and override only what differs. Every field is
plain data; `cost_jax` reads it, nothing here runs code.
"""

import ml_collections

from cost_jax.inference.protocol import OFFICIAL_PROTOCOL
from cost_jax.models.defaults import (
  IMAGENET_MEAN_RGB,
  IMAGENET_STD_RGB,
  INFLATE_R50,
  INFLATE_R101,
  NO_INFLATE_R50,
  get_model_config,
)

__all__ = [
  'IMAGENET_MEAN_RGB',
  'IMAGENET_STD_RGB',
  'INFLATE_R50',
  'INFLATE_R101',
  'NO_INFLATE_R50',
  'get_config',
  'get_model_config',
]


def get_config() -> ml_collections.ConfigDict:
  """CoST(b) R50 8x8x1 on Kinetics-400, as the official release trains it."""
  config = ml_collections.ConfigDict()
  config.model = get_model_config('costb')

  config.data = ml_collections.ConfigDict(
    dict(
      data_dir='data/kinetics400/tfrecords',
      train_split='train',
      val_split='val',
      test_split='val',  # the official test set is the validation list
      # 8 frames every 8th; val: short side 256, centre crop 224; test: 10 clips x ThreeCrop 256;
      # ImageNet mean/std (cost_jax.inference.protocol.OFFICIAL_PROTOCOL).
      **OFFICIAL_PROTOCOL,
      train_scale_range=(256, 320),  # RandomRescale of the short side, then RandomCrop crop_size
      flip_ratio=0.5,
      shuffle_buffer=1024,
      # Shard files read at once per host, and each reader's buffer: enough requests in flight
      # to read a bucket (gs://) at line rate; harmless on a local disk.
      parallel_reads=16,
      read_buffer_mb=8,
      normalize_on_device=True,  # ship uint8, normalise inside the jitted step
      prefetch=2,
      autotune=True,  # tf.data's autotuning of parallelism and buffers (docs/data.md)
    )
  )

  config.batch_size = 64  # global clips per optimiser step (8 devices x 8 clips)
  config.eval_batch_size = 64  # global clips per val step
  config.test_batch_size = 8  # global videos per test step (each carries all its views)
  config.test_views_per_chunk = 10  # views of a video pushed through the model at once
  config.test_average = 'prob'  # prob (official) | score
  config.grad_accum_steps = 1

  # torch.optim.SGD with momentum and epoch-wise step decay: the official recipe's only choice.
  config.optimizer = ml_collections.ConfigDict(
    dict(
      base_lr=0.01,  # for base_batch_size; scaled linearly with the global batch
      base_batch_size=64,
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-4,  # added to the gradient of every parameter, as torch.optim.SGD
      grad_clip_norm=40.0,
      lr_decay_epochs=(80, 120),
      lr_decay_factor=0.1,
      warmup_epochs=0,
      backbone_lr_mult=1.0,  # learning rate of the backbone / that of the head (fine-tuning)
    )
  )
  config.num_epochs = 160

  # Where the weights start. Set at most one. Each takes a local path, a gs:// object or a
  # file:// or http(s) URL (copied or downloaded once into $COST_JAX_CACHE), and resnet2d also
  # 'torchvision://resnet50' etc.; init.checkpoint a local or gs:// directory.
  # A checkpoint with another num_classes keeps its backbone and gets a new head (fine-tuning).
  config.init = ml_collections.ConfigDict(
    dict(
      # The official `pretrained2d=True, pretrained='torchvision://resnet50'`: torchvision's
      # ImageNet ResNet, inflated to 3D. '' trains from random weights (with a warning).
      resnet2d='torchvision://resnet50',
      mmaction2='',  # an MMAction2 / CoST .pth (or .npz) to start from
      checkpoint='',  # a cost_jax workdir, checkpoint or saved model to start from
      required=False,  # True: refuse to start from random weights
    )
  )

  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_epochs = 5  # official K400 `evaluation.interval` (MiT: 1)
  # The official K400 configs save every 5 epochs and keep all; here every epoch, keeping the
  # last `keep_checkpoints` plus the best by val top-1: the same disk, and a preempted run loses
  # at most one epoch instead of five.
  config.checkpoint_every_epochs = 1
  config.checkpoint_every_steps = 0
  config.keep_checkpoints = 3
  config.steps_per_epoch = -1  # -1: from the manifest (num_examples // batch_size)
  return config
