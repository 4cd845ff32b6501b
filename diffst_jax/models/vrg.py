"""VRG, video representation guidance (DESIGN §6): K global tokens from the raw LR low-fps input for the DiT.

A 3D-conv stem downsamples the clip in space (x4) and time (x2); K learned queries attention-pool its features into
K tokens of the DiT's text width. The DiT embeds them with its context embedding and every block's
cross-attention attends them in a branch of their own whose values are scaled by a per-token gate, initialized
to zero: an untrained VRG leaves the pretrained denoiser's output exactly unchanged.
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from diffst_jax.models.layers import Conv
from diffst_jax.parallel import plan as plan_lib
from diffst_jax.parallel.attention import attention

SCOPE = "vrg"  # its operations' name in a compiled program (hlo_cycles)


@dataclasses.dataclass(frozen=True)
class VRGConfig:
  OWN_FIELDS: ClassVar[tuple[str, ...]] = ("param_dtype",)  # a run setting, not architecture

  enabled: bool = True  # False: no guidance tokens (the ablation)
  num_tokens: int = 16  # K
  channels: int = 128
  num_heads: int = 4
  param_dtype: str = "float32"


class VRG(nnx.Module):
  """(B, N, h, w, 3) in [-1, 1] -> tokens (B, K, text_dim) and their gate (K,)."""

  def __init__(self, config: VRGConfig, text_dim: int, *, rngs: nnx.Rngs):
    self.config = config
    kw = dict(dtype="float32", param_dtype=config.param_dtype, rngs=rngs)
    c = config.channels
    self.num_heads = config.num_heads
    self.stem = nnx.List([Conv(3, c // 2, (3, 3), stride=(2, 2), padding=((1, 1), (1, 1)), **kw),
                          Conv(c // 2, c, (3, 3), stride=(2, 2), padding=((1, 1), (1, 1)), **kw)])
    self.temporal = Conv(c, c, (3, 3, 3), stride=(2, 1, 1), **kw)
    self.queries = nnx.Param(jax.random.normal(rngs.params(), (config.num_tokens, c), config.param_dtype))
    self.to_q = Conv(c, c, (1, 1), **kw)
    self.to_kv = Conv(c, 2 * c, (1, 1), **kw)
    self.proj = nnx.Linear(c, text_dim, param_dtype=config.param_dtype, rngs=rngs)
    self.gate = nnx.Param(jnp.zeros((config.num_tokens,), config.param_dtype))

  @functools.partial(jax.named_call, name=SCOPE)
  def __call__(self, plan: plan_lib.ExecutionPlan, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = frames.astype(jnp.float32)
    for conv in self.stem:
      x = jax.nn.silu(conv(plan, x))
    x = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)), mode="edge")  # time: keep every frame's context
    x = jax.nn.silu(self.temporal(plan, x))
    b, c = x.shape[0], x.shape[-1]
    k, v = jnp.split(self.to_kv(plan, x.reshape(b, 1, -1, c)).reshape(b, -1, 2 * c), 2, axis=-1)
    q = self.to_q(plan, self.queries[...].astype(jnp.float32)[None, None, :, :]).reshape(1, -1, c)
    heads = lambda a: a.reshape(a.shape[0], a.shape[1], self.num_heads, -1)  # noqa: E731
    pooled = attention(plan, heads(jnp.broadcast_to(q, (b, *q.shape[1:]))), heads(k), heads(v))
    tokens = self.proj(pooled.reshape(b, -1, c))
    return tokens, self.gate[...].astype(jnp.float32)
