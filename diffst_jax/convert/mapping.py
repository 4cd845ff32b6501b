"""Moving tensors between a torch state dict and our parameter tree through a key table, strictly.

A key table maps each source key to (our path, layout name, our shape); it is built from our model's abstract
parameters, so a key the model does not have, or a parameter the checkpoint lacks, is found by set difference.
"""

import collections
from collections.abc import Mapping
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffst_jax.convert.tables import LAYOUTS
from diffst_jax.convert.torch_io import CheckpointError
from diffst_jax.models.abstract import abstract

Path = tuple[str | int, ...]


class Entry(NamedTuple):
  """Where a source tensor goes: our parameter `path`, at index `layer` of its leading axis when layers are
  stacked (None otherwise), with tensor layout `layout` and our per-layer `shape`."""

  path: Path
  layout: str
  shape: tuple[int, ...]
  layer: int | None = None


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


def abstract_params(make_model: Callable[[nnx.Rngs], nnx.Module]) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph definition and abstract (shape-only) state of `make_model(rngs)`, without allocating it."""
  return nnx.split(abstract(make_model))


def key_table(state: nnx.State, source_key: Callable[[str], str], layout_of: Callable[[str], str],
              stacked: tuple[str, ...] = ()) -> dict[str, Entry]:
  """{source key: Entry} for every parameter of `state` (abstract or concrete).

  Parameters under a top-level name in `stacked` hold all layers on a leading axis; each layer is looked up as
  `name.{i}.rest`, as torch checkpoints name them.
  """
  table = {}
  for path, leaf in flatten(nnx.to_pure_dict(state)).items():
    name = dotted(path)
    layout = layout_of(name)
    if path[0] in stacked:
      rest = dotted(path[1:])
      entries = [(f"{path[0]}.{i}.{rest}", Entry(path, layout, tuple(leaf.shape[1:]), i))
                 for i in range(leaf.shape[0])]
    else:
      entries = [(name, Entry(path, layout, tuple(leaf.shape)))]
    for our_name, entry in entries:
      key = source_key(our_name)
      assert key not in table, f"two parameters map to {key}"
      table[key] = entry
  return table


def from_torch(state_dict: Mapping[str, np.ndarray], table: dict[str, Entry], dtype, what: str) -> dict:
  """Our nested pure param dict from a torch state dict; any unmapped, missing or misshaped key is an error.

  Tensors are read one at a time and written into the (stacked) targets, so the host holds the target plus one
  source tensor.
  """
  unmapped = sorted(set(state_dict) - set(table))
  if unmapped:
    raise CheckpointError(f"{what}: checkpoint key {unmapped[0]!r} is not mapped to any parameter "
                          f"({len(unmapped)} unmapped); is this the right model and layout?")
  missing = sorted(set(table) - set(state_dict))
  if missing:
    raise CheckpointError(f"{what}: checkpoint is missing key {missing[0]!r} ({len(missing)} missing)")
  layers = collections.Counter(entry.path for entry in table.values() if entry.layer is not None)
  flat: dict[Path, np.ndarray] = {}
  for key, entry in table.items():
    layout = LAYOUTS[entry.layout]
    expected = layout.torch_shape(entry.shape)
    tensor = state_dict[key]
    if tuple(tensor.shape) != expected:
      raise CheckpointError(f"{what}: checkpoint key {key!r} has shape {tuple(tensor.shape)}, expected {expected}")
    if not jnp.issubdtype(tensor.dtype, jnp.floating):
      raise CheckpointError(f"{what}: checkpoint key {key!r} has dtype {tensor.dtype}, expected a float tensor")
    value = layout.to_ours(tensor).astype(dtype)
    if entry.layer is None:
      flat[entry.path] = value
    else:
      if entry.path not in flat:
        flat[entry.path] = np.empty((layers[entry.path], *entry.shape), dtype)
      flat[entry.path][entry.layer] = value
  return unflatten(flat)


def to_torch(params: dict, table: dict[str, Entry]) -> dict[str, np.ndarray]:
  """A torch-layout state dict (numpy arrays) from our nested pure param dict."""
  flat = flatten(params)
  out = {}
  for key, entry in table.items():
    value = np.asarray(flat[entry.path])
    out[key] = LAYOUTS[entry.layout].to_torch(value if entry.layer is None else value[entry.layer])
  return out
