"""Stage 0 of the tiny recipe: the tiny VAE has no pretrained weights, so it is first trained alone as an
autoencoder (reconstruction + perceptual loss on HR clips); configs/tiny.py then freezes it, as DiffST freezes
Wan2.1's VAE.

  train.py --config configs/tiny_vae.py --workdir runs/tiny_vae --config.data.videos=VIDEOS
"""

import pathlib

import ml_collections

from diffst_jax.train import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.training_defaults()
  config.task = "autoencoder"
  config.model = defaults.load_config_file(pathlib.Path(__file__).with_name("tiny.py"), arg).model
  config.data.update(clip_frames=9, crop_size=64, batch_size=1)
  config.stages = ml_collections.ConfigDict(dict(stage1=defaults.stage(600, 1e-3, 20, rec=1.0, perceptual=0.1)))
  config.perceptual = "lpips"
  config.optimizer.clip_norm = 1.0
  return config
