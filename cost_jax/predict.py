"""Classifies video files with a trained model: top-k classes and probabilities per video.

  python -m cost_jax.predict --checkpoint DIR_OR_FILE VIDEO [VIDEO ...] [--views=1] [--json]
      [--output=results.json]

`--checkpoint` is a trainer workdir (or its checkpoints / one step directory), a saved-model
directory or an MMAction2 .pth/.npz; it, the videos, `--labels` and `--output` may be local paths
or gs:// URLs. Class names: `--labels=FILE`, else a label file found with the checkpoint, else
the built-in Kinetics-400 / Moments in Time names for a 400 / 339-class model (`--labels=none`:
class_N); one line on stderr says which. By default the official test protocol is used (10 clips x 3
crops, softmax averaged over the 30 views); `--views=1` takes one centre clip. Views go through
the model `views_per_chunk` at a time, so memory does not grow with the number of views. A video
that cannot be read is reported and skipped; the exit status is 1 if any failed. Without
--checkpoint or a video it prints a short usage at once (exit status 2).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from absl import flags

from cost_jax import cli, storage

if TYPE_CHECKING:
  from cost_jax.inference import loading

# TensorFlow and JAX load with the modules that use them (inside the functions below), so that a
# command line without --checkpoint or videos gets its usage at once, not after ~8 s of imports.


def scores_of_views(
  bundle: loading.ModelBundle, views: np.ndarray, views_per_chunk: int | None = None
) -> np.ndarray:
  """Average over views (V, T, H, W, 3) uint8 of the per-view scores (softmax, or logits for
  `protocol.average == 'score'`), computed `views_per_chunk` views at a time; (K,) float32.

  The last chunk is zero-padded to the chunk size, so one compiled shape serves every video.
  """
  chunk = min(int(views_per_chunk or bundle.protocol.views_per_chunk), len(views))
  if chunk < 1:
    raise ValueError(f'views_per_chunk must be >= 1, got {views_per_chunk}')
  total = np.zeros((bundle.num_classes,), np.float64)
  for start in range(0, len(views), chunk):
    part = views[start : start + chunk]
    real = len(part)
    if real < chunk:
      part = np.concatenate([part, np.zeros((chunk - real,) + part.shape[1:], part.dtype)])
    total += bundle.view_scores(part)[:real].astype(np.float64).sum(axis=0)
  return (total / len(views)).astype(np.float32)


def _probabilities(bundle: loading.ModelBundle, scores: np.ndarray) -> np.ndarray:
  if bundle.protocol.average == 'prob':
    return scores
  shifted = np.exp(scores - scores.max())
  return (shifted / shifted.sum()).astype(np.float32)


def top_classes(
  probabilities: np.ndarray, label_names: Sequence[str], k: int
) -> list[dict[str, Any]]:
  """The k most probable classes, best first: [{'index', 'label', 'probability'}]."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [
    {'index': int(i), 'label': label_names[i], 'probability': float(probabilities[i])}
    for i in order
  ]


def predict_video(
  bundle: loading.ModelBundle,
  path: str,
  views: int | None = None,
  top_k: int = 5,
  views_per_chunk: int | None = None,
) -> dict[str, Any]:
  """Predicts one video; raises `video_clips.BadVideoError` if it cannot be read."""
  from cost_jax.inference import video_clips
  from cost_jax.training import metrics

  views = views or metrics.num_test_views(bundle.protocol)
  start = time.monotonic()
  clips, video = video_clips.video_views(path, bundle.protocol, views)
  probabilities = _probabilities(bundle, scores_of_views(bundle, clips, views_per_chunk))
  return {
    'video': path,
    'ok': True,
    'num_frames': int(len(video.frames)),
    'num_views': int(len(clips)),
    'view_shape': list(clips.shape[1:]),
    'top': top_classes(probabilities, bundle.label_names, top_k),
    'probabilities': probabilities,
    'warning': video.problem,
    'seconds': time.monotonic() - start,
  }


def predict_videos(
  bundle: loading.ModelBundle,
  paths: Sequence[str],
  views: int | None = None,
  top_k: int = 5,
  views_per_chunk: int | None = None,
) -> list[dict[str, Any]]:
  """Predicts each video in turn; one dict per path, in order.

  A good video gives {'video', 'ok': True, 'top': [{'index', 'label', 'probability'}],
  'probabilities' (K,), 'num_views', 'num_frames', 'view_shape', 'warning', 'seconds'}; a video
  that cannot be read gives {'video', 'ok': False, 'error': reason} and the others go on.
  """
  from cost_jax.inference import video_clips

  video_clips.num_clips_for_views(views or 1)  # a bad `views` fails before any decoding
  results = []
  for path in paths:
    try:
      results.append(predict_video(bundle, path, views, top_k, views_per_chunk))
    except video_clips.BadVideoError as e:
      results.append({'video': path, 'ok': False, 'error': str(e)})
  return results


