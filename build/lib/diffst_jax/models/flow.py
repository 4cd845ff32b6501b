"""SpyNet, the pyramid optical-flow network of BasicVSR / RealBasicVSR (BasicSR's `SpyNet`), channels-last.

`SpyNet()(plan, ref, supp)` returns the flow (B, H, W, 2) = (dx, dy) with `warp(supp, flow) ≈ ref`. Six levels,
coarse to fine: each refines the upsampled flow from [ref, supp warped by it, flow] with five 7x7 convolutions.
Parameter names follow BasicSR (`basic_module.{level}.basic_module.{0,2,4,6,8}`), so its weights convert by a layout
change (`diffst_jax.convert.spynet`).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffst_jax.models.layers import Conv
from diffst_jax.ops.resize import resize_bilinear
from diffst_jax.ops.warp import warp
from diffst_jax.parallel import plan as plan_lib

LEVELS = 6
_CHANNELS = (8, 32, 64, 32, 16, 2)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicModule(nnx.Module):
  """Five 7x7 convolutions 8 -> 32 -> 64 -> 32 -> 16 -> 2 with ReLUs between."""

  def __init__(self, *, param_dtype: str, rngs: nnx.Rngs):
    self.convs = nnx.List([Conv(i, o, (7, 7), dtype="float32", param_dtype=param_dtype, rngs=rngs)
                           for i, o in zip(_CHANNELS[:-1], _CHANNELS[1:])])

  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array) -> jax.Array:
    for conv in self.convs[:-1]:
      x = jax.nn.relu(conv(plan, x))
    return self.convs[-1](plan, x)


def _avg_pool2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class SpyNet(nnx.Module):
  """Optical flow between two frames in [-1, 1], (B, H, W, 3) each; returns (B, H, W, 2) in pixels, float32."""

  def __init__(self, *, param_dtype: str = "float32", rngs: nnx.Rngs):
    self.basic_module = nnx.List([BasicModule(param_dtype=param_dtype, rngs=rngs) for _ in range(LEVELS)])

  def __call__(self, plan: plan_lib.ExecutionPlan, ref: jax.Array, supp: jax.Array) -> jax.Array:
    b, h, w, _ = ref.shape
    size = 2 ** (LEVELS - 1)
    h_up, w_up = math.ceil(h / size) * size, math.ceil(w / size) * size
    mean, std = jnp.asarray(_IMAGENET_MEAN), jnp.asarray(_IMAGENET_STD)
    pyramids = []
    for image in (ref, supp):
      image = (resize_bilinear((image.astype(jnp.float32) + 1) / 2, h_up, w_up) - mean) / std
      levels = [image]
      for _ in range(LEVELS - 1):
        levels.insert(0, _avg_pool2(levels[0]))
      pyramids.append(levels)
    flow = jnp.zeros((b, h_up // size, w_up // size, 2), jnp.float32)
    for level, module in enumerate(self.basic_module):
      ref_l, supp_l = pyramids[0][level], pyramids[1][level]
      if level:
        flow = 2.0 * resize_bilinear(flow, ref_l.shape[1], ref_l.shape[2], align_corners=True)
      warped = warp(supp_l, flow, padding="border")
      flow = flow + module(plan, jnp.concatenate([ref_l, warped, flow], axis=-1))
    flow = resize_bilinear(flow, h, w)
    return flow * jnp.asarray([w / w_up, h / h_up], jnp.float32)
