"""A small real video dataset whose classes differ only in the ORDER of their frames.

  python -m data_prep.synthetic --output=DIR [--tfrecords]

Classes come in pairs, each the exact time reversal of the other: move right / left, move down /
up, rotate clockwise / counter-clockwise, grow / shrink. A video of the second class of a pair is
drawn exactly like one of the first class (random textured background, random convex polygon,
colour, position, speed) and then played backwards, so the two classes have the same
distribution of frame *sets*: a model that pools frames without temporal modelling cannot beat
chance within a pair. Videos are H.264 mp4 coded intra-only at a fixed quantiser, so every frame
is coded alone and the reversal stays exact after decoding.

Writes `{output}/videos/{split}/{class}/{i:05d}.mp4`, MMAction2 list files
`{output}/train_list.txt`, `{output}/val_list.txt` (paths relative to `{output}/videos`),
`{output}/labels.txt` and `{output}/synthetic.json` (the options; a re-run with the same options
reuses the videos). With `--tfrecords`, also converts both splits into the TFDS dataset
directory `{output}/tfrecords` (dataset name `synthetic_frame_order`). `--output` is a local
path or a gs:// URL (each video is encoded in memory, then published whole).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import multiprocessing
import os
import sys
from typing import Any, Sequence

import av
import numpy as np
from absl import flags

from cost_jax import storage
from cost_jax.data import labels
from data_prep import cli, convert

PAIRS = (
  ('move_right', 'move_left'),
  ('move_down', 'move_up'),
  ('rotate_clockwise', 'rotate_counterclockwise'),
  ('grow', 'shrink'),
)
SPLITS = {'train': 0, 'val': 1}
_X264_PARAMS = 'keyint=1:qp=12'  # intra-only, fixed quantiser: frames coded independently
DATASET_NAME = 'synthetic_frame_order'


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """What to generate; the defaults (400 videos) take about 10-20 s on 2 cores."""

  num_classes: int = 8
  train_per_class: int = 40
  val_per_class: int = 10
  frames: int = 32
  size: int = 64  # height = width, in pixels (even)
  fps: int = 8
  seed: int = 0

  def __post_init__(self):
    checks = {
      'num_classes': self.num_classes in range(2, 2 * len(PAIRS) + 1, 2),
      'train_per_class': self.train_per_class >= 1,
      'val_per_class': self.val_per_class >= 1,
      'frames': self.frames >= 4,
      'size': self.size >= 16 and self.size % 2 == 0,
      'fps': self.fps >= 1,
    }
    for key, ok in checks.items():
      if not ok:
        raise ValueError(
          f'synthetic option {key}={getattr(self, key)!r} is invalid (num_classes:'
          ' even, 2..8; size: even, >= 16; frames >= 4)'
        )


def class_names(num_classes: int) -> list[str]:
  """Names of the first `num_classes` classes (pairs in `PAIRS` order)."""
  return [name for pair in PAIRS for name in pair][:num_classes]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A smooth random colour texture with fine noise, float (size, size, 3) in [0, 255]."""
  grid = int(rng.integers(3, 9))
  coarse = rng.uniform(0, 1, (grid, grid, 3))
  ramp = np.linspace(0, grid - 1, size)
  lo = np.floor(ramp).astype(int).clip(0, grid - 2)
  frac = ramp - lo
  interp = np.zeros((size, grid))
  interp[np.arange(size), lo] = 1 - frac
  interp[np.arange(size), lo + 1] = frac
  smooth = np.einsum('yi,xj,ijc->yxc', interp, interp, coarse)
  low, span = rng.uniform(20, 110), rng.uniform(60, 120)
  return np.clip(low + span * smooth + rng.normal(0, 6, smooth.shape), 0, 255)


def _polygon(rng: np.random.Generator) -> np.ndarray:
  """An irregular convex polygon inscribed in the unit circle (3-5 vertices), (k, 2)."""
  k = int(rng.integers(3, 6))
  angles = 2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k
  return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _inside(vertices: np.ndarray, size: int) -> np.ndarray:
  """Boolean (size, size) mask of pixel centres inside a convex polygon (any orientation)."""
  yy, xx = np.mgrid[:size, :size] + 0.5
  edges = np.roll(vertices, -1, axis=0) - vertices
  cross = edges[:, 0, None, None] * (yy - vertices[:, 1, None, None]) - edges[:, 1, None, None] * (
    xx - vertices[:, 0, None, None]
  )
  return np.all(cross >= 0, axis=0) | np.all(cross <= 0, axis=0)


