"""Classifies video files with a trained model: top-k classes and probabilities per video.

  python -m cost_jax.predict --checkpoint DIR_OR_FILE VIDEO [VIDEO ...] [--views=1] [--json]

`--checkpoint` is a trainer workdir (or its checkpoints / one step directory), a saved-model
directory or an MMAction2 .pth/.npz. By default the official test protocol is used (10 clips x 3
crops, softmax averaged over the 30 views); `--views=1` takes one centre clip. Views go through
the model `views_per_chunk` at a time, so memory does not grow with the number of views. A video
that cannot be read is reported and skipped; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

import numpy as np

from cost_jax.inference import loading, video_clips


def scores_of_views(bundle: loading.ModelBundle, views: np.ndarray,
                    views_per_chunk: int | None = None) -> np.ndarray:
  """Average over views (V, T, H, W, 3) uint8 of the per-view scores (softmax, or logits for
  `protocol.average == 'score'`), computed `views_per_chunk` views at a time; (K,) float32.

  The last chunk is zero-padded to the chunk size, so one compiled shape serves every video.
  """
  chunk = min(int(views_per_chunk or bundle.protocol.views_per_chunk), len(views))
  if chunk < 1:
    raise ValueError(f'views_per_chunk must be >= 1, got {views_per_chunk}')
  total = np.zeros((bundle.num_classes,), np.float64)
  for start in range(0, len(views), chunk):
    part = views[start:start + chunk]
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


def top_classes(probabilities: np.ndarray, label_names: Sequence[str], k: int
                ) -> list[dict[str, Any]]:
  """The k most probable classes, best first: [{'index', 'label', 'probability'}]."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [{'index': int(i), 'label': label_names[i], 'probability': float(probabilities[i])}
          for i in order]


def predict_video(bundle: loading.ModelBundle, path: str, views: int | None = None,
                  top_k: int = 5, views_per_chunk: int | None = None) -> dict[str, Any]:
  """Predicts one video; raises `video_clips.BadVideoError` if it cannot be read."""
  views = views or bundle.protocol.test_num_clips * bundle.protocol.test_num_crops
  start = time.monotonic()
  clips, video = video_clips.video_views(path, bundle.protocol, views)
  probabilities = _probabilities(bundle, scores_of_views(bundle, clips, views_per_chunk))
  return {'video': path, 'ok': True, 'num_frames': int(len(video.frames)),
          'num_views': int(len(clips)), 'view_shape': list(clips.shape[1:]),
          'top': top_classes(probabilities, bundle.label_names, top_k),
          'probabilities': probabilities, 'warning': video.problem,
          'seconds': time.monotonic() - start}


def predict_videos(bundle: loading.ModelBundle, paths: Sequence[str], views: int | None = None,
                   top_k: int = 5, views_per_chunk: int | None = None) -> list[dict[str, Any]]:
  """Predicts each video in turn; one dict per path, in order.

  A good video gives {'video', 'ok': True, 'top': [{'index', 'label', 'probability'}],
  'probabilities' (K,), 'num_views', 'num_frames', 'view_shape', 'warning', 'seconds'}; a video
  that cannot be read gives {'video', 'ok': False, 'error': reason} and the others go on.
  """
  video_clips.num_clips_for_views(views or 1)   # a bad `views` fails before any decoding
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
      lines.append(f"{result['video']}: ERROR: {result['error']}")
      continue
    views = result['num_views']
    lines.append(f"{result['video']} ({views} view{'s' if views != 1 else ''}):")
    if result['warning']:
      lines.append(f"  warning: {result['warning']}")
    for rank, entry in enumerate(result['top'], start=1):
      lines.append(f"  {rank}. {entry['label']:<40s} {entry['probability']:.4f}")
  return '\n'.join(lines)


def to_json(results: Sequence[dict[str, Any]], bundle: loading.ModelBundle) -> str:
  """One JSON document: the checkpoint, protocol and per-video results (without the full
  probability vectors)."""
  videos = [{k: v for k, v in r.items() if k != 'probabilities'} for r in results]
  return json.dumps({'checkpoint': bundle.source, 'arch': bundle.arch,
                     'num_classes': bundle.num_classes, 'average': bundle.protocol.average,
                     'videos': videos}, indent=2)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m cost_jax.predict', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('videos', nargs='+', metavar='VIDEO', help='Video files to classify.')
  parser.add_argument('--checkpoint', required=True, help='Trainer workdir / checkpoint '
                      'directory, saved-model directory or MMAction2 .pth/.npz.')
  parser.add_argument('--labels', help='Class names: text file (one per line) or JSON list; '
                      'default: found next to the checkpoint or in its workdir.')
  parser.add_argument('--views', type=int, help='Views per video: 1 (one centre clip) or 3*k '
                      '(k clips x ThreeCrop); default: the test protocol (10 x 3 = 30).')
  parser.add_argument('--top_k', type=int, default=5, help='Classes to report per video.')
  parser.add_argument('--json', action='store_true', help='Print one JSON document.')
  parser.add_argument('--views_per_chunk', type=int, help='Views per forward pass (bounds '
                      'memory; default: the checkpoint config, 10).')
  parser.add_argument('--clip_len', type=int, help='Frames per clip (default: checkpoint).')
  parser.add_argument('--frame_interval', type=int, help='Frame stride (default: checkpoint).')
  parser.add_argument('--short_side', type=int, help='Short side after resizing, and ThreeCrop '
                      'size (default: checkpoint, officially 256).')
  parser.add_argument('--crop_size', type=int, help='Centre crop of --views=1 (default 224).')
  return parser


def protocol_overrides(args: argparse.Namespace) -> dict[str, int]:
  """Test-protocol fields given on the command line."""
  overrides = {}
  if args.clip_len:
    overrides['clip_len'] = args.clip_len
  if args.frame_interval:
    overrides['frame_interval'] = args.frame_interval
  if args.short_side:
    overrides.update(val_short_side=args.short_side, test_short_side=args.short_side,
                     test_crop_size=args.short_side)
  if args.crop_size:
    overrides['crop_size'] = args.crop_size
  if args.views_per_chunk:
    overrides['views_per_chunk'] = args.views_per_chunk
  return overrides


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (1 if a video failed, 2 for a bad checkpoint)."""
  args = _parser().parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')   # TF only resizes frames; leave accelerators to JAX
  try:
    if args.views is not None:
      video_clips.num_clips_for_views(args.views)
    bundle = loading.load_bundle(args.checkpoint, args.labels, protocol_overrides(args))
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  results = predict_videos(bundle, args.videos, views=args.views, top_k=args.top_k)
  print(to_json(results, bundle) if args.json else format_text(results))
  failed = [r for r in results if not r['ok']]
  for result in failed:
    print(f"error: {result['video']}: {result['error']}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
