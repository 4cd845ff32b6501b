"""Stage 0 of the tiny recipe: the tiny VAE has no pretrained weights, so it is first trained alone as an
autoencoder (reconstruction + perceptual loss on HR clips); configs/tiny.py then freezes it, as DiffST freezes
Wan2.1's VAE.

  train.py --config configs/tiny_vae.py --workdir runs/tiny_vae --config.data.videos=VIDEOS
"""

import pathlib

import ml_collections

from diffst_jax import config_files
from diffst_jax.train import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.training_defaults()
  config.task = "autoencoder"
  config.model = config_files.load(pathlib.Path(__file__).with_name("tiny.py"), arg).model
  # A convolutional autoencoder learns from small crops (5 frames of 32x32), several clips per step (with one the
  # decoder collapses to the data mean); 3e-4 learns fastest of 1e-4 / 3e-4 / 1e-3
  # (docs/experiments/training-log.md). LPIPS-Alex: LPIPS-VGG would take 12 of the 15 CPU-seconds of a step.
  config.data.update(clip_frames=5, crop_size=32, batch_size=8)
  config.stages = ml_collections.ConfigDict(dict(stage1=defaults.stage(1200, 3e-4, 50, rec=1.0, perceptual=0.1),
                                                 stage2=defaults.stage(500, 1e-4, 0, rec=1.0, perceptual=0.1)))
  config.perceptual = "lpips_alex"
  config.pixel_range = "symmetric"  # the losses weights/tiny's VAE was trained with
  config.data.degradation = "earlier"  # as configs/tiny.py (stage 0 itself degrades nothing)
  config.optimizer.clip_norm = 1.0
  return config