def _trajectory(rng: np.random.Generator, pair: int, frames: int, size: int) -> np.ndarray:
  """Per-frame (cx, cy, radius, angle) of the forward (first) class of `pair`."""
  t = np.arange(frames, dtype=np.float64)
  angle0 = rng.uniform(0, 2 * np.pi)
  if pair in (0, 1):  # translation: right (x grows) or down (y grows)
    radius = size * rng.uniform(0.09, 0.15)
    travel = size * rng.uniform(0.3, 0.55)
    along = rng.uniform(radius, size - radius - travel) + travel * t / (frames - 1)
    across = rng.uniform(radius, size - radius) + rng.uniform(-0.1, 0.1) * travel * t / frames
    across = across.clip(radius, size - radius)
    cx, cy = (along, across) if pair == 0 else (across, along)
    return np.stack([cx, cy, np.full_like(t, radius), np.full_like(t, angle0)], axis=1)
  if pair == 2:  # clockwise on screen: the angle grows (the y axis points down)
    radius = size * rng.uniform(0.16, 0.26)
    cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
    step = np.deg2rad(rng.uniform(5, 11)) * 32 / frames
    return np.stack(
      [np.full_like(t, cx), np.full_like(t, cy), np.full_like(t, radius), angle0 + step * t], axis=1
    )
  r_end = size * rng.uniform(0.2, 0.3)  # grow: radius from r_end / ratio to r_end
  ratio = rng.uniform(2.5, 3.5)
  radius = r_end * ratio ** (t / (frames - 1) - 1)
  cx, cy = rng.uniform(r_end + 1, size - r_end - 1, 2)
  return np.stack(
    [np.full_like(t, cx), np.full_like(t, cy), radius, np.full_like(t, angle0)], axis=1
  )


def render_forward(rng: np.random.Generator, pair: int, frames: int, size: int) -> np.ndarray:
  """A uint8 (frames, size, size, 3) video of the first class of `pair` (0..3).

  The object is a polygon in two colours (split along one of its own axes), so its orientation
  is visible.
  """
  background = _background(rng, size)
  shape = _polygon(rng)
  colours = rng.uniform(0, 255, (2, 3))
  too_close = np.abs(colours - background.mean(axis=(0, 1))).max(axis=1) < 90
  colours[too_close] = 255 - colours[too_close]
  split = rng.uniform(-0.2, 0.4)
  yy, xx = np.mgrid[:size, :size] + 0.5
  video = np.empty((frames, size, size, 3), np.uint8)
  for i, (cx, cy, radius, angle) in enumerate(_trajectory(rng, pair, frames, size)):
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask = _inside(shape @ rotation.T * radius + [cx, cy], size)
    # First coordinate of each pixel in the object's own frame: picks the colour.
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / radius
    paint = np.where((u > split)[..., None], colours[0], colours[1])
    video[i] = np.where(mask[..., None], paint, background)
  return video


