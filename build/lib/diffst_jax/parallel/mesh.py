"""The device mesh (DESIGN §10): axes (data, fsdp, context, tensor), from config or a `--mesh` flag.

  data     independent clips;
  fsdp     parameters and optimizer state (ZeRO-3), and clips;
  context  one clip's rows: the DiT's tokens (which run rows first) and the VAE's and CFCA's rows;
  tensor   attention heads and MLP columns (for the 14B).
"""

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "context", "tensor")


def parse_mesh(text: str) -> dict[str, int]:
  """"data=1,fsdp=2,context=4,tensor=1" -> {"data": 1, ...}; unnamed axes are 1, one size may be -1."""
  shape = dict.fromkeys(MESH_AXES, 1)
  for item in filter(None, (part.strip() for part in text.split(","))):
    name, _, size = item.partition("=")
    if name not in MESH_AXES or not size.lstrip("-").isdigit():
      raise ValueError(f"mesh: cannot read {item!r}; write AXIS=SIZE for axes {MESH_AXES}, e.g. "
                       "data=1,fsdp=1,context=8,tensor=1")
    shape[name] = int(size)
  return shape


def resolve_shape(shape: Mapping[str, int], device_count: int) -> dict[str, int]:
  """Fills in the one axis of size -1 and checks that the sizes multiply to `device_count`."""
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh: unknown axes {sorted(unknown)}; the axes are {MESH_AXES}")
  sizes = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
    raise ValueError(f"mesh: sizes must be positive, with at most one -1; got {sizes}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if device_count % known:
      raise ValueError(f"mesh: {device_count} devices do not split into {sizes}")
    sizes[free[0]] = device_count // known
  if math.prod(sizes.values()) != device_count:
    raise ValueError(f"mesh: {sizes} needs {math.prod(sizes.values())} devices, there are {device_count}; make the "
                     "sizes multiply to the device count or set one to -1")
  return sizes


def make_mesh(shape: Mapping[str, int] | str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh over `devices` (default: all), every axis `AxisType.Auto` (GSPMD propagates shardings)."""
  if isinstance(shape, str):
    shape = parse_mesh(shape)
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_shape(shape, len(devices))
  return jax.make_mesh([sizes[axis] for axis in MESH_AXES], MESH_AXES, (AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)
