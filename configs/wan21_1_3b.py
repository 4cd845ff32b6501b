"""DiffST on Wan2.1 T2V-1.3B at the released sizes (SPEC §2-§4)."""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.vae = ml_collections.ConfigDict()  # WanVAEConfig defaults are the released Wan2.1 VAE
  config.dit = ml_collections.ConfigDict()  # WanDiTConfig defaults are Wan2.1 T2V-1.3B
  config.cfca = ml_collections.ConfigDict(dict(time_scale=2))
  config.vrg = ml_collections.ConfigDict(dict(num_tokens=16))
  config.space_scale = 4
  config.sigma = 0.4  # SPEC §4 decision; an ablation axis {0.25, 0.4, 0.55, 0.7}
  config.context_tokens = 512
  return config
