"""Fine-tune a Kinetics-400 CoST(b) R50 on your own videos (UCF101, HMDB51, any list file).

1. Convert the train and val lists (MMAction2 format: `path/to/video.mp4 LABEL` per line):

     python -m data_prep.build --list=train_list.txt --video_root=videos/ \
         --output=data/custom/tfrecords --split=train --labels=labels.txt
     python -m data_prep.build --list=val_list.txt --video_root=videos/ \
         --output=data/custom/tfrecords --split=val --labels=labels.txt

2. Train from a Kinetics-400 checkpoint (an MMAction2 / CoST .pth, a URL to one, or a cost_jax
   workdir via --config.init.checkpoint); its 400-class head is replaced by one for your classes:

     python -m cost_jax.main --config=configs/finetune_list.py --workdir=runs/custom \
         --config.init.mmaction2=costb_r50_8x8x1_160e_kinetics400_rgb.pth \
         --config.model.num_classes=101

3. Test with the official 10-clip x 3-crop protocol, on the best checkpoint by val top-1:

     python -m cost_jax.main --config=configs/finetune_list.py --workdir=runs/custom \
         --config.model.num_classes=101 --mode=test

Not an official recipe (the CoST release trains only Kinetics-400 and Moments in Time): the R50
recipe with a 10x smaller backbone learning rate, 30 epochs and validation every epoch.
`--config.model.frozen_stages=K` freezes the stem and layer1..K; `--config.model.norm_eval=True`
keeps every BatchNorm at its pretrained statistics (useful with small batches).
"""

from configs import costb_k400


def get_config():
  config = costb_k400.get_config()
  config.data.data_dir = 'data/custom/tfrecords'
  config.model.num_classes = 101  # set to your dataset's (training checks it)
  config.init.resnet2d = ''
  config.init.mmaction2 = ''  # the checkpoint to start from (step 2)
  config.init.required = True
  config.optimizer.base_lr = 0.01  # the new head's; per 64 clips, scaled linearly
  config.optimizer.backbone_lr_mult = 0.1
  config.optimizer.lr_decay_epochs = (20, 27)
  config.num_epochs = 30
  config.eval_every_epochs = 1
  return config
