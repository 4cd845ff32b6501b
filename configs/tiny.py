"""Tiny preset: the real architecture at toy widths, for tests, CI and laptops.

Usage: `--config configs/tiny.py`. The VAE keeps Wan2.1's block structure (4 stages, 2 residual blocks, 16 latent
channels with the Wan2.1 normalization constants) at base width 8, so it converts through both key layouts.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.vae = ml_collections.ConfigDict(dict(
      base_dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temperal_downsample=(False, True, True)))
  return config
