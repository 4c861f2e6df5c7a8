"""Exports a trained model for serving: uint8 clips in, class probabilities out.

  python -m cost_jax.export --checkpoint DIR --output OUT [--format savedmodel|stablehlo|both]
      [--frames 8] [--size 224] [--platforms cpu,cuda]

The exported function takes uint8 RGB clips (N, frames, size, size, 3) (N is free), normalises
them with the model's mean/std, runs the network in inference mode and returns softmax
probabilities (N, num_classes). Average them over the views of a video yourself (the official
protocol: 10 clips x 3 crops of 256, `cost_jax.inference.video_clips`).

Writes to OUT:
* `saved_model/`: a TensorFlow SavedModel (`jax.experimental.jax2tf`, weights as variables),
  signature `serving_default`: `clips` -> {'probabilities'};
* `model.jax_exported`: a serialized `jax.export.Exported` (StableHLO, weights embedded); load
  it with `load_stablehlo(OUT)` or `jax.export.deserialize`, call it with `.call(clips)`;
* `export_spec.json`: input/output spec, class names and where they came from, platforms,
  source; `label_map.txt`.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from absl import flags

from cost_jax import cli, storage

if TYPE_CHECKING:
  import jax

  from cost_jax.inference import loading

# JAX and TensorFlow load inside the functions that use them, so that a command line without
# its required flags gets its usage at once (as cost_jax.main and cost_jax.predict).

FORMATS = ('savedmodel', 'stablehlo', 'both')
SAVED_MODEL_DIR = 'saved_model'
STABLEHLO_FILE = 'model.jax_exported'
SPEC_FILE = 'export_spec.json'
LABELS_FILE = 'label_map.txt'
SIGNATURE = 'serving_default'
INPUT_NAME = 'clips'
OUTPUT_NAME = 'probabilities'


def input_shape(
  bundle: loading.ModelBundle, frames: int | None = None, size: int | None = None
) -> tuple[int, int, int, int]:
  """(frames, size, size, 3) of one clip; defaults from the bundle's protocol."""
  frames = int(frames or bundle.protocol.clip_len)
  size = int(size or bundle.protocol.crop_size)
  if frames < 1 or size < 1:
    raise ValueError(f'frames and size must be >= 1, got {frames} and {size}')
  return frames, size, size, 3


def _spec(
  bundle: loading.ModelBundle,
  clip_shape: Sequence[int],
  platforms: Sequence[str],
  formats: Sequence[str],
) -> dict[str, Any]:
  from cost_jax.training import metrics

  return {
    'input': {
      'name': INPUT_NAME,
      'shape': ['batch', *clip_shape],
      'dtype': 'uint8',
      'layout': 'NTHWC, RGB',
      'normalization': 'inside: (x - mean) / std',
      'mean': list(bundle.protocol.mean),
      'std': list(bundle.protocol.std),
    },
    'output': {
      'name': OUTPUT_NAME,
      'shape': ['batch', bundle.num_classes],
      'dtype': 'float32',
      'meaning': 'softmax probabilities per clip',
    },
    'test_protocol': {
      'clip_len': bundle.protocol.clip_len,
      'frame_interval': bundle.protocol.frame_interval,
      'num_clips': bundle.protocol.test_num_clips,
      'num_crops': metrics.NUM_TEST_CROPS,
      'short_side': bundle.protocol.test_short_side,
      'crop_size': bundle.protocol.test_crop_size,
      'average': bundle.protocol.average,
    },
    'arch': bundle.arch,
    'num_classes': bundle.num_classes,
    'label_names': list(bundle.label_names),
    'label_source': bundle.label_source,
    'platforms': list(platforms),
    'formats': {
      'savedmodel': SAVED_MODEL_DIR if 'savedmodel' in formats else None,
      'stablehlo': STABLEHLO_FILE if 'stablehlo' in formats else None,
      'savedmodel_signature': SIGNATURE,
    },
    'source': bundle.source,
  }


def export_stablehlo(
  bundle: loading.ModelBundle, clip_shape: Sequence[int], platforms: Sequence[str] = ('cpu',)
) -> jax.export.Exported:
  """`jax.export` of clips -> probabilities, batch size symbolic, weights embedded."""
  import jax

  variables = bundle.variables
  probabilities = bundle.probability_fn()
  (batch,) = jax.export.symbolic_shape('batch')
  spec = jax.ShapeDtypeStruct((batch, *clip_shape), np.uint8)
  return jax.export.export(
    jax.jit(lambda clips: probabilities(variables, clips)), platforms=tuple(platforms)
  )(spec)


def save_stablehlo(exported: jax.export.Exported, path: str) -> str:
  storage.write_bytes(path, bytes(exported.serialize()))
  return path