def make_video(class_index: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """A video of class `class_index`: the pair's forward render, reversed for odd classes."""
  video = render_forward(rng, class_index // 2, frames, size)
  return video[::-1] if class_index % 2 else video


def video_rng(seed: int, split: str, class_index: int, number: int) -> np.random.Generator:
  """The generator of one video, independent of the others (and of the class within a pair)."""
  return np.random.default_rng([seed, SPLITS[split], class_index // 2, number, class_index % 2])


def write_mp4(path: str, video: np.ndarray, fps: int) -> None:
  """Writes uint8 (T, H, W, 3) RGB as H.264 intra-only mp4 at `path` (local or gs://), whole:
  encoded in memory, then published."""
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='mp4') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.height, stream.width = video.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    stream.options = {'x264-params': _X264_PARAMS}
    for frame in video:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())
  storage.write_bytes(path, buffer.getvalue())


def _write_class(
  video_root: str, split: str, class_index: int, config: SyntheticConfig
) -> list[str]:
  """Writes the videos of one class of one split; returns their list-file lines."""
  name = class_names(config.num_classes)[class_index]
  count = config.train_per_class if split == 'train' else config.val_per_class
  storage.makedirs(storage.join(video_root, split, name))
  lines = []
  for n in range(count):
    relative = f'{split}/{name}/{n:05d}.mp4'
    video = make_video(
      class_index, config.frames, config.size, video_rng(config.seed, split, class_index, n)
    )
    write_mp4(storage.join(video_root, relative), video, config.fps)
    lines.append(f'{relative} {class_index}\n')
  return lines


def generate(
  output: str, config: SyntheticConfig = SyntheticConfig(), workers: int = 0
) -> dict[str, str]:
  """Writes videos, list files and labels.txt (in `workers` processes, 0 = all cores).

  Returns the paths: labels, train_list, val_list, video_root. Skips the work when
  `{output}/synthetic.json` says the same options were already generated.
  """
  storage.check(output, 'output directory')
  paths = {
    'labels': storage.join(output, 'labels.txt'),
    **{f'{s}_list': storage.join(output, f'{s}_list.txt') for s in SPLITS},
    'video_root': storage.join(output, 'videos'),
  }
  record_path = storage.join(output, 'synthetic.json')
  record = dataclasses.asdict(config)
  if storage.exists(record_path) and all(storage.exists(p) for p in paths.values()):
    if storage.read_json(record_path) == record:
      return paths
  storage.makedirs(output)
  jobs = [(paths['video_root'], s, c, config) for s in SPLITS for c in range(config.num_classes)]
  workers = min(workers or os.cpu_count() or 1, len(jobs))
  if workers == 1:
    lines = [_write_class(*job) for job in jobs]
  else:
    with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn'), initializer=convert.exit_with_parent
    ) as pool:
      lines = list(pool.map(_write_class, *zip(*jobs)))
  for split in SPLITS:
    storage.write_text(
      paths[f'{split}_list'],
      ''.join(line for job, job_lines in zip(jobs, lines) if job[1] == split for line in job_lines),
    )
  storage.write_text(paths['labels'], ''.join(f'{n}\n' for n in class_names(config.num_classes)))
  storage.write_json(record_path, record)
  return paths


def generate_and_convert(
  output: str,
  config: SyntheticConfig = SyntheticConfig(),
  options: convert.ConvertOptions | None = None,
) -> list[dict[str, Any]]:
  """`generate`, then TFRecords of train and val in `{output}/tfrecords`; returns summaries.

  Frames keep their size unless `options` says otherwise (default: short_side=0, 4 shards).
  """
  from data_prep import build

  options = options or convert.ConvertOptions(short_side=0, num_shards=4)
  paths = generate(output, config, options.workers)
  label_map = labels.read_label_names(paths['labels'])
  jobs = {s: build.read_list_file(paths[f'{s}_list'], paths['video_root']) for s in SPLITS}
  return convert.convert_splits(
    jobs, storage.join(output, 'tfrecords'), label_map, options, name=DATASET_NAME
  )


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  defaults = SyntheticConfig()
  flags.DEFINE_string('output', None, 'Output directory.', flag_values=fv, required=True)
  for field in dataclasses.fields(SyntheticConfig):
    flags.DEFINE_integer(
      field.name,
      getattr(defaults, field.name),
      f'Synthetic dataset option {field.name}.',
      flag_values=fv,
    )
  flags.DEFINE_boolean(
    'tfrecords',
    False,
    'Also convert train and val into the TFDS dataset directory {output}/tfrecords.',
    flag_values=fv,
  )
  flags.DEFINE_integer('workers', 0, 'Processes (0 = all cores).', flag_values=fv)
  flags.DEFINE_boolean('progress', True, 'Show conversion progress on stderr.', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line `argv` (without the program name); returns the exit status."""
  fv = _define_flags()

  def run(positional: list[str]) -> int:
    cli.no_arguments(positional)
    cli.check_locations(fv, ['output'])
    config = SyntheticConfig(
      **{f.name: fv[f.name].value for f in dataclasses.fields(SyntheticConfig)}
    )
    if not fv.tfrecords:
      paths = generate(fv.output, config, fv.workers)
      print(f'wrote {paths["train_list"]}, {paths["val_list"]}, {paths["labels"]}', file=sys.stderr)
      return 0
    options = convert.ConvertOptions(
      short_side=0, num_shards=4, workers=fv.workers, progress=fv.progress
    )
    return convert.report(generate_and_convert(fv.output, config, options))

  return cli.run(run, fv, 'data_prep.synthetic', argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
