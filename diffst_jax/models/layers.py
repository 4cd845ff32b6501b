"""Layers shared by several models."""

import math

import jax
import jax.numpy as jnp
from flax import nnx


class Conv(nnx.Module):
  """A 3D convolution (kernel (kt, kh, kw)) over (B, T, H, W, C), or a 2D one (kernel (kh, kw)) over the last
  three axes of (..., H, W, C), each frame on its own.

  No padding in time (causality is the caller's business); `padding` gives the ((top, bottom), (left, right))
  zero padding in space, "same" by default.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, ...], *,
               stride: tuple[int, ...] | None = None, padding: tuple[tuple[int, int], ...] | None = None,
               dtype: str, param_dtype: str, rngs: nnx.Rngs):
    self.kernel_size = tuple(kernel_size)
    self.stride = tuple(stride) if stride else (1,) * len(self.kernel_size)
    spatial = self.kernel_size[-2:]
    self.padding = tuple(padding) if padding else tuple((k // 2, k // 2) for k in spatial)
    self.dtype = jnp.dtype(dtype)
    # torch's default conv init, bias included: with zero biases the RMS-normalized first layers of a VAE trained
    # from scratch cannot tell a dark input from a bright one of the same colour (docs/TRAINING.md).
    init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
    self.kernel = nnx.Param(init(rngs.params(), (*self.kernel_size, in_channels, out_channels), param_dtype))
    bound = 1 / math.sqrt(math.prod(self.kernel_size) * in_channels)
    self.bias = nnx.Param(jax.random.uniform(rngs.params(), (out_channels,), param_dtype, -bound, bound))

  def __call__(self, x: jax.Array) -> jax.Array:
    lead = x.shape[:-3]
    if len(self.kernel_size) == 2:
      x = x.reshape(-1, *x.shape[-3:])
      dims, padding = ("NHWC", "HWIO", "NHWC"), self.padding
    else:
      dims, padding = ("NDHWC", "DHWIO", "NDHWC"), ((0, 0), *self.padding)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, padding, dimension_numbers=dims)
    y = y + self.bias[...].astype(self.dtype)
    if len(self.kernel_size) == 2:
      y = y.reshape(*lead, *y.shape[-3:])
    return y
