"""Wan2.1's DiT (`WanModel`), used by DiffST as a one-step denoiser, channels-last.

Latents (B, T', H', W', 16) are cut into (1, 2, 2) patches, tokens ordered rows first (h, t, w); every block does
self-attention (RMS q/k norm over the full width, 3D RoPE), cross-attention to the context tokens and a tanh-GELU
FFN, modulated by the timestep; the head maps tokens back to a velocity in the latent layout.

The blocks are one stacked module run by `nnx.scan` (leading "layers" axis), with a configurable remat policy.
Module and parameter names follow diffusers' `WanTransformer3DModel`; every parameter carries logical axis names
(see `diffst_jax/parallel` for how they map to a mesh). dtype policy: parameters in `param_dtype`; matmuls of the
attention, FFN and context embedding in `dtype`; the residual stream, norms, modulation, time embedding, patch
embedding and RoPE in float32 (or wider).
"""

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffst_jax.models import layers
from diffst_jax.models.diffusers_config import DiffusersConfig
from diffst_jax.ops.rope import apply_rope, rope_tables
from diffst_jax.parallel import attention as parallel_attention
from diffst_jax.parallel import plan as plan_lib

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# Logical axes (parallel/rules.py) of the latents (frames over `context`) and of the rows-first token stream.
LATENTS = ("act_batch", "act_frames", None, None, None)
TOKENS = ("act_batch", "act_length", "act_embed")
SCOPE = "dit"  # its operations' name in a compiled program (hlo_cycles)


@dataclasses.dataclass(frozen=True)
class WanDiTConfig(DiffusersConfig):
  """Wan2.1 DiT hyper-parameters; field names follow diffusers' `WanTransformer3DModel` config."""

  DIFFUSERS_CLASS: ClassVar[str] = "WanTransformer3DModel"
  DIFFUSERS_FIXED: ClassVar[dict[str, Any]] = {"image_dim": None, "added_kv_proj_dim": None,
                                               "pos_embed_seq_len": None}
  FIXED_REASON: ClassVar[str] = "image-to-video DiTs are not supported, only Wan2.1 text-to-video"
  OWN_FIELDS: ClassVar[tuple[str, ...]] = ("param_dtype", "dtype", "remat_policy")

  patch_size: tuple[int, int, int] = (1, 2, 2)
  num_attention_heads: int = 12
  attention_head_dim: int = 128
  in_channels: int = 16
  out_channels: int = 16
  text_dim: int = 4096
  freq_dim: int = 256
  ffn_dim: int = 8960
  num_layers: int = 30
  cross_attn_norm: bool = True
  qk_norm: str = "rms_norm_across_heads"
  eps: float = 1e-6
  rope_max_seq_len: int = 1024
  # Ours, not diffusers': dtypes and the remat policy per block. How attention runs (implementation, block size,
  # context-parallel mode) is the run's choice, the execution plan's (parallel/plan.py), not the model's.
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "full"

  def __post_init__(self):
    object.__setattr__(self, "patch_size", tuple(self.patch_size))
    if self.qk_norm != "rms_norm_across_heads":
      raise ValueError(f"WanDiTConfig: qk_norm must be 'rms_norm_across_heads' as in Wan2.1, got {self.qk_norm!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"WanDiTConfig: remat_policy {self.remat_policy!r} is unknown; choose from "
                       f"{tuple(REMAT_POLICIES)}")
    if self.attention_head_dim % 2 or self.attention_head_dim < 6:
      raise ValueError(f"WanDiTConfig: attention_head_dim must be even and at least 6 (three RoPE bands), got "
                       f"{self.attention_head_dim}")

  @property
  def dim(self) -> int:
    return self.num_attention_heads * self.attention_head_dim


def wan21_t2v_1_3b(**overrides) -> WanDiTConfig:
  """Wan2.1 T2V-1.3B: dim 1536, 12 heads, 30 layers, 1,418,996,800 parameters."""
  return WanDiTConfig(**overrides)


