"""Loading, converting and exporting any of our models, given its `ModelSpec` (what a model's converter module
defines: how to recognize its torch layouts, infer its config from shapes, and map its keys)."""

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffst_jax.convert import mapping, torch_io
from diffst_jax.io import checkpoint, outputs


class ModelSpec(NamedTuple):
  name: str  # the model name in our checkpoints' model.json
  config_class: type
  model_class: type
  detect_layout: Callable[[Mapping[str, np.ndarray]], str]
  infer_config: Callable[[Mapping[str, np.ndarray], str], Any]
  key_table: Callable[[Any, str], dict[str, mapping.Entry]]
  strip_prefix: str = ""  # a prefix some original checkpoints put on every key
  # a directory's config.json -> diffusers' fields (the original release's config.json differs)
  diffusers_config: Callable[[Mapping], Mapping] = lambda config: config
  # the model's file in a Wan2.1 release folder, which holds other models' weights and the DiT's config.json
  release_file: str = ""


class _Unprefixed(Mapping):
  def __init__(self, state: Mapping, prefix: str):
    self._state, self._prefix = state, prefix

  def __getitem__(self, key):
    return self._state[self._prefix + key]

  def __iter__(self):
    return (k[len(self._prefix):] for k in self._state)

  def __len__(self):
    return len(self._state)


def abstract_model(spec: ModelSpec, config) -> tuple[nnx.GraphDef, nnx.State]:
  return mapping.abstract_params(lambda rngs: spec.model_class(config, rngs=rngs))


def _to_device_in_place(tree: dict) -> dict:
  """Replaces each numpy leaf by a jax array as it goes, so host memory holds about one copy of the params."""
  for key, value in tree.items():
    tree[key] = _to_device_in_place(value) if isinstance(value, dict) else jnp.asarray(value)
  return tree


def from_params(spec: ModelSpec, config, params: dict):
  """A ready module from a nested pure dict of parameters (numpy leaves are consumed)."""
  graphdef, state = abstract_model(spec, config)
  nnx.replace_by_pure_dict(state, _to_device_in_place(params))
  return nnx.merge(graphdef, state)


def from_state_dict(spec: ModelSpec, state_dict: Mapping[str, np.ndarray], config=None, what: str | None = None,
                    **overrides):
  """Our model from a torch state dict in any supported layout (detected); config inferred when not given.

  `overrides` replace config fields (e.g. param_dtype="bfloat16" to convert a large model at half the memory).
  """
  if spec.strip_prefix and state_dict and all(k.startswith(spec.strip_prefix) for k in state_dict):
    state_dict = _Unprefixed(state_dict, spec.strip_prefix)
  layout = spec.detect_layout(state_dict)
  config = dataclasses.replace(config or spec.infer_config(state_dict, layout), **overrides)
  params = mapping.from_torch(state_dict, spec.key_table(config, layout), config.param_dtype,
                              f"{what or spec.name} ({layout} layout)")
  return from_params(spec, config, params)


def _in_release_folder(spec: ModelSpec, path: pathlib.Path) -> pathlib.Path:
  """`path`, or in a Wan2.1 release folder the model's own file."""
  if path.is_dir() and spec.release_file and (path / spec.release_file).is_file():
    return path / spec.release_file
  return path


def load(spec: ModelSpec, path: str | pathlib.Path, config=None, **overrides):
  """A ready module from our Orbax checkpoint, a diffusers directory, a Wan2.1 release folder (`spec.release_file`
  in it), or a torch weight file / shard index; `overrides` replace config fields."""
  path = pathlib.Path(path)
  if checkpoint.is_checkpoint(path):
    metadata = checkpoint.read_metadata(path, spec.name)
    config = dataclasses.replace(config or spec.config_class(**metadata["config"]), **overrides)
    _, state = abstract_model(spec, config)
    return from_params(spec, config, checkpoint.restore(path, nnx.to_pure_dict(state)))
  path = _in_release_folder(spec, path)
  diffusers_config = torch_io.read_diffusers_config(path) if path.is_dir() else None
  if config is None and diffusers_config is not None:
    config = spec.config_class.from_diffusers(spec.diffusers_config(diffusers_config))
  return from_state_dict(spec, torch_io.StateDict(path), config, what=str(path), **overrides)


def state_dict(spec: ModelSpec, model, layout: str = "diffusers") -> dict[str, np.ndarray]:
  """The torch state dict (numpy arrays) of our model in one of its torch layouts."""
  return mapping.to_torch(nnx.to_pure_dict(nnx.state(model, nnx.Param)), spec.key_table(model.config, layout))


def export_diffusers(spec: ModelSpec, model, directory: str | pathlib.Path) -> pathlib.Path:
  """Writes a diffusers model directory (config.json + diffusion_pytorch_model.safetensors) to a new or empty
  `directory`, whole or not at all."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  directory = outputs.check_new_folder(pathlib.Path(directory).absolute(), "the export directory")
  tensors = state_dict(spec, model, "diffusers")
  with outputs.writing(directory, outputs.DIFFUSERS) as partial:
    (partial / "config.json").write_text(json.dumps(model.config.to_diffusers(), indent=2) + "\n")
    save_file(tensors, str(partial / "diffusion_pytorch_model.safetensors"))
  return directory


def convert(spec: ModelSpec, source: str | pathlib.Path, out: str | pathlib.Path, **overrides) -> pathlib.Path:
  """Converts a torch source into our Orbax checkpoint directory `out` (with config and source sha256)."""
  checkpoint.check_can_save(out)  # before the (possibly long) conversion, not after
  source = _in_release_folder(spec, pathlib.Path(source))
  model = load(spec, source, **overrides)
  source_info = {"path": str(source.absolute()), "sha256": torch_io.source_hashes(source)}
  return save(spec, model, out, source_info)


def save(spec: ModelSpec, model, out: str | pathlib.Path, source: dict[str, Any] | None = None) -> pathlib.Path:
  """Writes our Orbax checkpoint of `model` (config + params) to the new directory `out`."""
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return checkpoint.save(out, spec.name, dataclasses.asdict(model.config), params, source)