def load_stablehlo(directory: str) -> jax.export.Exported:
  """The `jax.export.Exported` written by `export` to `directory` (call it with `.call`)."""
  import jax

  path = storage.join(directory, STABLEHLO_FILE)
  if not storage.isfile(path):
    raise FileNotFoundError(f'{path} is missing: {directory} holds no StableHLO export')
  return jax.export.deserialize(bytearray(storage.read_bytes(path)))


def export_savedmodel(
  bundle: loading.ModelBundle,
  clip_shape: Sequence[int],
  directory: str,
  platforms: Sequence[str] = ('cpu',),
) -> str:
  """Writes a TF SavedModel: signature `serving_default(clips uint8) -> {'probabilities'}`."""
  import jax
  import tensorflow as tf
  from jax.experimental import jax2tf

  probabilities = bundle.probability_fn()
  converted = jax2tf.convert(
    probabilities,
    polymorphic_shapes=[None, '(b, ...)'],
    with_gradient=False,
    native_serialization_platforms=tuple(platforms),
  )
  module = tf.Module()
  module.weights = tf.nest.map_structure(
    lambda x: tf.Variable(np.asarray(x), trainable=False),
    jax.tree.map(np.asarray, bundle.variables),
  )

  @tf.function(
    autograph=False, input_signature=[tf.TensorSpec([None, *clip_shape], tf.uint8, name=INPUT_NAME)]
  )
  def serve(clips):
    return {OUTPUT_NAME: converted(module.weights, clips)}

  module.serve = serve
  tf.saved_model.save(module, directory, signatures={SIGNATURE: serve})
  return directory


def export(
  bundle: loading.ModelBundle,
  output: str,
  fmt: str = 'both',
  frames: int | None = None,
  size: int | None = None,
  platforms: Sequence[str] = ('cpu', 'cuda'),
) -> dict[str, str]:
  """Exports `bundle` to `output` in `fmt` ('savedmodel', 'stablehlo' or 'both'); returns the
  written paths."""
  if fmt not in FORMATS:
    raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
  formats = ('savedmodel', 'stablehlo') if fmt == 'both' else (fmt,)
  clip_shape = input_shape(bundle, frames, size)
  platforms = [p.strip().lower() for p in platforms if p.strip()]
  if not platforms:
    raise ValueError('give at least one platform (cpu, cuda, rocm, tpu)')
  storage.makedirs(output)
  paths = {}
  if 'stablehlo' in formats:
    paths['stablehlo'] = save_stablehlo(
      export_stablehlo(bundle, clip_shape, platforms), storage.join(output, STABLEHLO_FILE)
    )
  if 'savedmodel' in formats:  # TensorFlow writes gs:// itself
    paths['savedmodel'] = export_savedmodel(
      bundle, clip_shape, storage.join(output, SAVED_MODEL_DIR), platforms
    )
  paths['spec'] = storage.join(output, SPEC_FILE)
  storage.write_text(
    paths['spec'], json.dumps(_spec(bundle, clip_shape, platforms, formats), indent=2)
  )
  paths['labels'] = storage.join(output, LABELS_FILE)
  storage.write_text(paths['labels'], ''.join(f'{name}\n' for name in bundle.label_names))
  return paths


FLAGS = flags.FlagValues()
cli.define_checkpoint_flag(FLAGS)
flags.DEFINE_string(
  'output', None, 'Directory to write the export to (a local path or gs://).', flag_values=FLAGS
)
flags.DEFINE_enum('format', 'both', FORMATS, 'What to export.', flag_values=FLAGS)
flags.DEFINE_integer(
  'frames', None, 'Frames per clip (default: the clip length).', flag_values=FLAGS
)
flags.DEFINE_integer(
  'size', None, 'Clip height = width (default: the centre crop).', flag_values=FLAGS
)
flags.DEFINE_list(
  'platforms', ['cpu', 'cuda'], 'Platforms to lower for (cpu, cuda, rocm, tpu).', flag_values=FLAGS
)
flags.DEFINE_string(
  'labels',
  None,
  'Class names file, or "none" for class_<i> (default: found next to the checkpoint, else built '
  'in for 400 / 339 classes).',
  flag_values=FLAGS,
)


def _main(positional: list[str]) -> int:
  if positional:
    raise cli.UsageError(f'unexpected arguments: {positional}')
  cli.require(FLAGS, 'checkpoint', 'output')
  storage.check(FLAGS.output, '--output')
  cli.start_runtime()
  from cost_jax.inference import loading

  bundle = loading.load_bundle(FLAGS.checkpoint, FLAGS.labels)
  print(loading.label_note(bundle), file=sys.stderr)
  paths = export(bundle, FLAGS.output, FLAGS.format, FLAGS.frames, FLAGS.size, FLAGS.platforms)
  for kind, path in paths.items():
    print(f'{kind}: {path}')
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (2 for a user's mistake)."""
  return cli.run(
    _main, FLAGS, 'cost_jax.export', argv, doc=__doc__, errors=(cli.UsageError, OSError, ValueError)
  )


if __name__ == '__main__':
  sys.exit(main())
