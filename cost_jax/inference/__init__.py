"""Using a trained model: loading it with its labels and test protocol, and test views of videos."""

from cost_jax.inference.loading import ModelBundle, load_bundle, random_bundle
from cost_jax.inference.video_clips import BadVideoError, read_video, video_views

__all__ = [
  'BadVideoError',
  'ModelBundle',
  'load_bundle',
  'random_bundle',
  'read_video',
  'video_views',
]
