"""CoST(b) R101 32 frames on Kinetics-400: stem (5,7,7) with temporal strides 2.

Run:    python -m cost_jax.main --config=configs/costb_r101_32f_k400.py \
            --workdir=runs/costb_r101_32f
Not an official recipe. The backbone is the official costb_r101_32f model config (the stem conv
and pool1 both stride 2 in time, so 32 input frames reach layer1 as 8), but the release has no
dataset config or accuracy for it: the 32x2 sampling below is our assumption.
"""

from configs import costb_r101_k400


def get_config():
  config = costb_r101_k400.get_config()
  config.model.conv1_kernel = (5, 7, 7)
  config.model.conv1_stride_t = 2
  config.model.pool1_stride_t = 2
  config.data.clip_len = 32  # assumed: not given by the official release
  config.data.frame_interval = 2  # assumed
  return config
