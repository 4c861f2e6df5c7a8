"""Loads a model for inference, with its class names and test protocol, from any of:

* a trainer workdir (`config.json`, `checkpoints/<step>/state`, `manifests/`), its `checkpoints`
  directory or one step directory of it: the params and BatchNorm stats of the best step by val
  top-1 (as the official `save_best='auto'`; the latest when none is recorded), or of that step;
* a saved-model directory (`model_config.json` + `variables/`, see `cost_jax.weights.saved`);
* an MMAction2 / CoST checkpoint file (`.pth`, or the same tensors as `.npz`).

Class names come from `labels=` (a text file with one name per line, or a JSON list; `'none'` for
``class_<i>``), else from a label file next to the checkpoint (`LABEL_FILES`), else from the
workdir's data manifests or the `label_map.txt` of its data directory, else, for a model with 400
or 339 classes, from the built-in Kinetics-400 / Moments in Time lists (`builtin_labels`);
without any, classes are called ``class_<i>``. `ModelBundle.label_source` says which.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from cost_jax import storage
from cost_jax.checkpoints import integrity, orbax_quiet, saving
from cost_jax.checkpoints import workdir as layout
from cost_jax.data import transforms
from cost_jax.data.labels import read_label_names
from cost_jax.inference import builtin_labels
from cost_jax.inference.protocol import check_protocol, default_protocol
from cost_jax.models import Recognizer3D, create_model
from cost_jax.models.variables import abstract_variables, init_variables
from cost_jax.runtime import xla_options
from cost_jax.training import metrics
from cost_jax.weights import saved
from cost_jax.weights.mmaction2 import infer_model_config, meta_config_int, state_dict_to_variables
from cost_jax.weights.torch_pickle import load_state_dict

LABEL_FILES = ('label_map.txt', 'labels.txt', 'classes.txt')
WEIGHT_SUFFIXES = ('.pth', '.pt', '.npz')
NO_LABELS = 'none'  # labels= / --labels= value for class_<i> names


@dataclasses.dataclass
class ModelBundle:
  """A model ready for prediction.

  Attributes:
    model: the Flax recognizer (normalised float32 NTHWC clips -> logits).
    model_config: its `config.model`.
    variables: {'params', 'batch_stats'}.
    protocol: how to build test views (`PROTOCOL_FIELDS`, plus `views_per_chunk` and `average`).
    label_names: one name per class.
    source: where the weights came from (for reports).
    label_source: where the class names came from (for reports).
  """

  model: Recognizer3D
  model_config: ml_collections.ConfigDict
  variables: dict[str, Any]
  protocol: ml_collections.ConfigDict
  label_names: list[str]
  source: str
  label_source: str = ''
  _apply_cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @property
  def num_classes(self) -> int:
    return int(self.model_config.num_classes)

  @property
  def arch(self) -> str:
    return str(self.model_config.arch)

  def logits_fn(self) -> Callable[[Mapping[str, Any], jax.Array], jax.Array]:
    """Pure `(variables, uint8 clips (N, T, H, W, 3)) -> float32 logits (N, K)`; normalises
    the clips with the protocol's mean/std first. Not jitted (export wraps it)."""
    model, mean, std = self.model, tuple(self.protocol.mean), tuple(self.protocol.std)

    def logits(variables, clips_uint8):
      clips = transforms.normalize(clips_uint8, mean, std)
      return model.apply(variables, clips, train=False).astype(jnp.float32)

    return logits

  def probability_fn(self) -> Callable[[Mapping[str, Any], jax.Array], jax.Array]:
    """Pure `(variables, uint8 clips (N, T, H, W, 3)) -> softmax probabilities (N, K)`."""
    logits = self.logits_fn()
    return lambda variables, clips: jax.nn.softmax(logits(variables, clips), axis=-1)

  def view_scores(self, clips_uint8: np.ndarray) -> np.ndarray:
    """Per-view scores to average (softmax, or logits if `protocol.average` is 'score'), jitted
    once per bundle (the protocol's mean/std/average are read then); (N, K) float32 numpy."""
    if 'scores' not in self._apply_cache:
      logits, average = self.logits_fn(), self.protocol.average
      self._apply_cache['scores'] = xla_options.jit(
        lambda v, c: metrics.view_scores(logits(v, c), average)
      )
    return np.asarray(self._apply_cache['scores'](self.variables, clips_uint8))


def label_note(bundle: ModelBundle) -> str:
  """The one line the command-line tools print on stderr: where the class names came from."""
  return f'class names: {bundle.label_source}'


