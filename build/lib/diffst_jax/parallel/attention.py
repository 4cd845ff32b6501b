"""Attention under an execution plan: the implementation, its block size and the context-parallel mode are the
plan's (parallel/plan.py), resolved for the platform the program is compiled for, and an accelerator kernel (splash,
a Mosaic kernel; cuDNN) always runs inside shard_map on each device's part of the operands: XLA partitions only its
own attention.

Two shapes of attention:
  `self_attention`   keys split like the queries: the DiT's tokens spread over the mesh axes of "act_length" (the
                     `context` axis), rows first, so each device holds a contiguous block of latent rows;
  `attention`        keys whole on every device: cross-attention to the text context, VRG's guidance tokens and
                     pooling, the VAE's attention over each frame's pixels; the queries keep the plan's layout.

Context-parallel modes of `self_attention` (the plan's `context_parallel`):
  "allgather_kv"  every device gathers all keys/values and attends its own queries (any device count; default);
  "ulysses"       all-to-all from token shards to head shards, full attention per head group, all-to-all back
                  (needs the heads per tensor shard divisible by the context size);
  "ring"          keys/values travel round the ring (ppermute); partial results merge by their log-sum-exp
                  (each block in XLA attention, whatever the implementation).
The sequence must divide by the context size: callers pad it and mask the padding with `key_mask`.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from diffst_jax.ops import attention as attention_ops
from diffst_jax.parallel import plan as plan_lib

MODES = plan_lib.CONTEXT_PARALLEL_MODES
LAYOUT = ("act_batch", "act_length", "act_heads", None)


def _attend(plan: plan_lib.ExecutionPlan, implementation: str):
  return lambda q, k, v, mask=None: attention_ops.dot_product_attention(  # noqa: E731
      q, k, v, key_mask=mask, implementation=implementation, block_size=plan.attention_block_size)


def attention(plan: plan_lib.ExecutionPlan, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Attention of q (B, Sq, N, D) over k, v (B, Sk, N, D) whose keys every device holds whole: the queries laid out
  by `plan` ("act_batch", "act_length", "act_heads", as far as they divide), keys and values over the batch and
  heads only."""
  implementation = plan.attention_implementation()
  attend = _attend(plan, implementation)
  if plan.mesh is None or implementation not in attention_ops.KERNELS:
    return attend(q, k, v)
  q_spec = plan.spec(LAYOUT, q.shape)
  kv_spec = PartitionSpec(q_spec[0], None, q_spec[2], None)  # split as the queries' batch and heads, keys whole
  return jax.shard_map(attend, mesh=plan.mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                       check_vma=False)(q, k, v)


def self_attention(plan: plan_lib.ExecutionPlan, q: jax.Array, k: jax.Array, v: jax.Array,
                   key_mask: jax.Array | None = None) -> jax.Array:
  """Attention of q over k, v (B, S, N, D) with tokens sharded over `plan`'s "act_length" mesh axes (plain
  attention without a mesh or with context size 1); `key_mask` (B, S), True for real tokens."""
  mode = plan.context_parallel
  cp = plan.axis_size("act_length")
  implementation = plan.attention_implementation()
  attend = _attend(plan, implementation)
  if plan.mesh is None or (cp == 1 and implementation not in attention_ops.KERNELS):
    return attend(q, k, v, key_mask)
  if q.shape[1] % cp:
    raise ValueError(f"context-parallel attention: {q.shape[1]} tokens do not split over {cp} devices; pad the "
                     "tokens to a multiple and mask the padding")
  spec = plan.spec(LAYOUT, q.shape)
  axis = spec[1]
  local_heads = q.shape[2] // plan.axis_size("act_heads") if spec[2] is not None else q.shape[2]
  if mode == "ulysses" and local_heads % cp:
    raise ValueError(f"ulysses attention needs the heads per device ({local_heads}) divisible by the context size "
                     f"{cp}; use mode 'allgather_kv' or 'ring', or another context size")

  def gather(a):
    return None if a is None else jax.lax.all_gather(a, axis, axis=1, tiled=True)

  def allgather_kv(q, k, v, mask):
    return attend(q, gather(k), gather(v), gather(mask))

  def ulysses(q, k, v, mask):
    to_heads = lambda a: jax.lax.all_to_all(a, axis, split_axis=2, concat_axis=1, tiled=True)  # noqa: E731
    out = attend(to_heads(q), to_heads(k), to_heads(v), gather(mask))
    return jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)

  def ring(q, k, v, mask):
    shift = [(i, (i + 1) % cp) for i in range(cp)]
    out, lse = attention_ops.attention_with_lse(q, k, v, mask)
    for _ in range(cp - 1):
      k, v, mask = (None if a is None else jax.lax.ppermute(a, axis, shift) for a in (k, v, mask))
      block_out, block_lse = attention_ops.attention_with_lse(q, k, v, mask)
      merged = jnp.logaddexp(lse, block_lse)
      weight = lambda a: jnp.moveaxis(jnp.exp(a - merged), 1, 2)[..., None]  # noqa: E731  (B, Sq, N, 1)
      out = out * weight(lse) + block_out * weight(block_lse)
      lse = merged
    return out.astype(v.dtype)

  body = attend if cp == 1 else {"allgather_kv": allgather_kv, "ulysses": ulysses, "ring": ring}[mode]
  if key_mask is None:  # no all-True mask: XLA would materialize it against the logits
    return jax.shard_map(lambda q, k, v: body(q, k, v, None), mesh=plan.mesh, in_specs=(spec, spec, spec),
                         out_specs=spec, check_vma=False)(q, k, v)
  return jax.shard_map(body, mesh=plan.mesh, in_specs=(spec, spec, spec, PartitionSpec(spec[0], spec[1])),
                       out_specs=spec, check_vma=False)(q, k, v, key_mask)
