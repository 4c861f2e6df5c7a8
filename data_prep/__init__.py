"""Raw videos -> TFDS datasets of encoded frames (`cost_jax.data.schema`), checks, and a
synthetic temporal dataset.

  python -m data_prep.build --list=FILE --video_root=DIR --output=DIR --split=NAME  # list files
  python -m data_prep.kinetics400 --root=data/kinetics400 --output=DIR
  python -m data_prep.mit --root=data/mit --output=DIR
  python -m data_prep.synthetic --output=DIR [--tfrecords]
  python -m data_prep.verify DIR            # reads every record; names damaged shards

`tfds.builder_from_directory(DIR)` loads what they write. The shared core is
`data_prep.convert.convert_splits`; frame encoding is `encode_video` (decoding:
`cost_jax.data.video_decode`), records and TFDS metadata `dataset_writer`, flags `cli`.
"""