def _meta_ints(meta: Mapping[str, Any] | None) -> dict[str, int]:
  """clip_len / frame_interval from the config text an MMAction2 checkpoint stores in meta."""
  found = {name: meta_config_int(meta, name) for name in ('clip_len', 'frame_interval')}
  return {k: v for k, v in found.items() if v is not None}


# ----------------------------------------------------------------------------- label names


def _manifest_label_names(workdir: str) -> tuple[list[str], str] | None:
  for path in storage.glob(storage.join(workdir, layout.MANIFESTS), '*.manifest.json'):
    names = storage.read_json(path).get('label_map')
    if names:
      return list(names), path
  return None


def find_label_names(
  checkpoint: str, config: ml_collections.ConfigDict | None = None
) -> tuple[list[str], str] | None:
  """(names, file) found next to `checkpoint` / in its workdir, or None."""
  path = storage.absolute(checkpoint)
  folder = path if storage.isdir(path) else storage.dirname(path)
  workdir = layout.find_workdir(path)
  folders = [folder] + ([workdir] if workdir and workdir != folder else [])
  for candidate in folders:
    for name in LABEL_FILES:
      file = storage.join(candidate, name)
      if storage.isfile(file):
        return read_label_names(file), file
  if workdir:
    found = _manifest_label_names(workdir)
    if found:
      return found
  data_dir = config.data.get('data_dir') if config is not None and 'data' in config else None
  if data_dir:
    file = storage.join(data_dir, 'label_map.txt')
    if storage.isfile(file):
      return read_label_names(file), file
  return None


def _resolve_labels(names_and_source: tuple[list[str], str] | None, num_classes: int) -> list[str]:
  if names_and_source is None:
    return [f'class_{i}' for i in range(num_classes)]
  names, source = names_and_source
  if len(names) != num_classes:
    raise ValueError(f'{source}: {len(names)} class names, but the model has {num_classes} classes')
  return list(names)


def resolve_label_names(
  labels: str | None,
  checkpoint: str,
  num_classes: int,
  config: ml_collections.ConfigDict | None = None,
) -> tuple[list[str], str]:
  """(class names, where they came from) of a model with `num_classes` classes.

  `labels`: a label file, `'none'` (``class_<i>`` names) or None: a label file found with the
  checkpoint (`find_label_names`), else the built-in list of that many classes, else
  ``class_<i>``. A label file with another number of names raises ValueError naming it.
  """
  if labels and labels.strip().lower() == NO_LABELS:
    return _resolve_labels(None, num_classes), f'class indices (--labels={NO_LABELS})'
  if labels:
    return _resolve_labels((read_label_names(labels), labels), num_classes), f'{labels} (--labels)'
  found = find_label_names(checkpoint, config)
  if found is not None:
    return _resolve_labels(found, num_classes), found[1]
  entry = builtin_labels.for_num_classes(num_classes)
  if entry is not None:
    return builtin_labels.names(entry), (
      f'{entry.dataset} (built in; --labels to override, --labels={NO_LABELS} for indices)'
    )
  return _resolve_labels(None, num_classes), 'class indices (no label file found; --labels=FILE)'


# ----------------------------------------------------------------------------- weights


def select_step_directory(path: str) -> tuple[str, str]:
  """(step directory, why) for a step directory, a checkpoints directory or a trainer workdir.

  A step directory is taken as given; otherwise the run's best step by val top-1 (the official
  `save_best` checkpoint), or its latest where no validation was recorded. A latest step whose
  record cannot be read raises CheckpointDamagedError (naming the intact steps).
  """
  if storage.basename(path).isdigit() and storage.isdir(storage.join(path, saving.STATE)):
    return path, 'the step given'
  manager_dir = layout.checkpoints_dir(path)
  if not storage.isdir(manager_dir):
    manager_dir = path
  step, why = saving.best_or_latest_step(manager_dir)
  return storage.join(manager_dir, str(step)), why


def restore_train_state_variables(step_dir: str, model_config: Mapping[str, Any]) -> dict[str, Any]:
  """params and batch_stats of the TrainState saved in `step_dir` (optimiser state skipped)."""
  template = abstract_variables(model_config)
  state_dir = storage.join(step_dir, saving.STATE)
  orbax_quiet.quiet_event_loops()
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      restored = checkpointer.restore(
        state_dir,
        args=ocp.args.PyTreeRestore(
          item=template,
          restore_args=ocp.checkpoint_utils.construct_restore_args(template),
          partial_restore=True,
        ),
      )
  except Exception as e:
    orbax_quiet.after_failure()
    reason = integrity.verify_step(step_dir)  # damaged, or intact but another model?
    if reason is not None:
      raise integrity.damaged_error(step_dir, reason) from None
    raise integrity.TrainStateMismatchError(
      f'{state_dir}: cannot restore params/batch_stats of the model in config.json: '
      f'{integrity.short_reason(e, step_dir)}'
    ) from None
  return {k: restored[k] for k in ('params', 'batch_stats')}


