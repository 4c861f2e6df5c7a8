"""What Moments in Time changes in a Kinetics-400 config: classes, data, the 48-epoch schedule."""

import ml_collections


def to_mit(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.model.num_classes = 339
  config.data.data_dir = 'data/mit/tfrecords'
  config.data.train_split = 'train'
  config.data.val_split = 'val'
  config.data.test_split = 'val'
  config.num_epochs = 48
  config.optimizer.lr_decay_epochs = (24, 36)
  config.eval_every_epochs = 1  # official MiT `evaluation.interval` (and checkpoints: 1)
  return config
