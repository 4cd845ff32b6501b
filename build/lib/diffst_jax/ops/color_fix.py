"""Colour correction of restored frames against a reference of the same size, as diffusion super-resolution tools
offer it (StableSR's colour fix, which SeedVR and STAR use): the restored frame keeps its detail and takes the
reference's colour.

- "adain": each channel of the frame is shifted and scaled to the reference's mean and standard deviation.
- "wavelet": the frame's high frequencies (what five levels of dilated 3x3 blurs, radius 1, 2, 4, 8, 16, take
  away) over the reference's low frequencies (what is left of it after the same blurs).

Frames are (..., H, W, C) floats, each frame corrected on its own.
"""

import functools

import jax
import jax.numpy as jnp

COLOR_FIXES = ("none", "wavelet", "adain")
WAVELET_LEVELS = 5
_ADAIN_EPS = 1e-5
_BLUR_TAPS = (0.25, 0.5, 0.25)  # the separable 3x3 kernel [1 2 1]^T [1 2 1] / 16


def _dilated_blur(x: jax.Array, radius: int) -> jax.Array:
  """The 3x3 blur with its taps `radius` pixels apart, edges repeated."""
  for axis in (-3, -2):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="edge")
    size = x.shape[axis]
    x = sum(w * jax.lax.slice_in_dim(padded, i * radius, i * radius + size, axis=axis % x.ndim)
            for i, w in enumerate(_BLUR_TAPS))
  return x


def wavelet_split(x: jax.Array, levels: int = WAVELET_LEVELS) -> tuple[jax.Array, jax.Array]:
  """(high, low) frequencies of frames `x`, high + low = x: low is `x` after `levels` blurs of radius 1, 2, 4, ..."""
  low = x
  for level in range(levels):
    low = _dilated_blur(low, 2 ** level)
  return x - low, low


def adain(x: jax.Array, reference: jax.Array) -> jax.Array:
  """`x` with each frame's channels moved to the mean and standard deviation of `reference`'s."""
  def stats(y):
    mean = jnp.mean(y, axis=(-3, -2), keepdims=True)
    return mean, jnp.sqrt(jnp.var(y, axis=(-3, -2), keepdims=True) + _ADAIN_EPS)
  (mean, std), (ref_mean, ref_std) = stats(x), stats(reference)
  return (x - mean) / std * ref_std + ref_mean


@functools.partial(jax.jit, static_argnums=0)  # one fused program per chunk shape, not ~60 eager ops
def color_fix(kind: str, x: jax.Array, reference: jax.Array) -> jax.Array:
  """`x` corrected towards `reference` (same shape) by `kind`, one of COLOR_FIXES."""
  if kind not in COLOR_FIXES:
    raise ValueError(f"colour fix {kind!r} is unknown; use one of {', '.join(COLOR_FIXES)}")
  if x.shape != reference.shape:
    raise ValueError(f"colour fix: frames {x.shape} and reference {reference.shape} differ in shape")
  if kind == "adain":
    return adain(x, reference)
  if kind == "wavelet":
    return wavelet_split(x)[0] + wavelet_split(reference)[1]
  return x
