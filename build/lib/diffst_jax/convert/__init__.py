"""Checkpoint conversion between PyTorch layouts (original Wan2.1, diffusers) and ours."""

from diffst_jax.convert.dit import load_dit
from diffst_jax.convert.torch_io import CheckpointError
from diffst_jax.convert.vae import load_vae

__all__ = ["CheckpointError", "load_dit", "load_vae"]
