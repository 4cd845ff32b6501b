"""Layers shared by several models."""

import functools
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
               dtype: str, param_dtype: str, conv_implementation: str = "xla", rngs: nnx.Rngs):
    self.kernel_size = tuple(kernel_size)
    self.stride = tuple(stride) if stride else (1,) * len(self.kernel_size)
    spatial = self.kernel_size[-2:]
    self.padding = tuple(padding) if padding else tuple((k // 2, k // 2) for k in spatial)
    self.dtype = jnp.dtype(dtype)
    self.implementation = conv_implementation
    # torch's default conv init, bias included: with zero biases the RMS-normalized first layers of a VAE trained
    # from scratch cannot tell a dark input from a bright one of the same colour (docs/TRAINING.md).
    init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
    self.kernel = nnx.Param(init(rngs.params(), (*self.kernel_size, in_channels, out_channels), param_dtype))
    bound = 1 / math.sqrt(math.prod(self.kernel_size) * in_channels)
    self.bias = nnx.Param(jax.random.uniform(rngs.params(), (out_channels,), param_dtype, -bound, bound))

  def __call__(self, x: jax.Array) -> jax.Array:
    y = convolve(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, self.padding,
                 self.implementation)
    return y + self.bias[...].astype(self.dtype)


CONV_IMPLEMENTATIONS = ("xla", "gemm")


def check_conv_implementation(name: str) -> None:
  if name not in CONV_IMPLEMENTATIONS:
    raise ValueError(f"conv_implementation = {name!r} is unknown: use one of {', '.join(CONV_IMPLEMENTATIONS)}")


def convolve(x: jax.Array, kernel: jax.Array, stride: tuple[int, ...], padding: tuple[tuple[int, int], ...],
             implementation: str = "xla") -> jax.Array:
  """A 3D convolution (kernel (kt, kh, kw, in, out)) over (B, T, H, W, C) without time padding, or a 2D one
  (kernel (kh, kw, in, out)) over the last three axes of (..., H, W, C); `padding` is the spatial
  ((top, bottom), (left, right)).

  `implementation` "xla": XLA's native convolutions. "gemm", for training on CPU, whose XLA backend runs 3D
  convolutions and convolution kernel gradients slowly: a 3D convolution becomes a 2D one over time-stacked frames
  and each kernel gradient a matrix product per spatial tap; forward + backward of the tiny VAE runs about 2x
  faster and compiles longer (bench/conv.py). Both give the same results to fp32 rounding.
  """
  check_conv_implementation(implementation)
  conv = _gemm_conv if implementation == "gemm" else _native_conv
  return conv(x, kernel, tuple(stride), tuple(tuple(p) for p in padding))


def _conv2d(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _native_conv(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  if kernel.ndim == 4:
    y = _conv2d(x.reshape(-1, *x.shape[-3:]), kernel, stride, padding)
    return y.reshape(*x.shape[:-3], *y.shape[1:])
  return jax.lax.conv_general_dilated(x, kernel, stride, ((0, 0), *padding),
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _gemm_conv(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  """A 3D convolution as one 2D convolution per output frame over the kt input frames it sees stacked on channels;
  kernel gradients as matrix products (`_conv2d_gemm_kernel_grad`)."""
  if kernel.ndim == 4:
    y = _conv2d_gemm_kernel_grad(x.reshape(-1, *x.shape[-3:]), kernel, stride, padding)
    return y.reshape(*x.shape[:-3], *y.shape[1:])
  kt, kh, kw, cin, cout = kernel.shape
  st = stride[0]
  batch, frames = x.shape[:2]
  out_frames = (frames - kt) // st + 1
  taps = [x[:, i:i + st * (out_frames - 1) + 1:st] for i in range(kt)]
  stacked = jnp.concatenate(taps, axis=-1).reshape(batch * out_frames, *x.shape[2:4], kt * cin)
  y = _conv2d_gemm_kernel_grad(stacked, jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, kt * cin, cout), stride[1:],
                               padding)
  return y.reshape(batch, out_frames, *y.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_gemm_kernel_grad(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  return _conv2d(x, kernel, stride, padding)


def _conv2d_gemm_forward(x, kernel, stride, padding):
  return _conv2d(x, kernel, stride, padding), (x, kernel)


def _conv2d_gemm_backward(stride, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _conv2d(x, kernel, stride, padding), x)
  (dx,) = input_vjp(dy)
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  (sh, sw), (ho, wo) = stride, dy.shape[1:3]
  tap = lambda i, j: padded[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]  # noqa: E731
  dkernel = jnp.stack([jnp.stack([jnp.einsum("nhwc,nhwd->cd", tap(i, j), dy) for j in range(kernel.shape[1])])
                       for i in range(kernel.shape[0])])
  return dx, dkernel.astype(kernel.dtype)


_conv2d_gemm_kernel_grad.defvjp(_conv2d_gemm_forward, _conv2d_gemm_backward)
