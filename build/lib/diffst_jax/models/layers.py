"""Layers shared by several models."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffst_jax.parallel import convolution
from diffst_jax.parallel import plan as plan_lib


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

  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array) -> jax.Array:
    y = convolve(plan, x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, self.padding)
    return y + self.bias[...].astype(self.dtype)


def convolve(plan: plan_lib.ExecutionPlan, x: jax.Array, kernel: jax.Array, stride: tuple[int, ...],
             padding: tuple[tuple[int, int], ...], implementation: str | None = None) -> jax.Array:
  """A 3D convolution (kernel (kt, kh, kw, in, out)) over (B, T, H, W, C) without time padding, or a 2D one
  (kernel (kh, kw, in, out)) over the last three axes of (..., H, W, C); `padding` is the spatial
  ((top, bottom), (left, right)).

  `implementation`, by default `plan`'s (parallel/plan.py): "xla", XLA's native convolutions, or
  "gemm", for CPU, whose XLA backend runs 3D convolutions and convolution kernel gradients slowly: a 3D
  convolution becomes a 2D one over time-stacked frames and each kernel gradient a matrix product per kernel tap;
  forward + backward of the tiny VAE runs about 2x faster and compiles longer (bench/conv.py). Both give the same
  results to fp32 rounding.

  With the rows split over devices ("act_rows"), each device convolves its own rows and adds its neighbours' edge
  rows (parallel/convolution.py). Where that does not apply (a neighbour's rows would not be enough), XLA
  partitions the convolution; `plan` says when XLA's partitioner would then get the
  kernel gradient wrong, and it is taken tap by tap; otherwise input and output are laid out over every device
  axis and XLA's native gradient runs.
  """
  stride, padding = tuple(stride), tuple(tuple(p) for p in padding)
  if plan.convolutions(implementation) == "gemm":
    return _gemm_conv(x, kernel, stride, padding)
  if plan.axis_size("act_rows") == 1:
    return _native_conv(x, kernel, stride, padding)
  if convolution.applies(x.shape, kernel.shape, stride, padding, plan.axis_size("act_rows")):
    return convolution.convolve_split_rows(plan, _native_conv, x, kernel, stride, padding)
  if plan.kernel_gradient_by_taps(x.shape):
    return _conv_with_tap_kernel_grad(x, kernel, stride, padding)
  layout = plan.conv_layout(x.ndim)
  return plan.constrain(_native_conv(plan.constrain(x, layout), kernel, stride, padding), layout)


def _native_conv(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  if kernel.ndim == 4:
    y = jax.lax.conv_general_dilated(x.reshape(-1, *x.shape[-3:]), kernel, stride, padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(*x.shape[:-3], *y.shape[1:])
  return jax.lax.conv_general_dilated(x, kernel, stride, ((0, 0), *padding),
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _gemm_conv(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  """A 3D convolution as one 2D convolution per output frame over the kt input frames it sees stacked on channels;
  kernel gradients as matrix products (`_conv_with_tap_kernel_grad`)."""
  if kernel.ndim == 4:
    return _conv_with_tap_kernel_grad(x, kernel, stride, padding)
  kt, kh, kw, cin, cout = kernel.shape
  st = stride[0]
  batch, frames = x.shape[:2]
  out_frames = (frames - kt) // st + 1
  taps = [x[:, i:i + st * (out_frames - 1) + 1:st] for i in range(kt)]
  stacked = jnp.concatenate(taps, axis=-1).reshape(batch * out_frames, *x.shape[2:4], kt * cin)
  y = _conv_with_tap_kernel_grad(stacked, jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, kt * cin, cout), stride[1:],
                                 padding)
  return y.reshape(batch, out_frames, *y.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_with_tap_kernel_grad(x: jax.Array, kernel: jax.Array, stride, padding) -> jax.Array:
  """`_native_conv` whose kernel gradient is one matrix product per kernel tap (input window x output cotangent)."""
  return _native_conv(x, kernel, stride, padding)


def _tap_forward(x, kernel, stride, padding):
  return _native_conv(x, kernel, stride, padding), (x, kernel)


def _tap_backward(stride, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _native_conv(x, kernel, stride, padding), x)
  (dx,) = input_vjp(dy)
  taps = kernel.shape[:-2]
  windowed = len(taps)  # the trailing axes of x before channels that the kernel slides over
  padding = ((0, 0),) * (windowed - len(padding)) + padding  # a 3D kernel does not pad time
  padded = jnp.pad(x, ((0, 0),) * (x.ndim - windowed - 1) + padding + ((0, 0),))
  leading = (slice(None),) * (x.ndim - windowed - 1)
  out_sizes = dy.shape[-1 - windowed:-1]

  gradients = []
  for offsets in itertools.product(*map(range, taps)):
    window = padded[leading + tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offsets, stride, out_sizes))]
    gradients.append(jnp.tensordot(window, dy, axes=(tuple(range(x.ndim - 1)), tuple(range(dy.ndim - 1)))))
    # Each window waits for the previous tap's gradient: otherwise XLA takes every window (each as large as x) right
    # after the forward pass and keeps them all alive through the rest of the backward.
    padded, _ = jax.lax.optimization_barrier((padded, gradients[-1]))
  dkernel = jnp.stack(gradients)
  return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


_conv_with_tap_kernel_grad.defvjp(_tap_forward, _tap_backward)


def store_in_compute_dtype(model: nnx.Module) -> None:
  """Keeps each layer's kernel and bias in the dtype the layer computes in (`dtype`), where that is narrower: bf16
  at inference. The numbers stay the same (layers cast them to that dtype when they run) in half the memory, and the
  compiler makes no bf16 copy of the stacked DiT blocks before their loop. For programs without gradients only: a
  training step keeps its float32 master weights. Works on abstract models (`nnx.eval_shape`) too."""
  for _, module in nnx.iter_modules(model):
    dtype = getattr(module, "dtype", None)
    if not isinstance(dtype, jnp.dtype):
      continue
    for name in ("kernel", "bias"):
      param = getattr(module, name, None)
      if isinstance(param, nnx.Param) and dtype.itemsize < jnp.dtype(param.get_value().dtype).itemsize:
        param.set_value(_cast(param.get_value(), dtype))


def _cast(value, dtype):
  if isinstance(value, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(value.shape, dtype, sharding=value.sharding)
  return value.astype(dtype)