def wan21_t2v_14b(**overrides) -> WanDiTConfig:
  """Wan2.1 T2V-14B: dim 5120, 40 heads, 40 layers, 14,288,491,584 parameters."""
  return WanDiTConfig(**{"num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# Layers


def _param(value: jax.Array, axes: tuple[str | None, ...]) -> nnx.Param:
  """A parameter annotated with logical axis names, placed later by the sharding rules (not eagerly)."""
  return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class Dense(nnx.Module):
  """x @ kernel + bias, kernel (in, out) with logical axes `axes`, computed in `dtype`."""

  def __init__(self, in_features: int, out_features: int, axes: tuple[str | None, str | None], *, dtype: str,
               param_dtype: str, rngs: nnx.Rngs):
    init = nnx.initializers.xavier_uniform()
    self.kernel = _param(init(rngs.params(), (in_features, out_features), param_dtype), axes)
    self.bias = _param(jnp.zeros((out_features,), param_dtype), axes[1:])
    self.dtype = jnp.dtype(dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x.astype(self.dtype) @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)


def _float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _layer_norm(x: jax.Array, eps: float) -> jax.Array:
  x = _float32(x)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm(nnx.Module):
  """Layer norm with an affine transform, in float32."""

  def __init__(self, dim: int, eps: float, *, param_dtype: str):
    self.eps = eps
    self.scale = _param(jnp.ones((dim,), param_dtype), ("embed",))
    self.bias = _param(jnp.zeros((dim,), param_dtype), ("embed",))

  def __call__(self, x: jax.Array) -> jax.Array:
    return _layer_norm(x, self.eps) * _float32(self.scale[...]) + _float32(self.bias[...])


class RMSNorm(nnx.Module):
  """x / rms(x) * scale over the last axis, in float32."""

  def __init__(self, dim: int, eps: float, axes: tuple[str, ...], *, param_dtype: str):
    self.eps = eps
    self.scale = _param(jnp.ones((dim,), param_dtype), axes)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = _float32(x)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * _float32(self.scale[...])).astype(x.dtype)


class Attention(nnx.Module):
  """Multi-head attention with RMS-normalized q and k (over all heads at once) and optional RoPE."""

  def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
    dim = config.dim
    kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
    self.heads = config.num_attention_heads
    self.to_q = Dense(dim, dim, ("embed", "heads"), **kw)
    self.to_k = Dense(dim, dim, ("embed", "heads"), **kw)
    self.to_v = Dense(dim, dim, ("embed", "heads"), **kw)
    self.to_out = Dense(dim, dim, ("heads", "embed"), **kw)
    self.norm_q = RMSNorm(dim, config.eps, ("heads",), param_dtype=config.param_dtype)
    self.norm_k = RMSNorm(dim, config.eps, ("heads",), param_dtype=config.param_dtype)

  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array, context: jax.Array | None = None, rope=None,
               guidance=None, key_mask: jax.Array | None = None) -> jax.Array:
    """Self-attention (context None; `key_mask` (B, S) hides padding) or cross-attention to `context`.
    `guidance` = (tokens (B, K, dim), gate (K,)): attended in a softmax of their own, values scaled by gate."""
    is_self = context is None
    context = x if is_self else context
    split = lambda a: a.reshape(*a.shape[:2], self.heads, -1)  # noqa: E731
    q = split(self.norm_q(self.to_q(x)))
    k = split(self.norm_k(self.to_k(context)))
    v = split(self.to_v(context))
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if is_self:
      out = parallel_attention.self_attention(plan, q, k, v, key_mask)
    else:
      out = parallel_attention.attention(plan, q, k, v)
    if guidance is not None:
      tokens, gate = guidance
      values = self.to_v(tokens) * gate[None, :, None].astype(self.to_v.dtype)
      out = out + parallel_attention.attention(plan, q, split(self.norm_k(self.to_k(tokens))), split(values))
    return self.to_out(out.reshape(*out.shape[:2], -1))


