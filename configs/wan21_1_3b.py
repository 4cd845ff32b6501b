"""DiffST on Wan2.1 T2V-1.3B at the released sizes (SPEC §2-§4)."""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.vae = ml_collections.ConfigDict()  # WanVAEConfig defaults are the released Wan2.1 VAE
  config.dit = ml_collections.ConfigDict()  # WanDiTConfig defaults are Wan2.1 T2V-1.3B
  return config