def _load_mmaction2(path: str) -> tuple[ml_collections.ConfigDict, dict, dict[str, int]]:
  state_dict, meta = load_state_dict(path)
  model_config = infer_model_config(state_dict, meta, source=path)
  variables = state_dict_to_variables(state_dict, model_config, source=path)
  return model_config, variables, _meta_ints(meta)


def load_bundle(
  checkpoint: str, labels: str | None = None, protocol_overrides: Mapping[str, Any] | None = None
) -> ModelBundle:
  """A `ModelBundle` from a trainer workdir / checkpoint dir / step dir, a saved-model dir or an
  MMAction2 `.pth`/`.npz` file; `labels` (a file, or 'none') overrides the class names (see
  `resolve_label_names`), `protocol_overrides` the test protocol fields (e.g.
  {'test_num_clips': 2})."""
  path = storage.absolute(checkpoint, '--checkpoint')
  if not storage.exists(path):
    raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
  config = None
  if not storage.isdir(path):
    if not path.endswith(WEIGHT_SUFFIXES):
      raise ValueError(
        f'{checkpoint}: a checkpoint file must be an MMAction2 {WEIGHT_SUFFIXES} '
        'file; otherwise give a directory'
      )
    model_config, variables, found = _load_mmaction2(path)
    protocol = default_protocol()
    protocol.update(found)
    source = path
  elif storage.isfile(storage.join(path, saved.CONFIG_FILE)):
    model_config, variables = saved.load_model(path)
    protocol = default_protocol()
    source = path
  else:
    workdir = layout.find_workdir(path)
    if workdir is None:
      raise ValueError(
        f'{checkpoint}: not a trainer workdir (config.json + checkpoints/), a checkpoint of one, '
        f'a saved model ({saved.CONFIG_FILE}) or an MMAction2 file {WEIGHT_SUFFIXES}'
      )
    config = layout.read_config(workdir)
    model_config = config.model
    step_dir, why = select_step_directory(path)
    variables = restore_train_state_variables(step_dir, model_config)
    protocol = default_protocol(config)
    source = step_dir
    logging.info('Loading %s: %s', step_dir, why)
  if protocol_overrides:
    unknown = sorted(set(protocol_overrides) - set(protocol.keys()))
    if unknown:
      raise ValueError(f'unknown protocol fields {unknown}; known: {sorted(protocol.keys())}')
    protocol.update(dict(protocol_overrides))
  check_protocol(protocol)
  label_names, label_source = resolve_label_names(
    labels, path, int(model_config.num_classes), config
  )
  logging.info('class names: %s', label_source)
  variables = jax.tree.map(jnp.asarray, {k: variables[k] for k in ('params', 'batch_stats')})
  return ModelBundle(
    model=create_model(model_config),
    model_config=model_config,
    variables=variables,
    protocol=protocol,
    label_names=label_names,
    source=source,
    label_source=label_source,
  )


def random_bundle(
  model_config: Mapping[str, Any],
  protocol: ml_collections.ConfigDict | None = None,
  label_names: Sequence[str] | None = None,
  seed: int = 0,
) -> ModelBundle:
  """A bundle with freshly initialised weights (demos, tests).

  Uses the 'rbg' PRNG, whose initialisers compile several times faster on CPU than threefry.
  """
  model_config = ml_collections.ConfigDict(dict(model_config))
  model = create_model(model_config)
  variables = jax.jit(functools.partial(init_variables, model_config))(
    jax.random.key(seed, impl='rbg')
  )
  protocol = protocol if protocol is not None else default_protocol()
  check_protocol(protocol)
  names = list(label_names) if label_names is not None else None
  return ModelBundle(
    model=model,
    model_config=model_config,
    variables={k: variables[k] for k in ('params', 'batch_stats')},
    protocol=protocol,
    label_names=_resolve_labels(
      (names, 'label_names') if names else None, int(model_config.num_classes)
    ),
    source=f'random init (seed {seed})',
    label_source='given' if names else 'class indices',
  )
