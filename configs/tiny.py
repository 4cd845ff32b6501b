"""Tiny preset: the real architecture at toy widths, for tests, CI and laptops.

Usage: `--config configs/tiny.py`. The VAE keeps Wan2.1's block structure (4 stages, 2 residual blocks, 16 latent
channels with the Wan2.1 normalization constants) at base width 8, so it converts through both key layouts. The DiT keeps Wan2.1's block at 2 heads of 12 channels (all three
RoPE bands non-empty), 2 layers; CFCA and VRG at small widths, an 8-token null context.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.vae = ml_collections.ConfigDict(dict(
      base_dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temperal_downsample=(False, True, True)))
  config.dit = ml_collections.ConfigDict(dict(
      num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, text_dim=24, freq_dim=16))
  config.cfca = ml_collections.ConfigDict(dict(time_scale=2, fusion_channels=8))
  config.vrg = ml_collections.ConfigDict(dict(num_tokens=4, channels=16, num_heads=2))
  config.space_scale = 4
  config.sigma = 0.4
  config.context_tokens = 8
  return config
