"""Our model checkpoints: a directory with `model.json` (model name, config, source file hashes) and `params/`,
an Orbax checkpoint of the parameter tree.

`model.json` is written last, whole: a directory without it is a checkpoint whose writing was cut short, which the
next `save` to the same directory removes and writes again.
"""

import json
import logging
import os
import pathlib
import sys
import traceback
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from diffst_jax.io import outputs, paths

METADATA_FILE = "model.json"
PARAMS_DIR = "params"
FORMAT = "diffst-jax/1"
# What a checkpoint directory holds; Orbax writes params/, and save model.json, under a temporary name first.
CHECKPOINT = outputs.FolderKind("checkpoint", r"model\.json|\.model\.json\.partial",
                                {r"params(\.orbax-checkpoint-tmp-.*)?": None})


def is_checkpoint(path: str | pathlib.Path) -> bool:
  return (paths.resolve(path) / METADATA_FILE).is_file()


def is_incomplete(path: str | pathlib.Path) -> bool:
  """Whether `path` is a checkpoint whose writing was cut short: params without model.json, nothing else."""
  path = paths.resolve(path)
  return (path.is_dir() and not is_checkpoint(path) and any(path.iterdir())
          and ((path / outputs.MARKER).is_file() or (path / PARAMS_DIR / "_CHECKPOINT_METADATA").is_file())
          and not outputs.foreign_entries(path, CHECKPOINT))


def check_can_save(directory: str | pathlib.Path) -> paths.Path:
  """Raises unless `save` may write to `directory`: missing, empty, or a checkpoint whose writing was cut short."""
  directory = paths.resolve(directory)
  if not is_incomplete(directory):
    outputs.check_new_folder(directory, "the checkpoint directory")
  return directory


def save(directory: str | pathlib.Path, model: str, config: dict[str, Any], params: dict,
         source: dict[str, Any] | None = None, inference: dict[str, Any] | None = None) -> paths.Path:
  """Writes params (a nested dict of arrays) and metadata to a new or empty directory, or over a checkpoint whose
  writing was cut short; never over anything else. `inference` holds how the model is best run (e.g. the clip length
  and crop size it was trained on)."""
  directory = check_can_save(directory)
  if jax.process_index() == 0 and is_incomplete(directory):
    outputs.remove(directory, CHECKPOINT)
  if jax.process_count() > 1:  # every process has checked the directory before the first one writes
    multihost_utils.sync_global_devices("diffst-jax checkpoint.save")
  directory.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (directory / outputs.MARKER).write_text(f"{CHECKPOINT.what}: written by diffst-jax; complete once it holds "
                                            f"{METADATA_FILE}\n")
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / PARAMS_DIR, params)
  metadata = {"format": FORMAT, "model": model, "config": config, "source": source or {}, "inference": inference or {},
              "params_files": params_files(directory)}
  if jax.process_index() == 0:
    partial = directory / f".{METADATA_FILE}.partial"
    partial.write_text(json.dumps(metadata, indent=2) + "\n")
    partial.replace(directory / METADATA_FILE)
  return directory


def record_inference(directory: str | pathlib.Path, **fields: Any) -> None:
  """Adds `fields` to how the checkpoint is best run (model.json's "inference"), e.g. a colour fix measured after
  training; model.json is replaced whole, the parameters are not touched."""
  path = paths.resolve(directory) / METADATA_FILE
  metadata = _metadata(directory)
  metadata["inference"] = {**metadata.get("inference", {}), **fields}
  partial = path.with_name(f".{METADATA_FILE}.partial")
  partial.write_text(json.dumps(metadata, indent=2) + "\n")
  partial.replace(path)


def params_files(directory: str | pathlib.Path) -> dict[str, int]:
  """The size of every file of a checkpoint's params/, by path: what `restore` checks before reading (a missing or
  cut-short file is named in one line, not met deep inside the reader)."""
  params = paths.resolve(directory) / PARAMS_DIR
  return {str(file.relative_to(params)): paths.size(file) for file in paths.files_under(params)}


