"""DiffST on Wan2.1 T2V-1.3B at the released sizes (SPEC §2-§4), with the training recipe of SPEC §7.

Train: `train.py --config configs/wan21_1_3b.py --workdir DIR --config.data.videos=VIDEOS
--config.init.vae=WAN_VAE --config.init.dit=WAN_DIT` (Wan2.1 .pth/.safetensors, diffusers dirs or converted).
"""

import ml_collections

from diffst_jax.train import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = defaults.training_defaults()
  config.model = ml_collections.ConfigDict(dict(
      # The released Wan2.1 VAE and T2V-1.3B (the configs' defaults), mixed precision as DOVE trains: bf16
      # activations and matmuls, fp32 parameters (and optimizer state).
      vae=dict(dtype="bfloat16"),
      dit=dict(dtype="bfloat16"),
      cfca=dict(enabled=True, time_scale=2),
      vrg=dict(enabled=True, num_tokens=16),
      space_scale=4,
      sigma=0.4,  # SPEC §4 decision; an ablation axis {0.25, 0.4, 0.55, 0.7}
      context_tokens=512,
  ))
  # CFCA and VRG start from scratch beside the pretrained DiT: 5x its rate (1e-4 in stage 1, 2.5e-5 in stage 2). Ours,
  # not DOVE's, which has neither part.
  config.optimizer.learning_rate_scale = {"cfca": 5.0, "vrg": 5.0}
  return config
