"""The Wan2.1 3D causal VAE (frozen in DiffST; gradients still flow through it), channels-last.

Compression 4 (time) x 8 x 8 for Wan2.1; configs with fewer stages compress less in space, with fewer temporal
downsamples less in time (`spatial_compression` c and `temporal_compression` below), and a `patch_size` p (diffusers'
field, from the Wan2.2 VAE) folds p x p pixels into channels before the encoder and unfolds them after the decoder.
Clips are processed causally in time chunks as one `jax.lax.scan`: the encoder sees frame 0 alone, then chunks of 4
frames; the decoder sees one latent frame at a time. Every causal convolution carries the last frames of its input
from the previous chunk in a cache, a pytree that mirrors the module tree, so compile time and peak memory do not
grow with the number of frames.

Under a mesh (parallel/rules.py) activations keep their rows spread over the "act_rows" mesh axes (`context`):
time runs as a causal scan, so rows, not frames, are what the devices split; each device convolves its own rows and
takes its neighbours' edge rows (parallel/convolution.py). Rows are split only when they divide over the devices at
every resolution level (H a multiple of c x devices): the execution plan decides (parallel/plan.py, `for_vae`), and
every module takes it as its first argument.

Module and parameter names follow diffusers' `AutoencoderKLWan`, so the conversion tables stay short.
"""

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from diffst_jax.models.diffusers_config import DiffusersConfig
from diffst_jax.models.layers import Conv
from diffst_jax.parallel import plan as plan_lib
from diffst_jax.parallel.attention import attention

WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
ENCODER_CHUNK_FRAMES = 4  # frames per encoder chunk after frame 0 (Wan2.1's temporal compression)
VIDEO = ("act_batch", None, "act_rows", None, None)  # logical axes of (B, T, H, W, C) activations

@dataclasses.dataclass(frozen=True)
class WanVAEConfig(DiffusersConfig):
  """Wan2.1 VAE hyper-parameters; field names follow diffusers' `AutoencoderKLWan` config."""

  DIFFUSERS_CLASS: ClassVar[str] = "AutoencoderKLWan"
  # Wan2.2's residual blocks are not modelled; the compression fields restate what the structure gives (`COMPRESSION`).
  DIFFUSERS_FIXED: ClassVar[dict[str, Any]] = {"is_residual": False}
  FIXED_REASON: ClassVar[str] = "the Wan2.1 VAE's blocks (with Wan2.2's patch_size) are supported"
  COMPRESSION: ClassVar[dict[str, str]] = {"scale_factor_spatial": "spatial_compression",
                                           "scale_factor_temporal": "temporal_compression"}
  OWN_FIELDS: ClassVar[tuple[str, ...]] = ("dtype", "param_dtype", "remat")

  base_dim: int = 96
  decoder_base_dim: int | None = None
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  dropout: float = 0.0
  latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
  latents_std: tuple[float, ...] = WAN21_LATENTS_STD
  in_channels: int = 3  # of the encoder's first convolution: 3 p^2 with a patch_size p, as in diffusers
  out_channels: int = 3
  patch_size: int | None = None
  # Ours, not diffusers': compute and parameter dtypes (norms always run in float32), remat per time chunk.
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = True

  def __post_init__(self):
    for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if len(self.temperal_downsample) != len(self.dim_mult) - 1:
      raise ValueError(
          f"WanVAEConfig: temperal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} entries, "
          f"got {len(self.temperal_downsample)}")
    if ENCODER_CHUNK_FRAMES % self.temporal_compression:
      raise ValueError(
          f"WanVAEConfig: the encoder's chunks of {ENCODER_CHUNK_FRAMES} frames allow 1x, 2x or 4x in time, at most "
          f"two True in temperal_downsample, got temperal_downsample={self.temperal_downsample}")
    patch = self.patch_size or 1
    if patch < 1 or self.in_channels % patch**2 or self.out_channels % patch**2:
      raise ValueError(f"WanVAEConfig: patch_size={self.patch_size} needs in_channels and out_channels multiples of "
                       f"patch_size^2 (3 p^2 for video), got {self.in_channels} and {self.out_channels}")
    if self.attn_scales:
      raise ValueError(f"WanVAEConfig: attn_scales must be empty as in Wan2.1, got {self.attn_scales}")
    if self.dropout != 0.0:
      raise ValueError(f"WanVAEConfig: the VAE is frozen, dropout must be 0.0, got {self.dropout}")
    if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
      raise ValueError(f"WanVAEConfig: latents_mean and latents_std need z_dim = {self.z_dim} entries each")

  @property
  def temperal_upsample(self) -> tuple[bool, ...]:
    return self.temperal_downsample[::-1]

  @property
  def spatial_compression(self) -> int:
    """The patch size times 2 per stage but the last (each halves H and W): 8 for Wan2.1's four stages."""
    return (self.patch_size or 1) * 2 ** (len(self.dim_mult) - 1)

  @property
  def temporal_compression(self) -> int:
    """2 per temporal downsample: 4 for Wan2.1."""
    return 2 ** sum(self.temperal_downsample)

  @property
  def video_channels(self) -> int:
    """Channels of the clips encoded and decoded (in_channels without the patch's folding)."""
    return self.in_channels // (self.patch_size or 1) ** 2

  @classmethod
  def from_diffusers(cls, config: dict[str, Any], **overrides) -> "WanVAEConfig":
    config = dict(config)
    given = {name: config.pop(name) for name in cls.COMPRESSION if config.get(name) is not None}
    result = super().from_diffusers(config, **overrides)
    for name, value in given.items():
      if value != getattr(result, cls.COMPRESSION[name]):
        raise ValueError(f"diffusers AutoencoderKLWan config: {name}={value}, but its patch_size, dim_mult and "
                         f"temperal_downsample compress {getattr(result, cls.COMPRESSION[name])}x")
    return result

  def to_diffusers(self) -> dict[str, Any]:
    return {**super().to_diffusers(), **{name: getattr(self, field) for name, field in self.COMPRESSION.items()}}


