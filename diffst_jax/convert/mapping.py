"""Moving tensors between a torch state dict and our parameter tree through a key table, strictly.

A key table maps each source key to (our path, layout name, our shape); it is built from our model's abstract
parameters, so a key the model does not have, or a parameter the checkpoint lacks, is found by set difference.
"""

from typing import Callable, NamedTuple

import jax
import numpy as np
from flax import nnx

from diffst_jax.convert.tables import LAYOUTS
from diffst_jax.convert.torch_io import CheckpointError

Path = tuple[str | int, ...]


class Entry(NamedTuple):
  path: Path
  layout: str
  shape: tuple[int, ...]


def flatten(tree: dict) -> dict[Path, object]:
  """Nested pure dict -> {path tuple: leaf}."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[tuple(k.key if hasattr(k, "key") else k.idx for k in path)] = leaf
  return out


def unflatten(flat: dict[Path, object]) -> dict:
  tree: dict = {}
  for path, leaf in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return tree


def dotted(path: Path) -> str:
  return ".".join(str(k) for k in path)


def abstract_params(make_model: Callable[[], nnx.Module]) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph definition and abstract (shape-only) state of a model, without allocating it."""
  return nnx.split(nnx.eval_shape(make_model))


def key_table(state: nnx.State, source_key: Callable[[str], str], layout_of: Callable[[str], str]) -> dict[str, Entry]:
  """{source key: Entry} for every parameter of `state` (abstract or concrete)."""
  table = {}
  for path, leaf in flatten(nnx.to_pure_dict(state)).items():
    name = dotted(path)
    key = source_key(name)
    assert key not in table, f"two parameters map to {key}"
    table[key] = Entry(path, layout_of(name), tuple(leaf.shape))
  return table


def from_torch(state_dict: dict[str, np.ndarray], table: dict[str, Entry], dtype, what: str) -> dict:
  """Our nested pure param dict from a torch state dict; any unmapped, missing or misshaped key is an error."""
  unmapped = sorted(set(state_dict) - set(table))
  if unmapped:
    raise CheckpointError(f"{what}: checkpoint key {unmapped[0]!r} is not mapped to any parameter "
                          f"({len(unmapped)} unmapped); is this the right model and layout?")
  missing = sorted(set(table) - set(state_dict))
  if missing:
    raise CheckpointError(f"{what}: checkpoint is missing key {missing[0]!r} ({len(missing)} missing)")
  flat = {}
  for key, entry in table.items():
    layout = LAYOUTS[entry.layout]
    expected = layout.torch_shape(entry.shape)
    tensor = state_dict[key]
    if tuple(tensor.shape) != expected:
      raise CheckpointError(f"{what}: checkpoint key {key!r} has shape {tuple(tensor.shape)}, expected {expected}")
    if not np.issubdtype(tensor.dtype, np.floating):
      raise CheckpointError(f"{what}: checkpoint key {key!r} has dtype {tensor.dtype}, expected a float tensor")
    flat[entry.path] = layout.to_ours(tensor).astype(dtype)
  return unflatten(flat)


def to_torch(params: dict, table: dict[str, Entry]) -> dict[str, np.ndarray]:
  """A torch-layout state dict (numpy arrays) from our nested pure param dict."""
  flat = flatten(params)
  return {key: LAYOUTS[entry.layout].to_torch(np.asarray(flat[entry.path])) for key, entry in table.items()}
