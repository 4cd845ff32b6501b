"""Logical axis rules (DESIGN §10): every parameter and activation names its axes logically ("embed", "heads",
"act_length", ...); the rules, kept in config, map each logical name to mesh axes. This module turns names into
shardings, places parameters and optimizer state, and constrains activations inside jit-compiled code.

Which mesh and rules a program is traced with is the execution plan's (parallel/plan.py), made at the entry point and
passed to the models.
"""

import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffst_jax.parallel.mesh import MESH_AXES

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# Parameters: ZeRO-3 over fsdp and context along the model width (as MaxText shards weights over its fsdp and
# context axes: the devices that split one clip's tokens hold a part of each weight each, gathered per layer),
# Megatron-style over tensor along heads / MLP columns.
# Activations: clips over data x fsdp, the rows-first token axis (or VAE rows) over context, heads over tensor.
DEFAULT_RULES: Rules = (
    ("layers", None),
    ("embed", ("fsdp", "context")),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed_out", "tensor"),
    ("text_embed", None),
    ("act_batch", ("data", "fsdp")),
    ("act_length", "context"),
    ("act_frames", "context"),
    ("act_rows", "context"),
    ("act_heads", "tensor"),
    ("act_embed", None),
)

def for_inference(rules: Rules) -> Rules:
  """`rules` for a program without gradients (infer.py): the weights whole on the chips that split one clip ("embed"
  over its axes but context). Training spreads them over context too, since their gradient and AdamW state would
  not fit otherwise; at inference the weights, stored in bf16, are all there is (2.8 GB for the 1.3B DiT), and
  gathering every layer's on each chip would hold a slice of memory that no context size divides."""
  def without_context(axes: MeshAxes) -> MeshAxes:
    kept = tuple(axis for axis in mesh_axes(axes) if axis != "context")
    return kept[0] if len(kept) == 1 else (kept or None)

  return tuple((name, without_context(axes) if name == "embed" else axes) for name, axes in rules)


def mesh_axes(axes: MeshAxes) -> tuple[str, ...]:
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


def check_rules(rules: Rules) -> None:
  for name, axes in rules:
    for axis in mesh_axes(axes):
      if axis not in MESH_AXES:
        raise ValueError(f"sharding rules: logical axis {name!r} maps to {axis!r}, not a mesh axis {MESH_AXES}")


def logical_to_mesh(names: Sequence[str | None], rules: Rules, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
  """The PartitionSpec of a tensor whose axes are `names`. With `shape` and `mesh`, mesh axes that do not divide
  their dimension are dropped (small tensors stay replicated rather than failing). Two logical axes of one tensor
  mapped to one mesh axis is an error that names them."""
  table = dict(rules)
  spec, owner = [], {}
  for position, name in enumerate(names):
    axes = mesh_axes(table.get(name) if name is not None else None)
    if shape is not None and mesh is not None:
      kept, size = [], shape[position]
      for axis in axes:
        if size % mesh.shape[axis] == 0:
          kept.append(axis)
          size //= mesh.shape[axis]
      axes = tuple(kept)
    for axis in axes:
      if axis in owner:
        raise ValueError(f"sharding rules map logical axes {owner[axis]!r} and {name!r} of one tensor {tuple(names)} "
                         f"to the same mesh axis {axis!r}; map one of them elsewhere")
      owner[axis] = name
    spec.append(axes[0] if len(axes) == 1 else (axes or None))
  return PartitionSpec(*spec)


def axis_size_on(mesh: Mesh, rules: Rules, logical_name: str) -> int:
  """How many devices `mesh` spreads `logical_name` over under `rules`."""
  return math.prod(mesh.shape[axis] for axis in mesh_axes(dict(rules).get(logical_name)))


def place(x: jax.Array, names: Sequence[str | None], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> jax.Array:
  """`x` put on `mesh` as its logical axis `names` say (an input batch, say)."""
  return jax.device_put(x, NamedSharding(mesh, logical_to_mesh(names, rules, x.shape, mesh)))


def place_state(tree, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """A model's or optimizer's state put on `mesh` by `state_shardings`."""
  return jax.device_put(tree, state_shardings(tree, mesh, rules))


def abstract_state(tree, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """Shapes, dtypes and `state_shardings` of a (possibly abstract) state: what Orbax restores onto `mesh`, and what
  `jit(...).lower` compiles for it without allocating anything."""
  return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                      tree, state_shardings(tree, mesh, rules))


BATCH_AXES = ("act_batch", None, None, None, None)  # clips (B, T, H, W, C)


def rules_from_config(rules) -> Rules:
  """Rules as a config holds them (JSON turns tuples into lists) -> the `Rules` tuple."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


def batch_sharding(global_shape: Sequence[int], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
  """How a batch of clips (B, T, H, W, C) lies on `mesh`: clips spread over the mesh axes "act_batch" maps to."""
  batch_devices = axis_size_on(mesh, rules, "act_batch")
  if global_shape[0] % batch_devices:
    raise ValueError(f"data.batch_size = {global_shape[0]} does not split over the {batch_devices} devices of "
                     "the mesh's batch axes (data x fsdp); make it a multiple")
  return NamedSharding(mesh, logical_to_mesh(BATCH_AXES, rules, global_shape, mesh))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict[str, jax.Array]:
  """This process's clips of a batch (its `1 / process_count` share) as global arrays (`batch_sharding`)."""

  def put(clips: np.ndarray) -> jax.Array:
    global_shape = (clips.shape[0] * jax.process_count(), *clips.shape[1:])
    return jax.make_array_from_process_local_data(batch_sharding(global_shape, mesh, rules), clips, global_shape)

  return {name: put(clips) for name, clips in local.items()}


def _logical_names(leaf) -> tuple[str | None, ...] | None:
  if isinstance(leaf, nnx.Variable):
    names = leaf.get_metadata().get("out_sharding")
    return tuple(names) if names is not None else None
  return None


def state_shardings(tree, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """The tree's NamedShardings, in its structure (nnx Variables keep their place, holding their sharding), for a
  pytree of nnx Variables / arrays (model state, optimizer state): annotated variables by their logical names,
  everything else replicated. A variable holding no array (the `optax.MaskedNode` that per-part optimizers keep
  for the parameters another part updates) stays as it is."""
  check_rules(rules)

  def sharding(leaf):
    names = _logical_names(leaf)
    value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
    if not jax.tree.leaves(value):
      return leaf
    shape = getattr(value, "shape", ())
    spec = PartitionSpec()
    if names is not None and len(names) == len(shape):
      spec = logical_to_mesh(names, rules, shape, mesh)
    return leaf.replace(NamedSharding(mesh, spec)) if isinstance(leaf, nnx.Variable) else NamedSharding(mesh, spec)

  return jax.tree.map(sharding, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
