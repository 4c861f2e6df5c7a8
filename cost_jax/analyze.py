"""What the CoST layers learned: how much each layer weighs its H-W, T-W and T-H views.

  python -m cost_jax.analyze --checkpoint DIR --output_dir OUT [--data DIR [--split val]]
      [--per_class] [--max_videos N]

* CoST(a): the coefficients are parameters; per layer, the softmax of `alpha` over the views,
  mean and standard deviation over the output channels (no data needed).
* CoST(b): the coefficients are predicted per video and channel; per layer, their mean and
  standard deviation over the channels and the videos of `--data` (TFRecords of
  `data_prep`, read with the val pipeline: one centre clip per video), optionally per class.

Writes `view_weights.json` and a bar chart `view_weights.png` (plus heat maps
`view_weights_per_class.png` with --per_class, for up to 60 classes) to --output_dir.
"""

from __future__ import annotations

import io
import json
import re
import sys
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np
from absl import flags

from cost_jax import cli, storage

if TYPE_CHECKING:
  from cost_jax.inference import loading

# JAX and TensorFlow load inside the functions that use them, so that a command line without
# its required flags gets its usage at once (as cost_jax.main and cost_jax.predict).

VIEW_NAMES = ('H-W', 'T-W', 'T-H')  # order of the coefficients (CoSTConv's VIEWS)
JSON_NAME = 'view_weights.json'
PNG_NAME = 'view_weights.png'
PER_CLASS_PNG_NAME = 'view_weights_per_class.png'
MAX_CLASSES_PLOTTED = 60  # more classes are only in the JSON


# ----------------------------------------------------------------------------- layers


def _layer_name(path: Sequence[str]) -> str:
  """('backbone', 'layer2_0', 'conv2', 'conv', ...) -> 'layer2.0' (the MMAction2 name)."""
  block = next(p for p in path if re.fullmatch(r'layer\d+_\d+', p))
  return block.replace('_', '.')


def _layer_order(name: str) -> tuple[int, int]:
  stage, block = re.fullmatch(r'layer(\d+)\.(\d+)', name).groups()
  return int(stage), int(block)


def _check_cost(bundle: loading.ModelBundle) -> None:
  if bundle.arch not in ('costa', 'costb'):
    raise ValueError(f'{bundle.source}: arch {bundle.arch!r} has no CoST layers (costa/costb)')


