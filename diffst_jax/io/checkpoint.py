"""Our model checkpoints: a directory with `model.json` (model name, config, source file hashes) and `params/`,
an Orbax checkpoint of the parameter tree."""

import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

METADATA_FILE = "model.json"
PARAMS_DIR = "params"
FORMAT = "diffst-jax/1"


def is_checkpoint(path: str | pathlib.Path) -> bool:
  return (pathlib.Path(path) / METADATA_FILE).is_file()


def save(directory: str | pathlib.Path, model: str, config: dict[str, Any], params: dict,
         source: dict[str, Any] | None = None, inference: dict[str, Any] | None = None) -> pathlib.Path:
  """Writes params (a nested dict of arrays) and metadata to a new directory; never overwrites one that has files.
  `inference` holds how the model is best run (e.g. the clip length and crop size it was trained on)."""
  directory = pathlib.Path(directory).absolute()
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory}: the output directory is not empty; choose a new one (nothing was written)")
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / PARAMS_DIR, params)
  metadata = {"format": FORMAT, "model": model, "config": config, "source": source or {}, "inference": inference or {}}
  (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
  return directory


def model_name(directory: str | pathlib.Path) -> str | None:
  """The model a checkpoint directory holds, as its metadata names it."""
  return json.loads((pathlib.Path(directory) / METADATA_FILE).read_text()).get("model")


def read_metadata(directory: str | pathlib.Path, model: str) -> dict[str, Any]:
  path = pathlib.Path(directory) / METADATA_FILE
  metadata = json.loads(path.read_text())
  if metadata.get("format") != FORMAT or metadata.get("model") != model:
    raise ValueError(f"{path}: expected a {FORMAT} checkpoint of model {model!r}, got format "
                     f"{metadata.get('format')!r} model {metadata.get('model')!r}")
  return metadata


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

  path, target = pathlib.Path(directory).absolute() / PARAMS_DIR, jax.tree.map(concrete, target)
  if partial:
    with ocp.PyTreeCheckpointer() as checkpointer:
      return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path, target)
