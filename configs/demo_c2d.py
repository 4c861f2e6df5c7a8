"""The C2D baseline of the demo: `configs/demo_costb.py` with no temporal modelling at all.

Run:    python -m cost_jax.main --config=configs/demo_c2d.py --workdir=demo_out/c2d \
            --config.data.data_dir=demo_out/data/tfrecords
"""

from configs import demo_costb


def get_config():
  return demo_costb.get_config('c2d')