def learned_view_weights(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """CoST(a): {layer: softmax(alpha) over the views, (C, 3)}, in network order."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util

  found = {}
  for path, value in traverse_util.flatten_dict(dict(params)).items():
    if path[-1] == 'alpha':
      found[_layer_name(path)] = np.asarray(jax.nn.softmax(jnp.asarray(value), axis=0).T)
  if not found:
    raise ValueError('no CoST(a) coefficients (alpha) in the parameters')
  return {k: found[k] for k in sorted(found, key=_layer_order)}


class _Moments:
  """Streaming mean / std / min / max of (..., 3) coefficient arrays (float64 sums)."""

  def __init__(self):
    self.count, self.sum, self.sum_sq = 0, np.zeros(3), np.zeros(3)
    self.min, self.max = np.full(3, np.inf), np.full(3, -np.inf)

  def add(self, values: np.ndarray) -> None:
    values = np.asarray(values, np.float64).reshape(-1, 3)
    if not len(values):
      return
    self.count += len(values)
    self.sum += values.sum(0)
    self.sum_sq += np.square(values).sum(0)
    self.min = np.minimum(self.min, values.min(0))
    self.max = np.maximum(self.max, values.max(0))

  def summary(self) -> dict[str, list[float]]:
    mean = self.sum / self.count
    std = np.sqrt(np.maximum(self.sum_sq / self.count - np.square(mean), 0.0))
    return {
      'mean': mean.tolist(),
      'std': std.tolist(),
      'min': self.min.tolist(),
      'max': self.max.tolist(),
    }


def _view_weights_fn(bundle: loading.ModelBundle):
  """Jitted uint8 clips -> {layer: (N, C, 3)} coefficients predicted by each CoST(b) layer."""
  from flax import traverse_util

  from cost_jax.data import transforms
  from cost_jax.runtime import xla_options

  model, protocol = bundle.model, bundle.protocol

  def fn(variables, clips_uint8):
    clips = transforms.normalize(clips_uint8, protocol.mean, protocol.std)
    _, state = model.apply(variables, clips, train=False, mutable=['intermediates'])
    flat = traverse_util.flatten_dict(state['intermediates'])
    return {_layer_name(k): v[0] for k, v in flat.items() if k[-1] == 'view_weights'}

  return xla_options.jit(fn)


def predicted_view_weights(
  bundle: loading.ModelBundle, batches: Iterable[Mapping[str, np.ndarray]], per_class: bool = False
) -> dict[str, Any]:
  """CoST(b): statistics of the predicted coefficients over `batches`.

  Each batch is {'clips': uint8 (B, T, H, W, 3), optional 'label' (B,), optional 'mask' (B,)}.
  Returns {'num_videos', 'layers': {layer: {'mean', 'std', 'min', 'max', 'channels'}},
  'per_class': {class index: {layer: {'mean', 'std', ...}, 'num_videos'}}} (mean/std over the
  channels and videos).
  """
  fn = _view_weights_fn(bundle)
  overall: dict[str, _Moments] = {}
  classes: dict[int, dict[str, _Moments]] = {}
  class_counts: dict[int, int] = {}
  channels: dict[str, int] = {}
  num_videos = 0
  for batch in batches:
    clips = np.asarray(batch['clips'])
    mask = np.asarray(batch.get('mask', np.ones(len(clips), bool))).astype(bool)
    labels = np.asarray(batch.get('label', np.zeros(len(clips), np.int64)))
    weights = {k: np.asarray(v)[mask] for k, v in fn(bundle.variables, clips).items()}
    labels = labels[mask]
    num_videos += int(mask.sum())
    for layer, values in weights.items():
      channels[layer] = values.shape[1]
      overall.setdefault(layer, _Moments()).add(values)
      if per_class:
        for label in np.unique(labels):
          classes.setdefault(int(label), {}).setdefault(layer, _Moments()).add(
            values[labels == label]
          )
    if per_class:
      for label in labels:
        class_counts[int(label)] = class_counts.get(int(label), 0) + 1
  if not num_videos:
    raise ValueError('no videos to compute the CoST(b) coefficients on')
  order = sorted(overall, key=_layer_order)
  report = {
    'num_videos': num_videos,
    'layers': {k: dict(overall[k].summary(), channels=channels[k]) for k in order},
  }
  if per_class:
    report['per_class'] = {
      c: dict({k: classes[c][k].summary() for k in order}, num_videos=class_counts[c])
      for c in sorted(classes)
    }
  return report


def val_batches(
  bundle: loading.ModelBundle, data_dir: str, split: str, batch_size: int, max_videos: int = 0
) -> tuple[Iterator[dict[str, np.ndarray]], list[str]]:
  """Val-pipeline batches (one centre clip per video) of a TFRecord split, and the split's class
  names (from its manifest)."""
  from cost_jax.data import input_pipeline  # tf.data only when a dataset is analysed
  from cost_jax.inference.protocol import PROTOCOL_FIELDS

  data_config = ml_collections.ConfigDict({k: bundle.protocol[k] for k in PROTOCOL_FIELDS})
  data_config.update(
    data_dir=data_dir,
    val_split=split,
    normalize_on_device=True,
    prefetch=2,
  )
  # The data's classes need not be the model's: the coefficients do not use the head.
  info = input_pipeline.get_dataset_info(data_dir, split)
  dataset, num_batches = input_pipeline.create_eval_dataset(
    data_config, split=split, batch_size=batch_size, mode='val', process_index=0, process_count=1
  )

  def batches():
    seen = 0
    for batch in input_pipeline.numpy_batches(dataset.take(num_batches)):
      if max_videos and seen >= max_videos:
        return
      if max_videos:
        keep = np.cumsum(batch['mask']) <= max_videos - seen
        batch = dict(batch, mask=batch['mask'] & keep)
      seen += int(batch['mask'].sum())
      yield batch

  return batches(), info['label_map']


# ----------------------------------------------------------------------------- report


def analyze(
  bundle: loading.ModelBundle,
  batches: Iterable[Mapping[str, np.ndarray]] | None = None,
  per_class: bool = False,
  data_source: str = '',
  class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
  """The view-coefficient report of a CoST model (see the module docstring).

  CoST(a) needs no data; CoST(b) needs `batches` (see `predicted_view_weights`).
  """
  _check_cost(bundle)
  report: dict[str, Any] = {
    'checkpoint': bundle.source,
    'arch': bundle.arch,
    'views': list(VIEW_NAMES),
  }
  if bundle.arch == 'costa':
    report['kind'] = 'learned'
    report['spread'] = 'std over output channels'
    report['layers'] = {
      layer: {
        'mean': w.mean(0).tolist(),
        'std': w.std(0).tolist(),
        'min': w.min(0).tolist(),
        'max': w.max(0).tolist(),
        'channels': len(w),
      }
      for layer, w in learned_view_weights(bundle.variables['params']).items()
    }
    return report
  if batches is None:
    raise ValueError('CoST(b) coefficients depend on the input: give data (--data DIR)')
  report['kind'] = 'predicted'
  report['spread'] = 'std over output channels and videos'
  report['data'] = data_source
  report.update(predicted_view_weights(bundle, batches, per_class))
  if per_class:
    names = list(class_names) if class_names is not None else bundle.label_names
    report['per_class'] = {
      names[c] if c < len(names) else f'class_{c}': stats
      for c, stats in report['per_class'].items()
    }
  return report


def _title(report: Mapping[str, Any]) -> str:
  arch = {'costa': 'CoST(a)', 'costb': 'CoST(b)'}[report['arch']]
  if report['kind'] == 'learned':
    how = 'softmax of the learned coefficients, mean ± std over channels'
  else:
    how = f'predicted on {report["num_videos"]} videos, mean ± std over channels and videos'
  return f'{arch} view coefficients per layer\n({how})'


def plot(report: Mapping[str, Any], path: str) -> str:
  """Bar chart: per layer, one bar per view (H-W, T-W, T-H) with std error bars; returns path."""
  import matplotlib

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt

  layers = list(report['layers'])
  means = np.array([report['layers'][k]['mean'] for k in layers])
  stds = np.array([report['layers'][k]['std'] for k in layers])
  x = np.arange(len(layers))
  width = 0.27
  fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(layers)), 4.5))
  colors = ('#4c72b0', '#dd8452', '#55a868')
  for i, (view, color) in enumerate(zip(VIEW_NAMES, colors)):
    ax.bar(
      x + (i - 1) * width,
      means[:, i],
      width,
      yerr=stds[:, i],
      capsize=3,
      label=view,
      color=color,
      edgecolor='black',
      linewidth=0.5,
    )
  ax.axhline(1 / 3, color='gray', linestyle='--', linewidth=1, label='uniform (1/3)')
  ax.set_xticks(x, [f'{k}\n({report["layers"][k]["channels"]} ch)' for k in layers], fontsize=8)
  ax.set_xlabel('CoST layer (stage.block) and its output channels')
  ax.set_ylabel('view coefficient (softmax weight)')
  ax.set_ylim(0, min(1.05, max(0.5, float((means + stds).max()) * 1.1)))
  ax.set_title(_title(report), fontsize=10)
  ax.legend(title='view', fontsize=8, loc='upper left', bbox_to_anchor=(1.0, 1.0))
  ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  _save_figure(fig, path, dpi=120)
  plt.close(fig)
  return path


def plot_per_class(report: Mapping[str, Any], path: str) -> str:
  """Heat maps (class x layer) of the mean coefficient of each view; returns path."""
  import matplotlib

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt

  classes = list(report['per_class'])
  layers = list(report['layers'])
  fig, axes = plt.subplots(
    1,
    3,
    figsize=(3 + 1.2 * len(layers), 2.2 + 0.3 * len(classes)),
    sharey=True,
    layout='constrained',
  )
  annotate = len(classes) <= 20
  for i, (ax, view) in enumerate(zip(axes, VIEW_NAMES)):
    grid = np.array([[report['per_class'][c][k]['mean'][i] for k in layers] for c in classes])
    image = ax.imshow(grid, vmin=0, vmax=1, cmap='viridis', aspect='auto')
    if annotate:
      for (row, col), value in np.ndenumerate(grid):
        ax.text(
          col,
          row,
          f'{value:.2f}',
          ha='center',
          va='center',
          fontsize=6,
          color='white' if value < 0.6 else 'black',
        )
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_title(f'{view} view', fontsize=9)
    ax.set_xlabel('CoST layer')
  axes[0].set_ylabel('class')
  fig.colorbar(image, ax=list(axes), label='mean coefficient')
  fig.suptitle('CoST(b) view coefficients per class (mean over channels and videos)', fontsize=10)
  _save_figure(fig, path, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return path


def _save_figure(fig, path: str, **kwargs) -> None:
  """A PNG of `fig` published at `path` (local or gs://)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', **kwargs)
  storage.write_bytes(path, buffer.getvalue())


def write_report(report: Mapping[str, Any], output_dir: str) -> dict[str, str]:
  """Writes the JSON report and its figure(s) to `output_dir` (local or gs://); returns their
  paths."""
  storage.makedirs(output_dir)
  paths = {
    'json': storage.join(output_dir, JSON_NAME),
    'png': storage.join(output_dir, PNG_NAME),
  }
  storage.write_text(paths['json'], json.dumps(report, indent=2))
  plot(report, paths['png'])
  if report.get('per_class') and len(report['per_class']) <= MAX_CLASSES_PLOTTED:
    paths['per_class_png'] = plot_per_class(report, storage.join(output_dir, PER_CLASS_PNG_NAME))
  return paths


def format_text(report: Mapping[str, Any]) -> str:
  lines = [
    _title(report).replace('\n', ' '),
    f'{"layer":<10s}' + ''.join(f'{v:>16s}' for v in VIEW_NAMES),
  ]
  for layer, stats in report['layers'].items():
    lines.append(
      f'{layer:<10s}' + ''.join(f'{m:>9.3f} ± {s:.3f}' for m, s in zip(stats['mean'], stats['std']))
    )
  return '\n'.join(lines)


FLAGS = flags.FlagValues()
cli.define_checkpoint_flag(FLAGS)
flags.DEFINE_string(
  'output_dir', None, 'Where to write the JSON and PNG (a local path or gs://).', flag_values=FLAGS
)
flags.DEFINE_string(
  'data', None, 'TFRecord directory (data_prep output); needed for CoST(b).', flag_values=FLAGS
)
flags.DEFINE_string('split', 'val', 'Split of --data to read.', flag_values=FLAGS)
flags.DEFINE_bool('per_class', False, 'CoST(b): also per class.', flag_values=FLAGS)
flags.DEFINE_integer('batch_size', 8, 'Clips per forward pass.', flag_values=FLAGS)
flags.DEFINE_integer('max_videos', 0, 'Read at most this many videos (0 = all).', flag_values=FLAGS)
flags.DEFINE_string(
  'labels',
  None,
  'Class names file, or "none" for class_<i> (per-class names default to the data manifest).',
  flag_values=FLAGS,
)


def _main(positional: list[str]) -> int:
  if positional:
    raise cli.UsageError(f'unexpected arguments: {positional}')
  cli.require(FLAGS, 'checkpoint', 'output_dir')
  storage.check(FLAGS.output_dir, '--output_dir')
  cli.start_runtime()
  from cost_jax.inference import loading

  bundle = loading.load_bundle(FLAGS.checkpoint, FLAGS.labels)
  _check_cost(bundle)
  print(loading.label_note(bundle), file=sys.stderr)
  batches, class_names = None, None
  if FLAGS.data and bundle.arch == 'costb':
    batches, class_names = val_batches(
      bundle, FLAGS.data, FLAGS.split, FLAGS.batch_size, FLAGS.max_videos
    )
  report = analyze(
    bundle,
    batches,
    per_class=FLAGS.per_class,
    data_source=f'{FLAGS.data} ({FLAGS.split})' if batches else '',
    class_names=class_names,
  )
  paths = write_report(report, FLAGS.output_dir)
  print(format_text(report))
  print('wrote ' + ', '.join(paths.values()))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (2 for a user's mistake)."""
  return cli.run(
    _main,
    FLAGS,
    'cost_jax.analyze',
    argv,
    doc=__doc__,
    errors=(cli.UsageError, OSError, ValueError),
  )


if __name__ == '__main__':
  sys.exit(main())
