"""DiffST on Wan2.1 T2V-1.3B at the released sizes (DESIGN §2-§4), with the training recipe of DESIGN §7.

Train: `train.py --config configs/wan21_1_3b.py --workdir DIR --config.data.videos=VIDEOS
--config.init.vae=WAN_VAE --config.init.dit=WAN_DIT --config.init.flow=SPYNET --config.init.null_context=EMBEDDING`
(Wan2.1 .pth/.safetensors, diffusers dirs or converted; BasicSR's SpyNet, frozen; the empty prompt's umT5
embedding, tools/empty_prompt_embedding.py).

`configs/wan21_1_3b.py:tiny` is the same recipe, every setting kept (per-part learning rates, bf16 compute with fp32
parameters, DOVE's degradations, unit-range losses with DISTS, fresh stage-2 moments, whole-frame inference), on the
widths of `configs/tiny.py:three_stage_vae` (whose VAE, flow network and null context weights/tiny provides) and
tiny stages: what the suite trains, stops, resumes, exports, upscales with and compiles for a TPU slice.
"""

import ml_collections

from diffst_jax.train import defaults

PRESETS = (None, "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f"configs/wan21_1_3b.py: unknown preset {arg!r}; expected one of {PRESETS}")
  config = defaults.training_defaults()
  config.model = ml_collections.ConfigDict(dict(
      # The released Wan2.1 VAE and T2V-1.3B (the configs' defaults), mixed precision as DOVE trains: bf16
      # activations and matmuls, fp32 parameters (and optimizer state).
      vae=dict(dtype="bfloat16"),
      dit=dict(dtype="bfloat16"),
      cfca=dict(enabled=True, time_scale=2),
      vrg=dict(enabled=True, num_tokens=16),
      space_scale=4,
      sigma=0.4,  # DESIGN §4: our choice, and an ablation axis {0.25, 0.4, 0.55, 0.7}
      context_tokens=512,
  ))
  # CFCA and VRG start from scratch beside the pretrained DiT: 5x its rate (1e-4 in stage 1, 2.5e-5 in stage 2). Ours,
  # not DOVE's, which has neither part.
  config.optimizer.learning_rate_scale = {"cfca": 5.0, "vrg": 5.0}
  if arg == "tiny":
    config.model.vae.update(base_dim=8, z_dim=16, dim_mult=(1, 2, 4), num_res_blocks=2, temperal_downsample=(True, True))
    config.model.dit.update(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, text_dim=24,
                            freq_dim=16)
    config.model.cfca.update(fusion_channels=8)
    config.model.vrg.update(num_tokens=4, channels=16, num_heads=2)
    config.model.context_tokens = 8
    config.data.update(clip_frames=5, crop_size=32, degradation_window=64)
    config.stages.stage1.update(steps=2, warmup_steps=1)
    config.stages.stage2.update(steps=2, warmup_steps=1)
  return config