def _check_params_files(directory: paths.Path) -> None:
  for name, size in _metadata(directory).get("params_files", {}).items():
    file = paths.inside(directory / PARAMS_DIR, name, directory / METADATA_FILE)
    if not file.is_file():
      raise ValueError(f"{file}: missing; the checkpoint is incomplete: copy or write it again")
    if paths.size(file) != size:
      raise ValueError(f"{file}: {paths.size(file)} bytes where the checkpoint wrote {size}: damaged or cut "
                       "short; copy or write the checkpoint again")


def _metadata(directory: str | pathlib.Path) -> dict[str, Any]:
  path = paths.resolve(directory) / METADATA_FILE
  try:
    metadata = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise ValueError(f"{path}: missing; {directory} is not a diffst-jax checkpoint (or its writing was cut short: "
                     "write it again)") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: damaged, not valid JSON ({e}); copy or write the checkpoint again") from e
  if not isinstance(metadata, dict):
    raise ValueError(f"{path}: damaged, not a JSON object; copy or write the checkpoint again")
  return metadata


def model_name(directory: str | pathlib.Path) -> str | None:
  """The model a checkpoint directory holds, as its metadata names it."""
  return _metadata(directory).get("model")


def read_metadata(directory: str | pathlib.Path, model: str) -> dict[str, Any]:
  path = paths.resolve(directory) / METADATA_FILE
  metadata = _metadata(directory)
  if metadata.get("format") != FORMAT or metadata.get("model") != model:
    raise ValueError(f"{path}: expected a {FORMAT} checkpoint of model {model!r}, got format "
                     f"{metadata.get('format')!r} model {metadata.get('model')!r}")
  if "config" in metadata:
    metadata["config"] = _without_retired_fields(metadata["config"])
  return metadata


# Config fields older checkpoints stored that are no longer part of a model: how convolutions and attention run is
# the run's choice now (parallel/plan.py), not the model's.
RETIRED_CONFIG_FIELDS = ("conv_implementation", "attention", "attention_block_size", "context_parallel")


def _without_retired_fields(config: dict[str, Any]) -> dict[str, Any]:
  return {key: _without_retired_fields(value) if isinstance(value, dict) else value
          for key, value in config.items() if key not in RETIRED_CONFIG_FIELDS}


def restore(directory: str | pathlib.Path, target: dict, partial: bool = False) -> dict:
  """Restores the params of a checkpoint onto `target`, a tree of `jax.ShapeDtypeStruct` (with shardings). Leaves
  without a concrete sharding (shapes traced under an active mesh carry an abstract one) go to this process's first
  device; callers place them. `partial`: `target` may be a subtree of the params (only it is read)."""
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def concrete(leaf):
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding) or isinstance(getattr(sharding, "mesh", None),
                                                                      jax.sharding.AbstractMesh):
      sharding = local
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

  path, target = paths.resolve(directory) / PARAMS_DIR, jax.tree.map(concrete, target)
  if not path.is_dir():
    raise ValueError(f"{path}: missing; the checkpoint is incomplete: copy or write it again")
  _check_params_files(paths.resolve(directory))
  try:
    if partial:
      with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(path, target)
  except Exception as e:  # pylint: disable=broad-except  # Orbax and TensorStore raise many types for damaged files
    raise ValueError(f"{path}: the parameters cannot be read ({type(e).__name__}); a file is missing or damaged: "
                     "copy or write the checkpoint again (--debug shows the reader's error)") from e


def quiet_abandoned_reads() -> None:
  """After an Orbax restore that failed (a damaged checkpoint): its other reads were still in flight when Orbax closed
  their event loop, and as they finish, each reports its own error, "Task exception was never retrieved" or "Event
  loop is closed" as an unhandled one: dozens of tracebacks after the damage was already said in one line. Those
  reports, and only those, are dropped from then on."""
  if getattr(sys.unraisablehook, "quiets_abandoned_reads", False):
    return
  previous_hook = sys.unraisablehook

  def hook(unraisable):
    if not _from_abandoned_read(unraisable.exc_value):
      previous_hook(unraisable)

  hook.quiets_abandoned_reads = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(
      lambda record: not (record.getMessage().startswith("Task exception was never retrieved")
                          and record.exc_info is not None and _from_abandoned_read(record.exc_info[1])))


def _from_abandoned_read(error: BaseException | None) -> bool:
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True
  frames = traceback.extract_tb(error.__traceback__) if error is not None else []
  return any(f"orbax{os.sep}checkpoint" in frame.filename for frame in frames)