def format_text(results: Sequence[dict[str, Any]]) -> str:
  """Human-readable report: per video, its top classes with probabilities, or its error."""
  lines = []
  for result in results:
    if not result['ok']:
      lines.append(f'{result["video"]}: ERROR: {result["error"]}')
      continue
    views = result['num_views']
    lines.append(f'{result["video"]} ({views} view{"s" if views != 1 else ""}):')
    if result['warning']:
      lines.append(f'  warning: {result["warning"]}')
    for rank, entry in enumerate(result['top'], start=1):
      lines.append(f'  {rank}. {entry["label"]:<40s} {entry["probability"]:.4f}')
  return '\n'.join(lines)


def to_json(results: Sequence[dict[str, Any]], bundle: loading.ModelBundle) -> str:
  """One JSON document: the checkpoint, protocol and per-video results (without the full
  probability vectors)."""
  videos = [{k: v for k, v in r.items() if k != 'probabilities'} for r in results]
  return json.dumps(
    {
      'checkpoint': bundle.source,
      'arch': bundle.arch,
      'num_classes': bundle.num_classes,
      'label_source': bundle.label_source,
      'average': bundle.protocol.average,
      'videos': videos,
    },
    indent=2,
  )


FLAGS = flags.FlagValues()
cli.define_checkpoint_flag(FLAGS)
flags.DEFINE_string(
  'labels',
  None,
  'Class names: text file (one per line) or JSON list; "none" for class_<i>. Default: found '
  'next to the checkpoint or in its workdir, else built in for 400 (Kinetics-400) and 339 '
  '(Moments in Time) classes.',
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  'views',
  None,
  'Views per video: 1 (one centre clip) or 3*k (k clips x '
  'ThreeCrop); default: the test protocol (10 x 3 = 30).',
  flag_values=FLAGS,
)
flags.DEFINE_integer('top_k', 5, 'Classes to report per video.', flag_values=FLAGS)
flags.DEFINE_bool('json', False, 'Print one JSON document.', flag_values=FLAGS)
flags.DEFINE_string(
  'output',
  None,
  'Also write the JSON document to this file (a local path or gs://bucket/path.json).',
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  'views_per_chunk',
  None,
  'Views per forward pass (bounds memory; default: the checkpoint config, 10).',
  flag_values=FLAGS,
)
flags.DEFINE_integer('clip_len', None, 'Frames per clip (default: checkpoint).', flag_values=FLAGS)
flags.DEFINE_integer(
  'frame_interval', None, 'Frame stride (default: checkpoint).', flag_values=FLAGS
)
flags.DEFINE_integer(
  'short_side',
  None,
  'Short side after resizing, and ThreeCrop size (default: checkpoint, officially 256).',
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  'crop_size', None, 'Centre crop of --views=1 (default 224).', flag_values=FLAGS
)


def protocol_overrides(values: flags.FlagValues) -> dict[str, int]:
  """Test-protocol fields given on the command line."""
  overrides = {}
  if values.clip_len:
    overrides['clip_len'] = values.clip_len
  if values.frame_interval:
    overrides['frame_interval'] = values.frame_interval
  if values.short_side:
    overrides.update(
      val_short_side=values.short_side,
      test_short_side=values.short_side,
      test_crop_size=values.short_side,
    )
  if values.crop_size:
    overrides['crop_size'] = values.crop_size
  if values.views_per_chunk:
    overrides['views_per_chunk'] = values.views_per_chunk
  return overrides


def _main(videos: list[str]) -> int:
  cli.require(FLAGS, 'checkpoint')
  if not videos:
    raise cli.UsageError('give at least one video file')
  for video in videos:  # an unsupported scheme stops before any work
    storage.check(video, 'video')
  if FLAGS.output:
    storage.check(FLAGS.output, '--output')
  cli.start_runtime()
  from cost_jax.inference import loading, video_clips

  if FLAGS.views is not None:
    video_clips.num_clips_for_views(FLAGS.views)
  bundle = loading.load_bundle(FLAGS.checkpoint, FLAGS.labels, protocol_overrides(FLAGS))
  print(loading.label_note(bundle), file=sys.stderr)
  results = predict_videos(bundle, videos, views=FLAGS.views, top_k=FLAGS.top_k)
  print(to_json(results, bundle) if FLAGS.json else format_text(results))
  if FLAGS.output:
    storage.write_text(FLAGS.output, to_json(results, bundle))
  failed = [r for r in results if not r['ok']]
  for result in failed:
    print(f'error: {result["video"]}: {result["error"]}', file=sys.stderr)
  return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (1 if a video failed, 2 for a user's mistake)."""
  return cli.run(
    _main,
    FLAGS,
    'cost_jax.predict',
    argv,
    doc=__doc__,
    errors=(cli.UsageError, OSError, ValueError),
  )


if __name__ == '__main__':
  sys.exit(main())
