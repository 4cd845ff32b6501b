"""Tiny preset: the real architecture at toy widths, for tests, CI, laptops and the shipped default model.

Usage: `train.py --config configs/tiny.py --workdir DIR --config.data.videos=VIDEOS`. The VAE keeps Wan2.1's block
structure (4 stages, 2 residual blocks, 16 latent channels with the Wan2.1 normalization constants) at base width 8,
so it converts through both key layouts; it has no pretrained weights, so it is first trained as an autoencoder with
configs/tiny_vae.py (stage 0) and set here through `init.vae`. The DiT keeps Wan2.1's block at 2 heads of 12
channels (all three RoPE bands non-empty), 2 layers; CFCA and VRG at small widths, an 8-token null context.
"""

import ml_collections

from diffst_jax.train import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = defaults.training_defaults()
  config.model = ml_collections.ConfigDict(dict(
      vae=dict(base_dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
               temperal_downsample=(False, True, True)),
      dit=dict(num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, text_dim=24, freq_dim=16),
      cfca=dict(enabled=True, time_scale=2, fusion_channels=8),
      vrg=dict(enabled=True, num_tokens=4, channels=16, num_heads=2),
      space_scale=4,
      sigma=0.4,
      context_tokens=8,
  ))
  config.data.update(clip_frames=9, crop_size=64, batch_size=1)
  # Short stages: the tiny model learns from a few clips on CPU in minutes.
  config.stages.stage1.update(steps=300, learning_rate=1e-3, warmup_steps=20)
  config.stages.stage2.update(steps=100, learning_rate=2e-4, warmup_steps=0)
  config.optimizer.clip_norm = 1.0
  config.conv_implementation = "gemm"  # trained on CPU
  return config
