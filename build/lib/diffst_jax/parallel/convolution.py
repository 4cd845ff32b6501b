"""Convolutions over inputs whose rows are split over devices ("act_rows"), each device convolving its own rows.

Each device runs the convolution on its rows as if they were the whole image (zero rows beyond them), then adds
what its neighbours' edge rows contribute to its first and last output rows, computed from the few rows they pass
(`ppermute`) on a strip a few rows high. Left to XLA's partitioner, the same convolution copies every input with its
neighbours' rows attached (one more input-sized buffer per convolution), and with the input replicated over another
device axis its kernel gradient comes out multiplied by the copies (tests/models/test_layers.py); inside shard_map
the kernel gradient is each device's own, summed over the devices whose rows differ.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from diffst_jax.parallel import plan as plan_lib

ConvFn = Callable[[jax.Array, jax.Array, tuple[int, ...], tuple[tuple[int, int], ...]], jax.Array]


def applies(x_shape, kernel_shape, stride, padding, rows_devices: int) -> bool:
  """Whether rows of `x_shape` split over `rows_devices` can run as `convolve_split_rows`: every device's output
  rows come from its own rows and the edge rows of its two neighbours (no more than it holds), and the output rows
  split as the input rows do."""
  rows, kh, s = x_shape[-3], kernel_shape[-4], stride[-2]
  top, bottom = padding[0]
  if rows_devices == 1 or rows % (rows_devices * s):
    return False
  local = rows // rows_devices
  return kh - s <= top + bottom < kh and top <= local and kh - s - top <= local


def convolve_split_rows(plan: plan_lib.ExecutionPlan, conv: ConvFn, x: jax.Array, kernel: jax.Array, stride,
                        padding) -> jax.Array:
  """`conv(x, kernel, stride, padding)` (N, ..., H, W, C) with the rows H over `plan`'s "act_rows" devices, each
  device on its own rows (see the module's docstring); needs `applies`."""
  spec = plan.spec(plan.conv_layout(x.ndim), x.shape)
  axes = spec[-3]
  devices = plan.axis_size("act_rows")
  s, kh = stride[-2], kernel.shape[-4]
  top = padding[0][0]
  below = kh - s - top  # rows of the next device the last output rows need
  strip_padding = ((0, 0), padding[1])

  def rows(a, start, stop):
    return jax.lax.slice_in_dim(a, start, stop, axis=a.ndim - 3)

  def zero_rows(a, count):
    return jnp.zeros((*a.shape[:-3], count, *a.shape[-2:]), a.dtype)

  def body(x, kernel):
    local = x.shape[-3]
    y = conv(x, kernel, stride, padding)
    if top:  # the previous device's last `top` rows reach this device's first output rows
      received = jax.lax.ppermute(rows(x, local - top, local), axes, [(i, i + 1) for i in range(devices - 1)])
      first = math.ceil(top / s)
      strip = jnp.concatenate([received, zero_rows(x, (first - 1) * s + kh - top)], axis=-3)
      y = y.at[..., :first, :, :].add(conv(strip, kernel, stride, strip_padding))
    if below > 0:  # the next device's first rows reach this device's last output rows
      received = jax.lax.ppermute(rows(x, 0, below), axes, [(i + 1, i) for i in range(devices - 1)])
      first = math.ceil((local + top - kh + 1) / s)
      strip = jnp.concatenate([zero_rows(x, local - (first * s - top)), received], axis=-3)
      y = y.at[..., first:, :, :].add(conv(strip, kernel, stride, strip_padding))
    return y

  return jax.shard_map(body, mesh=plan.mesh, in_specs=(spec, PartitionSpec()), out_specs=spec)(x, kernel)
