"""CFCA, cross-frame context aggregation (DESIGN §5): synthesizes the s_t - 1 missing frames between keyframes.

1. SpyNet flows between consecutive keyframes, both directions, with forward-backward consistency masks.
2. Bidirectional recurrent propagation: a backward pass (right to left) and a forward pass (left to right) give
   every keyframe a context frame carrying the consistent content of all later / earlier keyframes.
3. Frame prediction: the (forward context, keyframe, backward context) stacks of keyframes k and k+1 are warped to
   time alpha = j / s_t with time-scaled flows.
4. Frame fusion: a small 3D-conv network over the six warped frames adds a residual, zero-initialized, to the
   linear blend (1 - alpha) I_k + alpha I_k+1, so the untrained module is exactly linear interpolation.
Keyframes pass through unchanged; with `enabled=False` the module is linear blending (no parameters used).
Under a mesh its input and output keep their rows spread like the VAE's (warps gather across row shards).
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from diffst_jax.models.flow import SpyNet
from diffst_jax.models.layers import Conv
from diffst_jax.models.vae import VIDEO
from diffst_jax.ops.warp import warp
from diffst_jax.parallel import plan as plan_lib

SCOPE = "cfca"  # its operations' name in a compiled program (hlo_cycles)


@dataclasses.dataclass(frozen=True)
class CFCAConfig:
  OWN_FIELDS: ClassVar[tuple[str, ...]] = ("param_dtype",)  # a run setting, not architecture

  time_scale: int = 2  # s_t: output frames per input interval
  enabled: bool = True  # False: plain linear blending (the ablation)
  fusion_channels: int = 32
  consistency_alpha: float = 0.01  # flows are consistent where |f + b(f)|^2 < alpha (|f|^2 + |b(f)|^2) + beta
  consistency_beta: float = 0.5
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.time_scale not in (2, 4):
      raise ValueError(f"CFCAConfig: time_scale must be 2 or 4, got {self.time_scale}")


def linear_blend(frames: jax.Array, time_scale: int) -> jax.Array:
  """(B, N, h, w, C) keyframes -> (B, s_t (N-1) + 1, h, w, C) with linearly blended frames between them."""
  b, n = frames.shape[:2]
  alphas = jnp.arange(time_scale, dtype=frames.dtype) / time_scale  # (s_t,), 0 = the keyframe itself
  left, right = frames[:, :-1, None], frames[:, 1:, None]
  blended = (1 - alphas)[None, None, :, None, None, None] * left + alphas[None, None, :, None, None, None] * right
  blended = blended.reshape(b, (n - 1) * time_scale, *frames.shape[2:])
  return jnp.concatenate([blended, frames[:, -1:]], axis=1)


def _consistency(flow: jax.Array, reverse: jax.Array, alpha: float, beta: float) -> jax.Array:
  """1 where following `flow` then `reverse` returns to the start (within tolerance), else 0; (B, H, W, 1)."""
  back = warp(reverse, flow)
  error = jnp.sum(jnp.square(flow + back), axis=-1, keepdims=True)
  bound = alpha * (jnp.sum(jnp.square(flow), -1, keepdims=True) + jnp.sum(jnp.square(back), -1, keepdims=True))
  return (error < bound + beta).astype(flow.dtype)


class Fusion(nnx.Module):
  """Six warped frames + alpha -> a residual frame: two 3D convs over the stack, mean over it, a zero-init conv."""

  def __init__(self, channels: int, *, param_dtype: str, rngs: nnx.Rngs):
    kw = dict(dtype="float32", param_dtype=param_dtype, rngs=rngs)
    self.conv1 = Conv(4, channels, (3, 3, 3), **kw)
    self.conv2 = Conv(channels, channels, (3, 3, 3), **kw)
    self.conv_out = Conv(channels, 3, (3, 3), **kw)
    self.conv_out.kernel[...] = jnp.zeros_like(self.conv_out.kernel[...])
    self.conv_out.bias[...] = jnp.zeros_like(self.conv_out.bias[...])

  def __call__(self, plan: plan_lib.ExecutionPlan, stack: jax.Array, alpha: jax.Array) -> jax.Array:
    """stack (B, 6, h, w, 3), alpha (B,) -> (B, h, w, 3)."""
    planes = jnp.broadcast_to(alpha[:, None, None, None, None], (*stack.shape[:-1], 1))
    x = jax.nn.silu(self.conv1(plan, jnp.concatenate([stack, planes], axis=-1)))
    x = jax.nn.silu(self.conv2(plan, x))
    return self.conv_out(plan, x.mean(axis=1))


class CFCA(nnx.Module):
  """(B, N, h, w, 3) keyframes in [-1, 1] -> (B, s_t (N-1) + 1, h, w, 3), keyframes at every s_t-th index."""

  def __init__(self, config: CFCAConfig, *, rngs: nnx.Rngs):
    self.config = config
    kw = dict(param_dtype=config.param_dtype, rngs=rngs)
    self.flow = SpyNet(**kw)
    self.fusion = Fusion(config.fusion_channels, **kw)

  @functools.partial(jax.named_call, name=SCOPE)
  def __call__(self, plan: plan_lib.ExecutionPlan, frames: jax.Array) -> jax.Array:
    config, s_t = self.config, self.config.time_scale
    frames = plan.constrain(frames.astype(jnp.float32), VIDEO)
    blend = linear_blend(frames, s_t)
    b, n, h, w, c = frames.shape
    if not config.enabled or n < 2:
      return blend
    pairs = lambda a: a.reshape(b * (n - 1), h, w, -1)  # noqa: E731
    left, right = pairs(frames[:, :-1]), pairs(frames[:, 1:])
    to_right = self.flow(plan, left, right)  # at frame k, pointing into k+1: warp(I_k+1, to_right) ~ I_k
    to_left = self.flow(plan, right, left)  # at frame k+1, pointing into k
    keep_left = _consistency(to_right, to_left, config.consistency_alpha, config.consistency_beta)
    keep_right = _consistency(to_left, to_right, config.consistency_alpha, config.consistency_beta)
    unpair = lambda a: a.reshape(b, n - 1, h, w, -1)  # noqa: E731
    to_right, to_left, keep_left, keep_right = map(unpair, (to_right, to_left, keep_left, keep_right))

    backward = [frames[:, -1]]  # context from later keyframes, right to left
    for k in range(n - 2, -1, -1):
      carried = 0.5 * (frames[:, k] + warp(backward[0], to_right[:, k]))
      backward.insert(0, keep_left[:, k] * carried + (1 - keep_left[:, k]) * frames[:, k])
    forward = [frames[:, 0]]  # context from earlier keyframes, left to right
    for k in range(n - 1):
      carried = 0.5 * (frames[:, k + 1] + warp(forward[-1], to_left[:, k]))
      forward.append(keep_right[:, k] * carried + (1 - keep_right[:, k]) * frames[:, k + 1])
    stacks = jnp.stack([jnp.stack(forward, 1), frames, jnp.stack(backward, 1)], axis=2)  # (B, N, 3, h, w, c)

    alphas = jnp.arange(1, s_t, dtype=jnp.float32) / s_t  # (s_t - 1,)
    j = len(alphas)
    expand = lambda a: jnp.broadcast_to(a[:, :, None], (b, n - 1, j, *a.shape[2:])).reshape(-1, *a.shape[2:])  # noqa: E731
    scale = jnp.tile(alphas, b * (n - 1))[:, None, None, None]
    flow_left = scale * expand(to_left)  # target time alpha -> keyframe k
    flow_right = (1 - scale) * expand(to_right)  # target time alpha -> keyframe k+1
    warp_stack = lambda stack, flow: jax.vmap(lambda f: warp(f, flow), in_axes=1, out_axes=1)(stack)  # noqa: E731
    warped = jnp.concatenate([warp_stack(expand(stacks[:, :-1]), flow_left),
                              warp_stack(expand(stacks[:, 1:]), flow_right)], axis=1)  # (B (N-1) j, 6, h, w, c)
    residual = self.fusion(plan, warped, jnp.tile(alphas, b * (n - 1))).reshape(b, n - 1, j, h, w, c)

    out = blend[:, :-1].reshape(b, n - 1, s_t, h, w, c)
    out = out.at[:, :, 1:].add(residual)
    return plan.constrain(jnp.concatenate([out.reshape(b, (n - 1) * s_t, h, w, c), frames[:, -1:]], axis=1), VIDEO)
