"""DiffST's training losses (SPEC §7), on channels-last clips (B, T, H, W, C) in [-1, 1] and latents.

L_latent: MSE between the denoised latent and the VAE latent of the HR target (stage 1).
L_rec: pixel MSE. L_consis: L1 between the temporal differences of output and target (stage 2, with L_perc).
Every loss is a float32 scalar averaged over all elements.
"""

import jax
import jax.numpy as jnp


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
