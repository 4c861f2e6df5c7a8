"""Raw videos -> sharded TFRecords (`cost_jax.data.schema`), and a synthetic temporal dataset.

  python -m data_prep.build --list FILE --video-root DIR --output DIR --split NAME  # list files
  python -m data_prep.kinetics400 --root data/kinetics400 --output DIR
  python -m data_prep.mit --root data/mit --output DIR
  python -m data_prep.synthetic --output DIR [--tfrecords]

The shared core is `data_prep.convert.convert_split`; decoding and checks are in `video_decode`.
"""