class FeedForward(nnx.Module):
  """Linear -> GELU (tanh) -> Linear."""

  def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
    self.proj_in = Dense(config.dim, config.ffn_dim, ("embed", "mlp"), **kw)
    self.proj_out = Dense(config.ffn_dim, config.dim, ("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj_out(jax.nn.gelu(self.proj_in(x), approximate=True))


class Block(nnx.Module):
  """x += SA(LN(x)(1+m1)+m0) m2;  x += CA(LN_affine(x), ctx);  x += FFN(LN(x)(1+m4)+m3) m5  (m: fp32 modulation)."""

  def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
    self.eps = config.eps
    table = jax.random.normal(rngs.params(), (1, 6, config.dim)) / math.sqrt(config.dim)
    self.scale_shift_table = _param(table.astype(config.param_dtype), (None, None, "embed"))
    self.attn1 = Attention(config, rngs=rngs)
    self.norm2 = LayerNorm(config.dim, config.eps, param_dtype=config.param_dtype) if config.cross_attn_norm else None
    self.attn2 = Attention(config, rngs=rngs)
    self.ffn = FeedForward(config, rngs=rngs)

  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array, context: jax.Array, e0: jax.Array, rope,
               guidance=None, key_mask: jax.Array | None = None) -> jax.Array:
    m = jnp.split(_float32(self.scale_shift_table[...]) + e0, 6, axis=1)  # six (B, 1, dim)
    y = self.attn1(plan, _layer_norm(x, self.eps) * (1 + m[1]) + m[0], rope=rope, key_mask=key_mask)
    x = x + _float32(y) * m[2]
    y = self.attn2(plan, self.norm2(x) if self.norm2 is not None else x, context, guidance=guidance)
    x = x + _float32(y)
    y = self.ffn(_layer_norm(x, self.eps) * (1 + m[4]) + m[3])
    return plan.constrain(x + _float32(y) * m[5], TOKENS)


class TwoLayerProjection(nnx.Module):
  """Linear -> activation -> Linear (diffusers' TimestepEmbedding with SiLU, PixArtAlphaTextProjection with
  tanh-GELU)."""

  def __init__(self, in_features: int, dim: int, activation, in_axis: str | None, *, dtype: str, param_dtype: str,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.activation = activation
    self.linear_1 = Dense(in_features, dim, (in_axis, "embed"), **kw)
    self.linear_2 = Dense(dim, dim, ("embed", "embed_out"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(self.activation(self.linear_1(x)))


def gelu_tanh(x: jax.Array) -> jax.Array:
  # One function for every model built: the activation is part of the model's graph (jit's static argument), and a
  # partial made per model compares unequal, so each load of the same checkpoint would be traced and compiled anew.
  return jax.nn.gelu(x, approximate=True)


class ConditionEmbedder(nnx.Module):
  """Timestep -> (temb (B, dim), modulation (B, 6, dim)) in float32; context -> (B, L, dim)."""

  def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
    self.freq_dim = config.freq_dim
    self.time_embedder = TwoLayerProjection(config.freq_dim, config.dim, jax.nn.silu, None, dtype="float32",
                                            param_dtype=config.param_dtype, rngs=rngs)
    self.time_proj = Dense(config.dim, 6 * config.dim, ("embed", "embed_out"), dtype="float32",
                           param_dtype=config.param_dtype, rngs=rngs)
    self.text_embedder = TwoLayerProjection(config.text_dim, config.dim, gelu_tanh, "text_embed", dtype=config.dtype,
                                            param_dtype=config.param_dtype, rngs=rngs)

  def __call__(self, t: jax.Array, context: jax.Array):
    temb = self.time_embedder(sinusoidal_embedding(t, self.freq_dim))
    modulation = self.time_proj(jax.nn.silu(temb)).reshape(t.shape[0], 6, -1)
    return temb, modulation, self.text_embedder(context)


def sinusoidal_embedding(t: jax.Array, dim: int) -> jax.Array:
  """(B,) timesteps in [0, 1000) -> (B, dim) [cos | sin] with frequencies 10000^(-i/(dim/2)), float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class PatchEmbedding(nnx.Module):
  """Conv3d with kernel = stride = patch_size, in_channels -> dim, in float32."""

  def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
    self.patch_size = config.patch_size
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")
    shape = (*config.patch_size, config.in_channels, config.dim)
    self.kernel = _param(init(rngs.params(), shape, config.param_dtype), (None, None, None, None, "embed"))
    self.bias = _param(jnp.zeros((config.dim,), config.param_dtype), ("embed",))

  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array) -> jax.Array:
    y = layers.convolve(plan, _float32(x), _float32(self.kernel[...]), self.patch_size, ((0, 0), (0, 0)))
    return y + _float32(self.bias[...])


# The order of (t, h, w) in the token sequence. Attention does not depend on it (each token keeps its own rotary
# position), and row-major order makes the contiguous token chunks context parallelism gives each device the rows
# the VAE and the latents are split by: no device gathers the whole clip at the DiT's entry or exit.
_ROWS_FIRST = (1, 0, 2, 3)


class WanDiT(nnx.Module):
  """Wan2.1 DiT: `dit(plan, x, t, context)` with x (B, T', H', W', in_channels), t (B,), context (B, L, text_dim)
  -> velocity (B, T', H', W', out_channels), float32."""

  def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
    self.config = config
    patch_features = math.prod(config.patch_size)
    self.patch_embedding = PatchEmbedding(config, rngs=rngs)
    self.condition_embedder = ConditionEmbedder(config, rngs=rngs)

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return Block(config, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.proj_out = Dense(config.dim, config.out_channels * patch_features, ("embed", None), dtype=config.dtype,
                          param_dtype=config.param_dtype, rngs=rngs)
    table = jax.random.normal(rngs.params(), (1, 2, config.dim)) / math.sqrt(config.dim)
    self.scale_shift_table = _param(table.astype(config.param_dtype), (None, None, "embed"))

  @functools.partial(jax.named_call, name=SCOPE)
  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array, t: jax.Array, context: jax.Array,
               guidance: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """`guidance`: optional (tokens (B, K, text_dim), gate (K,)) from VRG, embedded like the context and attended
    by every block's cross-attention in a branch scaled by the gate (zero gate: output unchanged)."""
    config = self.config
    _check_inputs(config, x, t, context)
    b, frames, height, width, _ = x.shape
    grid = (frames // config.patch_size[0], height // config.patch_size[1], width // config.patch_size[2])
    # Tokens run row by row (h, t, w), not Wan's time-major (t, h, w): see _ROWS_FIRST.
    rope = tuple(table.reshape(*grid, -1).transpose(_ROWS_FIRST).reshape(table.shape)
                 for table in rope_tables(config.attention_head_dim, grid))

    patches = self.patch_embedding(plan, plan.constrain(x, LATENTS))  # (B, T', H', W', dim)
    tokens = patches.transpose(0, *(1 + axis for axis in _ROWS_FIRST)).reshape(b, -1, config.dim)
    length = tokens.shape[1]
    padding = plan.token_padding(length)  # padded keys are masked
    key_mask = None
    if padding:
      tokens = jnp.pad(tokens, ((0, 0), (0, padding), (0, 0)))
      rope = tuple(np.pad(table, ((0, padding), (0, 0))) for table in rope)
      key_mask = jnp.broadcast_to(jnp.arange(length + padding) < length, (b, length + padding))
    tokens = plan.constrain(tokens, TOKENS)
    temb, e0, context = self.condition_embedder(t, context)
    if guidance is not None:
      guidance = (self.condition_embedder.text_embedder(guidance[0]), guidance[1])

    # Tree-mode (graph=False) transforms: they also run when the module comes in through a plain jax transform.
    run_block = lambda block, x: block(plan, x, context, e0, rope, guidance, key_mask)  # noqa: E731
    if config.remat_policy != "none":
      run_block = nnx.remat(run_block, policy=REMAT_POLICIES[config.remat_policy], graph=False)

    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry, graph=False, unroll=plan.unroll_loops or 1)
    def run_blocks(block, x):
      return run_block(block, x)

    tokens = run_blocks(self.blocks, tokens)[:, :length]

    shift, scale = jnp.split(_float32(self.scale_shift_table[...]) + temb[:, None, :], 2, axis=1)
    out = _float32(self.proj_out(_layer_norm(tokens, config.eps) * (1 + scale) + shift))
    pt, ph, pw = config.patch_size
    out = out.reshape(b, grid[1], grid[0], grid[2], pt, ph, pw, config.out_channels)  # rows first, as the tokens
    out = out.transpose(0, 2, 4, 1, 5, 3, 6, 7)
    return out.reshape(b, grid[0] * pt, grid[1] * ph, grid[2] * pw, config.out_channels)


def _check_inputs(config: WanDiTConfig, x, t, context) -> None:
  """One-line ValueErrors for inputs the DiT cannot take."""
  if x.ndim != 5 or x.shape[-1] != config.in_channels:
    raise ValueError(f"WanDiT: expected latents (B, T', H', W', {config.in_channels}), got shape {tuple(x.shape)}")
  if any(size % p for size, p in zip(x.shape[1:4], config.patch_size)):
    raise ValueError(f"WanDiT: latent T', H', W' must be multiples of the patch size {config.patch_size}, got "
                     f"{tuple(x.shape[1:4])}; pad the video so H and W are multiples of 16")
  if t.shape != (x.shape[0],):
    raise ValueError(f"WanDiT: expected timesteps of shape ({x.shape[0]},), got {tuple(t.shape)}")
  if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != config.text_dim:
    raise ValueError(f"WanDiT: expected context (B={x.shape[0]}, L, {config.text_dim}), got {tuple(context.shape)}")


def zero_output(dit: WanDiT) -> None:
  """Zeroes the DiT's output projection, in place: a DiT trained from scratch then returns zero velocity, so DiffST's
  one step starts by returning the latent it was given (the upscaled, interpolated input)."""
  dit.proj_out.kernel[...] = jnp.zeros_like(dit.proj_out.kernel[...])
  dit.proj_out.bias[...] = jnp.zeros_like(dit.proj_out.bias[...])


def one_step_denoise(plan: plan_lib.ExecutionPlan, dit: WanDiT, z: jax.Array, context: jax.Array, sigma: float,
                     guidance=None) -> jax.Array:
  """DiffST's single step: the LR latent z is taken as x_t at t* = 1000 sigma, and z - sigma * v is returned."""
  t = jnp.full((z.shape[0],), 1000.0 * sigma, jnp.float32)
  return _float32(z) - sigma * dit(plan, z, t, context, guidance)