def wan21_vae_config(**overrides) -> WanVAEConfig:
  """The released Wan2.1 VAE (`Wan2.1_VAE.pth`, about 127 M parameters)."""
  return WanVAEConfig(**overrides)


# ---------------------------------------------------------------------------------------------------------------
# Layers


def causal_conv(plan: plan_lib.ExecutionPlan, conv: Conv, x: jax.Array,
                cache: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Runs a stride-1 temporal `conv` on the frames of `x` preceded by `cache`; returns (y, next cache).

  The cache holds the last kt - 1 input frames of the previous chunk (zeros at the start of a clip), so running a
  clip chunk by chunk gives the same result as one causal convolution over the whole clip. It is kept in the
  convolution's compute dtype, which is all the convolution sees of it: under training the time scan saves every
  chunk's caches for the backward pass, half as many bytes in bfloat16 as in the float32 the norms hand over.
  """
  context = conv.kernel_size[0] - 1
  if cache is None:
    cache = jnp.zeros((x.shape[0], context, *x.shape[2:]), conv.dtype)
  x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
  return conv(plan, x), x[:, x.shape[1] - context:].astype(conv.dtype)


class RMSNorm(nnx.Module):
  """x / ||x||_channels * sqrt(C) * gamma, computed in float32 (or wider)."""

  def __init__(self, dim: int, *, param_dtype: str):
    self.gamma = nnx.Param(jnp.ones((dim,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(dtype)
    norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=-1, keepdims=True))
    y = xf / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * self.gamma[...].astype(dtype)
    return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
  """RMS -> SiLU -> causal conv 3^3 -> RMS -> SiLU -> causal conv 3^3, plus a 1^3 shortcut if channels change."""

  def __init__(self, in_dim: int, out_dim: int, *, dtype: str, param_dtype: str, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = RMSNorm(in_dim, param_dtype=param_dtype)
    self.conv1 = Conv(in_dim, out_dim, (3, 3, 3), **kw)
    self.norm2 = RMSNorm(out_dim, param_dtype=param_dtype)
    self.conv2 = Conv(out_dim, out_dim, (3, 3, 3), **kw)
    self.conv_shortcut = Conv(in_dim, out_dim, (1, 1, 1), **kw) if in_dim != out_dim else None

  def __call__(self, plan, x, cache):
    cache = cache or {"conv1": None, "conv2": None}
    shortcut = self.conv_shortcut(plan, x) if self.conv_shortcut is not None else x
    h, cache1 = causal_conv(plan, self.conv1, jax.nn.silu(self.norm1(x)), cache["conv1"])
    h, cache2 = causal_conv(plan, self.conv2, jax.nn.silu(self.norm2(h)), cache["conv2"])
    return plan.constrain(h + shortcut, VIDEO), {"conv1": cache1, "conv2": cache2}


class AttentionBlock(nnx.Module):
  """Single-head self-attention over the pixels of each frame, with a residual connection."""

  def __init__(self, dim: int, *, dtype: str, param_dtype: str, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = RMSNorm(dim, param_dtype=param_dtype)
    self.to_qkv = Conv(dim, 3 * dim, (1, 1), **kw)
    self.proj = Conv(dim, dim, (1, 1), **kw)

  def __call__(self, plan: plan_lib.ExecutionPlan, x: jax.Array) -> jax.Array:
    b, t, h, w, c = x.shape
    qkv = self.to_qkv(plan, self.norm(x)).reshape(b * t, h * w, 1, 3 * c)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    y = attention(plan, q, k, v).reshape(b, t, h, w, c)
    return x + self.proj(plan, y)


class Resample(nnx.Module):
  """Spatial x2 up/down-sampling per frame, in "3d" modes also x2 in time.

  upsample: nearest x2 then conv 3x3 dim -> dim/2; "3d" first runs a causal time conv dim -> 2 dim whose two
  halves become two frames (skipped for the first chunk of a clip, whose single frame stays single).
  downsample: zero-pad right/bottom then conv 3x3 stride 2; "3d" then a time conv (3,1,1) stride 2 over the last
  frame of the previous chunk and this chunk (the first chunk's frame passes through).
  """

  MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

  def __init__(self, dim: int, mode: str, *, dtype: str, param_dtype: str, rngs: nnx.Rngs):
    assert mode in self.MODES, mode
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.mode = mode
    if mode.startswith("up"):
      self.resample = Conv(dim, dim // 2, (3, 3), **kw)
      self.time_conv = Conv(dim, 2 * dim, (3, 1, 1), **kw) if mode == "upsample3d" else None
    else:
      self.resample = Conv(dim, dim, (3, 3), stride=(2, 2), padding=((0, 1), (0, 1)), **kw)
      self.time_conv = Conv(dim, dim, (3, 1, 1), stride=(2, 1, 1), **kw) if mode == "downsample3d" else None

  def __call__(self, plan, x, cache):
    if self.mode.startswith("up"):
      if self.time_conv is not None:
        x, cache = self._double_frames(plan, x, cache)
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
      return self.resample(plan, x), cache
    x = self.resample(plan, x)
    if self.time_conv is None:
      return x, cache
    last = x[:, -1:]
    if cache is not None:
      x = self.time_conv(plan, jnp.concatenate([cache.astype(x.dtype), x], axis=1))
    return x, last

  def _double_frames(self, plan, x, cache):
    b, t, h, w, c = x.shape
    if cache is None:
      return x, jnp.zeros((b, 2, h, w, c), self.time_conv.dtype)
    y, cache = causal_conv(plan, self.time_conv, x, cache)
    # Interleaved by stacking the two halves, not by reshape and transpose: with the rows split over devices, the
    # TPU partitioner turns the transpose into all-to-alls and the next row repeat into a gather of every row.
    return jnp.stack([y[..., :c], y[..., c:]], axis=2).reshape(b, 2 * t, h, w, c), cache


class MidBlock(nnx.Module):
  """Residual block, attention, residual block."""

  def __init__(self, dim: int, *, dtype: str, param_dtype: str, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.resnets = nnx.List([ResidualBlock(dim, dim, **kw) for _ in range(2)])
    self.attentions = nnx.List([AttentionBlock(dim, **kw)])

  def __call__(self, plan, x, cache):
    cache = cache or [None, None]
    x, cache0 = self.resnets[0](plan, x, cache[0])
    x = self.attentions[0](plan, x)
    x, cache1 = self.resnets[1](plan, x, cache[1])
    return x, [cache0, cache1]


class Encoder(nnx.Module):
  """(B, t, H/p, W/p, in_channels) -> (B, t', H/c, W/c, 2 z_dim) moments for one time chunk (c = spatial_compression,
  p = patch_size: the clip's pixels already folded into channels)."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
    dims = [config.base_dim * m for m in (1, *config.dim_mult)]
    self.conv_in = Conv(config.in_channels, dims[0], (3, 3, 3), **kw)
    blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      for _ in range(config.num_res_blocks):
        blocks.append(ResidualBlock(in_dim, out_dim, **kw))
        in_dim = out_dim
      if i < len(config.dim_mult) - 1:
        mode = "downsample3d" if config.temperal_downsample[i] else "downsample2d"
        blocks.append(Resample(out_dim, mode, **kw))
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], **kw)
    self.norm_out = RMSNorm(dims[-1], param_dtype=config.param_dtype)
    self.conv_out = Conv(dims[-1], 2 * config.z_dim, (3, 3, 3), **kw)

  def __call__(self, plan, x, cache):
    cache = cache or {"conv_in": None, "down_blocks": [None] * len(self.down_blocks), "mid_block": None,
                      "conv_out": None}
    x, conv_in = causal_conv(plan, self.conv_in, x, cache["conv_in"])
    down = []
    for block, block_cache in zip(self.down_blocks, cache["down_blocks"]):
      x, block_cache = block(plan, x, block_cache)
      down.append(block_cache)
    x, mid = self.mid_block(plan, x, cache["mid_block"])
    x, conv_out = causal_conv(plan, self.conv_out, jax.nn.silu(self.norm_out(x)), cache["conv_out"])
    return x, {"conv_in": conv_in, "down_blocks": down, "mid_block": mid, "conv_out": conv_out}


class UpBlock(nnx.Module):
  """num_res_blocks + 1 residual blocks, then an optional upsampler."""

  def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, upsample_mode: str | None, *,
               dtype: str, param_dtype: str, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
    self.resnets = nnx.List([ResidualBlock(i, o, **kw) for i, o in zip(dims[:-1], dims[1:])])
    self.upsampler = Resample(out_dim, upsample_mode, **kw) if upsample_mode else None

  def __call__(self, plan, x, cache):
    cache = cache or {"resnets": [None] * len(self.resnets), "upsampler": None}
    resnets = []
    for resnet, resnet_cache in zip(self.resnets, cache["resnets"]):
      x, resnet_cache = resnet(plan, x, resnet_cache)
      resnets.append(resnet_cache)
    upsampler = None
    if self.upsampler is not None:
      x, upsampler = self.upsampler(plan, x, cache["upsampler"])
    return x, {"resnets": resnets, "upsampler": upsampler}


class Decoder(nnx.Module):
  """(B, t', h, w, z_dim) -> (B, t, c h / p, c w / p, out_channels) for one time chunk (one latent frame -> 1 frame
  first, temporal_compression after; p = patch_size, unfolded after the decoder)."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
    base_dim = config.decoder_base_dim or config.base_dim
    mult = config.dim_mult
    dims = [base_dim * m for m in (mult[-1], *mult[::-1])]
    self.conv_in = Conv(config.z_dim, dims[0], (3, 3, 3), **kw)
    self.mid_block = MidBlock(dims[0], **kw)
    blocks = []
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      if i > 0:
        in_dim //= 2  # the previous upsampler halved the channels
      mode = None
      if i < len(mult) - 1:
        mode = "upsample3d" if config.temperal_upsample[i] else "upsample2d"
      blocks.append(UpBlock(in_dim, out_dim, config.num_res_blocks, mode, **kw))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = RMSNorm(dims[-1], param_dtype=config.param_dtype)
    self.conv_out = Conv(dims[-1], config.out_channels, (3, 3, 3), **kw)

  def __call__(self, plan, x, cache):
    cache = cache or {"conv_in": None, "mid_block": None, "up_blocks": [None] * len(self.up_blocks),
                      "conv_out": None}
    x, conv_in = causal_conv(plan, self.conv_in, x, cache["conv_in"])
    x, mid = self.mid_block(plan, x, cache["mid_block"])
    up = []
    for block, block_cache in zip(self.up_blocks, cache["up_blocks"]):
      x, block_cache = block(plan, x, block_cache)
      up.append(block_cache)
    x, conv_out = causal_conv(plan, self.conv_out, jax.nn.silu(self.norm_out(x)), cache["conv_out"])
    return x, {"conv_in": conv_in, "mid_block": mid, "up_blocks": up, "conv_out": conv_out}


def zero_residual_branches(vae: "WanVAE") -> None:
  """Zeroes the last layer of every residual branch (each residual block's second convolution, each attention's
  projection), in place: a VAE trained from scratch then starts as its convolutions in and out, near a linear map,
  which learns to reconstruct far faster than a deep random stack (docs/TRAINING.md)."""
  for _, module in nnx.iter_graph(vae):
    if isinstance(module, ResidualBlock):
      last = module.conv2
    elif isinstance(module, AttentionBlock):
      last = module.proj
    else:
      continue
    last.kernel[...] = jnp.zeros_like(last.kernel[...])
    last.bias[...] = jnp.zeros_like(last.bias[...])


IDENTITY_EPSILON = 0.01  # the folded pixels' size after each head's RMS norm: SiLU there is x/2 + x^2/4 + ...


def set_identity(vae: "WanVAE") -> None:
  """Sets the weights, in place, of a VAE that folds pixels into as many latent channels as it has inputs per latent
  pixel (a patch_size, one stage, no compression in time) so that it reconstructs its input: the latent, after
  latents_mean and latents_std, is the folded clip.

  Residual branches start at zero (`zero_residual_branches`); what remains is each half's first convolution, RMS norm,
  SiLU and last convolution. The first copies its inputs into as many channels (current frame, centre tap) beside one
  constant channel of size sqrt(C) / IDENTITY_EPSILON, so the RMS norm divides every pixel by almost the same number
  and leaves the copies at about IDENTITY_EPSILON of their size, where SiLU is nearly linear (x/2 + x^2/4); the last
  convolution scales them back. What is left is at most IDENTITY_EPSILON / 2 of the range [-1, 1] per half: the
  13 held-out scenes of docs/RESULTS.md, 9 frames of 128x192, come back at 55.6 dB (docs/TRAINING.md)."""
  config = vae.config
  z, inputs, outputs = config.z_dim, config.in_channels, config.out_channels
  if not config.patch_size or len(config.dim_mult) != 1 or config.temporal_compression != 1 or not (
      z == inputs == outputs):
    raise ValueError(f"set_identity: needs a VAE whose latent is its folded input (a patch_size, one dim_mult entry, "
                     f"no temperal_downsample, z_dim = in_channels = out_channels), got {config}")
  widths = (vae.encoder.conv_in.kernel.shape[-1], vae.decoder.conv_in.kernel.shape[-1])
  if min(widths) <= z:
    raise ValueError(f"set_identity: the encoder's and decoder's widths {widths} must exceed z_dim = {z} (a channel "
                     "for each latent channel and a constant one)")
  zero_residual_branches(vae)

  def diagonal(conv, values, bias):
    kernel = jnp.zeros(conv.kernel.shape, conv.kernel.dtype)
    channels = jnp.arange(len(values))
    time, rows, cols = conv.kernel.shape[:3]
    tap = (time - 1, rows // 2, cols // 2)  # a causal convolution's current frame, centre pixel
    conv.kernel[...] = kernel.at[(*tap, channels, channels)].set(jnp.asarray(values, kernel.dtype))
    conv.bias[...] = jnp.zeros(conv.bias.shape, conv.bias.dtype).at[:len(bias)].set(jnp.asarray(bias,
                                                                                               conv.bias.dtype))

  def head(first, last, channels):
    width = first.kernel.shape[-1]
    constant = math.sqrt(width) / IDENTITY_EPSILON
    diagonal(first, [1.0] * channels, [0.0] * channels + [constant])
    diagonal(last, [2.0 / IDENTITY_EPSILON] * channels, [])

  mean, std = jnp.asarray(config.latents_mean), jnp.asarray(config.latents_std)
  head(vae.encoder.conv_in, vae.encoder.conv_out, z)
  diagonal(vae.quant_conv, jnp.concatenate([std, jnp.ones(z)]), jnp.concatenate([mean, jnp.zeros(z)]))
  diagonal(vae.post_quant_conv, 1.0 / std, -mean / std)
  head(vae.decoder.conv_in, vae.decoder.conv_out, z)


def _scan_time_chunks(plan: plan_lib.ExecutionPlan, module: nnx.Module, first: jax.Array, rest: jax.Array | None,
                      remat: bool) -> jax.Array:
  """Runs a causal `module(plan, x, cache) -> (y, cache)` over chunk `first`, then over `rest` (n, B, t, ...) in a
  scan.

  Under `remat` each chunk is recomputed in the backward pass, so the scan keeps only every chunk's incoming caches;
  where n has a divisor g near its square root, the chunks run as g checkpointed groups of n/g, which keeps g + n/g
  caches instead of n (6 instead of 8 for a 33-frame clip) for one more forward pass.

  Returns the outputs concatenated along time, (B, T, ...).
  """
  graphdef, state = nnx.split(module)

  def run_chunk(state, x, cache):
    y, cache = nnx.merge(graphdef, state)(plan, plan.constrain(x, VIDEO), cache)
    return plan.constrain(y, VIDEO), cache

  if remat:
    run_chunk = jax.checkpoint(run_chunk)
  y, cache = run_chunk(state, first, None)
  if rest is None:
    return y

  def body(cache, x):
    y, cache = run_chunk(state, x, cache)
    return cache, y

  scan_chunks = lambda cache, xs: plan.scan(body, cache, xs)  # noqa: E731
  n = rest.shape[0]
  groups = _checkpoint_groups(n) if remat else 1
  if groups > 1:
    grouped = rest.reshape(groups, n // groups, *rest.shape[1:])
    _, ys = plan.scan(jax.checkpoint(scan_chunks), cache, grouped)
    ys = ys.reshape(n, *ys.shape[2:])
  else:
    _, ys = scan_chunks(cache, rest)
  b, t = ys.shape[1:3]
  ys = jnp.moveaxis(ys, 0, 1).reshape(b, n * t, *ys.shape[3:])
  return jnp.concatenate([y, ys], axis=1)


def _checkpoint_groups(n: int) -> int:
  """The number of groups g (a divisor of n) that minimizes the caches a two-level checkpointed scan keeps,
  g + n / g; 1 where grouping saves nothing (n < 6, or n prime)."""
  best = min((g for g in range(1, n + 1) if n % g == 0), key=lambda g: (g + n // g, g))
  return best if best + n // best < n else 1


def _split_chunks(x: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array | None]:
  """(B, 1 + n*chunk, ...) -> first frame (B, 1, ...) and the rest as (n, B, chunk, ...), or None when n = 0."""
  b, t = x.shape[:2]
  n = (t - 1) // chunk
  if n == 0:
    return x[:, :1], None
  rest = x[:, 1:].reshape(b, n, chunk, *x.shape[2:])
  return x[:, :1], jnp.moveaxis(rest, 1, 0)


def patchify(x: jax.Array, patch: int | None) -> jax.Array:
  """(B, T, H, W, C) -> (B, T, H/p, W/p, C p^2), each pixel's channel c at offset (i, j) of its patch in channel
  (c p + j) p + i, diffusers' order."""
  if not patch or patch == 1:
    return x
  b, t, h, w, c = x.shape
  x = x.reshape(b, t, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 2, 4, 6, 5, 3).reshape(b, t, h // patch, w // patch, c * patch * patch)


def unpatchify(x: jax.Array, patch: int | None) -> jax.Array:
  """The inverse of `patchify`."""
  if not patch or patch == 1:
    return x
  b, t, h, w, channels = x.shape
  x = x.reshape(b, t, h, w, channels // patch**2, patch, patch)
  return x.transpose(0, 1, 2, 6, 3, 5, 4).reshape(b, t, h * patch, w * patch, channels // patch**2)


def _output_dtype(config: WanVAEConfig):
  """Latents and decoded frames are float32, or float64 for a float64 model."""
  return jnp.promote_types(config.dtype, jnp.float32)


# Jitted over (graphdef, state) rather than with nnx.jit, which writes state back into the module and so cannot be
# called under an outer jax transform (a loss being differentiated with respect to the input, say). The execution
# plan is a static argument so that a program traced under one plan is not reused under another.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _encode(graphdef: nnx.GraphDef, plan: plan_lib.ExecutionPlan, state: nnx.State, x: jax.Array) -> jax.Array:
  vae = nnx.merge(graphdef, state)
  config, dtype = vae.config, _output_dtype(vae.config)
  vae_plan = plan.for_vae(x.shape[2] // config.spatial_compression)
  first, rest = _split_chunks(patchify(x, config.patch_size), ENCODER_CHUNK_FRAMES)
  encoder_graph, encoder_state = nnx.split(vae.encoder)
  encode_chunks = lambda state, first, rest: _scan_time_chunks(  # noqa: E731
      vae_plan, nnx.merge(encoder_graph, state), first, rest, config.remat)
  if config.remat:
    # The whole clip recomputed in the backward pass as well: the time scan then keeps every chunk's causal caches
    # only while the encoder's own gradient is taken, not through the DiT's and the decoder's backward passes, when
    # (in DiffST's train step, whose gradients reach CFCA through the encoder) they would add to the decoder's.
    encode_chunks = jax.checkpoint(encode_chunks)
  moments = vae.quant_conv(vae_plan, encode_chunks(encoder_state, first, rest))
  mean = moments[..., :config.z_dim].astype(dtype)
  return (mean - jnp.asarray(config.latents_mean, dtype)) / jnp.asarray(config.latents_std, dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _decode(graphdef: nnx.GraphDef, plan: plan_lib.ExecutionPlan, state: nnx.State, z: jax.Array) -> jax.Array:
  vae = nnx.merge(graphdef, state)
  config, dtype = vae.config, _output_dtype(vae.config)
  z = z.astype(dtype) * jnp.asarray(config.latents_std, dtype) + jnp.asarray(config.latents_mean, dtype)
  first, rest = _split_chunks(vae.post_quant_conv(plan, z), 1)
  x = _scan_time_chunks(plan.for_vae(z.shape[2]), vae.decoder, first, rest, config.remat)
  return jnp.clip(unpatchify(x, config.patch_size).astype(dtype), -1.0, 1.0)


def _check_video(x, name: str, channels: int, frames_rule: str, spatial_multiple: int):
  """Raises a one-line ValueError when `x` is not a (B, T, H, W, channels) finite float clip."""
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 5:
    raise ValueError(f"{name}: expected a 5-D array (B, T, H, W, C), got shape {shape}")
  b, t, h, w, c = shape
  if c != channels:
    raise ValueError(f"{name}: expected {channels} channels in the last axis (channels-last), got {c} "
                     f"in shape {tuple(shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected a float array, got dtype {x.dtype}")
  if frames_rule == "4k+1" and t % 4 != 1:
    raise ValueError(f"{name}: the frame count must be 4k+1 (1, 5, 9, 13, ...), got T={t}; "
                     "pad by repeating the last frame")
  if t < 1:
    raise ValueError(f"{name}: got no frames (T=0)")
  if h % spatial_multiple or w % spatial_multiple:
    raise ValueError(f"{name}: height and width must be multiples of {spatial_multiple}, got H={h}, W={w}; "
                     "reflect-pad and crop back")
  if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name}: the input contains NaN or Inf values; only finite values are accepted")


class WanVAE(nnx.Module):
  """The Wan2.1 causal video VAE: `encode` (B, T, H, W, 3) in [-1, 1] <-> `decode` normalized latents."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
    self.config = config
    self.encoder = Encoder(config, rngs=rngs)
    self.quant_conv = Conv(2 * config.z_dim, 2 * config.z_dim, (1, 1, 1), **kw)
    self.post_quant_conv = Conv(config.z_dim, config.z_dim, (1, 1, 1), **kw)
    self.decoder = Decoder(config, rngs=rngs)

  def encode(self, plan: plan_lib.ExecutionPlan, x: jax.Array) -> jax.Array:
    """(B, T, H, W, 3) in [-1, 1], T = 4k+1, H and W multiples of c = spatial_compression (8 for Wan2.1) ->
    normalized latent mean (B, 1 + (T-1)/s, H/c, W/c, z_dim) for s = temporal_compression (4 for Wan2.1), float32
    (float64 for a float64 model)."""
    _check_video(x, "WanVAE.encode", self.config.video_channels, "4k+1", self.config.spatial_compression)
    graphdef, state = nnx.split(self)
    return _encode(graphdef, plan, state, x)

  def decode(self, plan: plan_lib.ExecutionPlan, z: jax.Array) -> jax.Array:
    """Normalized latents (B, T', h, w, z_dim) -> video (B, 1 + s (T'-1), c h, c w, 3) clamped to [-1, 1], float32
    (float64 for a float64 model)."""
    _check_video(z, "WanVAE.decode", self.config.z_dim, "any", 1)
    graphdef, state = nnx.split(self)
    return _decode(graphdef, plan, state, z)
