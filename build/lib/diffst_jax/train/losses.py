"""DiffST's training losses (DESIGN §7), on channels-last clips (B, T, H, W, C) in [-1, 1] and latents.

L_latent: MSE between the denoised latent and the VAE latent of the HR target (stage 1).
L_rec: pixel MSE. L_consis: L1 between the temporal differences of output and target (stage 2, with L_perc).
Every loss is a float32 scalar averaged over all elements. `pixel_terms` computes the pixel terms a stage weights on
a decoded clip, on the range `pixel_range` says.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from diffst_jax.parallel import plan as plan_lib
from diffst_jax.train import perceptual


def latent_loss(z_hat: jax.Array, z_target: jax.Array) -> jax.Array:
  """MSE(ẑ, E(I_h)) over latents (B, T', h, w, C)."""
  return jnp.mean(jnp.square(z_hat.astype(jnp.float32) - z_target.astype(jnp.float32)))


def reconstruction_loss(output: jax.Array, target: jax.Array) -> jax.Array:
  """Pixel MSE between clips (B, T, H, W, C)."""
  return jnp.mean(jnp.square(output.astype(jnp.float32) - target.astype(jnp.float32)))


def consistency_loss(output: jax.Array, target: jax.Array) -> jax.Array:
  """L1 between the frame-to-frame differences of output and target clips (B, T >= 2, H, W, C)."""
  if output.shape[1] < 2:
    raise ValueError(f"consistency_loss: needs at least 2 frames, got shape {tuple(output.shape)}")
  motion = lambda x: jnp.diff(x.astype(jnp.float32), axis=1)  # noqa: E731
  return jnp.mean(jnp.abs(motion(output) - motion(target)))


def to_unit_range(frames: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return frames.astype(jnp.float32) / 127.5 - 1.0


PIXEL_RANGES = ("unit", "symmetric")


def pixel_terms(plan: plan_lib.ExecutionPlan, output: jax.Array, target: jax.Array, weights: Mapping[str, float],
                perceptual_kind: str, perceptual_params, pixel_range: str) -> dict[str, jax.Array]:
  """The pixel loss terms of a decoded clip `output` against `target`, both in [-1, 1]: on [0, 1] with the output
  clamped ("unit", as DOVE computes them), or on [-1, 1] as they are ("symmetric"); the perceptual network under
  `plan`."""
  if pixel_range not in PIXEL_RANGES:
    raise ValueError(f"pixel_range is {pixel_range!r}; expected one of {PIXEL_RANGES}")
  if pixel_range == "unit":
    output = jnp.clip(output, -1.0, 1.0)
  pixels = (lambda x: x * 0.5 + 0.5) if pixel_range == "unit" else (lambda x: x)  # noqa: E731
  terms = {}
  if weights.get("rec"):
    terms["rec"] = reconstruction_loss(pixels(output), pixels(target))
  if weights.get("perceptual"):
    terms["perceptual"] = perceptual.perceptual_loss(plan, perceptual_kind, perceptual_params, output, target)
  if weights.get("consistency"):
    terms["consistency"] = consistency_loss(pixels(output), pixels(target))
  return terms
