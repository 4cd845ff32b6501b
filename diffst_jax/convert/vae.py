"""Wan2.1 VAE weights: the original `Wan2.1_VAE.pth` layout and diffusers `AutoencoderKLWan`, both ways."""

import functools
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
from flax import nnx

from diffst_jax.convert import loader, mapping, tables
from diffst_jax.convert.torch_io import CheckpointError
from diffst_jax.models.vae import WanVAE, WanVAEConfig

Layout = Literal["diffusers", "original"]

# Per layout: (encoder block list, residual marker, residual conv, conv_in, post-quant conv, decoder conv_out) keys.
_ENCODER_KEYS = {
    "diffusers": ("encoder.down_blocks", "norm1.gamma", "conv1.weight", "encoder.conv_in.weight",
                  "post_quant_conv.weight", "decoder.conv_out.weight"),
    "original": ("encoder.downsamples", "residual.0.gamma", "residual.2.weight", "encoder.conv1.weight",
                 "conv2.weight", "decoder.head.2.weight"),
}


def detect_layout(state_dict: Mapping[str, np.ndarray]) -> Layout:
  if any(k.startswith("encoder.down_blocks.") for k in state_dict):
    return "diffusers"
  if any(k.startswith("encoder.downsamples.") for k in state_dict):
    return "original"
  raise CheckpointError("not a Wan2.1 VAE checkpoint: no 'encoder.down_blocks.*' (diffusers) or "
                        "'encoder.downsamples.*' (original Wan2.1_VAE.pth) keys")


def infer_config(state_dict: Mapping[str, np.ndarray], layout: Layout) -> WanVAEConfig:
  """Reads the VAE hyper-parameters off the tensor shapes and the encoder's block structure."""
  blocks, residual_marker, residual_conv, conv_in, post_quant, decoder_out = _ENCODER_KEYS[layout]
  for key in (conv_in, post_quant, decoder_out):
    if key not in state_dict:
      raise CheckpointError(f"Wan2.1 VAE checkpoint ({layout} layout) is missing key {key!r}")
  base_dim = state_dict[conv_in].shape[0]
  stages, temporal, res_in_stage, res_counts = [], [], 0, []
  i = 0
  while True:
    prefix = f"{blocks}.{i}."
    if prefix + residual_marker in state_dict:
      out_channels = state_dict[prefix + residual_conv].shape[0]
      res_in_stage += 1
    elif prefix + "resample.1.weight" in state_dict:
      stages.append(out_channels // base_dim)
      temporal.append(prefix + "time_conv.weight" in state_dict)
      res_counts.append(res_in_stage)
      res_in_stage = 0
    else:
      break
    i += 1
  if res_in_stage == 0 or len(set(res_counts + [res_in_stage])) != 1:
    raise CheckpointError(f"Wan2.1 VAE checkpoint: cannot read the encoder block structure under {blocks!r}")
  stages.append(out_channels // base_dim)
  z_dim = state_dict[post_quant].shape[0]
  decoder_dim = state_dict[decoder_out].shape[1]
  if z_dim != len(WanVAEConfig.latents_mean):
    raise CheckpointError(f"Wan2.1 VAE checkpoint: z_dim={z_dim} has no known latents_mean/latents_std; "
                          "pass a WanVAEConfig with them")
  in_channels = state_dict[conv_in].shape[1]
  patch = round(math.sqrt(in_channels / 3))  # video has 3 channels: more come from a patch_size (Wan2.2)
  return WanVAEConfig(
      base_dim=base_dim, decoder_base_dim=None if decoder_dim == base_dim else decoder_dim, z_dim=z_dim,
      dim_mult=tuple(stages), num_res_blocks=res_in_stage, temperal_downsample=tuple(temporal),
      in_channels=in_channels, out_channels=state_dict[decoder_out].shape[0],
      patch_size=patch if patch > 1 and 3 * patch**2 == in_channels else None)


def key_table(config: WanVAEConfig, layout: Layout) -> dict[str, mapping.Entry]:
  """{source key: Entry} for every VAE parameter, in the given torch layout."""
  _, state = mapping.abstract_params(lambda rngs: WanVAE(config, rngs=rngs))
  to_original = tables.vae_diffusers_to_original(config.num_res_blocks, len(config.dim_mult))

  def source_key(name):
    key = tables.apply_rules(tables.VAE_OURS_TO_DIFFUSERS, name)
    return tables.apply_rules(to_original, key) if layout == "original" else key

  return mapping.key_table(state, source_key, lambda name: tables.first_match(tables.VAE_LAYOUTS, name))


SPEC = loader.ModelSpec("wan21_vae", WanVAEConfig, WanVAE, detect_layout, infer_config, key_table,
                        release_file="Wan2.1_VAE.pth")

load_vae = functools.partial(loader.load, SPEC)
from_state_dict = functools.partial(loader.from_state_dict, SPEC)
state_dict = functools.partial(loader.state_dict, SPEC)
export_diffusers = functools.partial(loader.export_diffusers, SPEC)
convert = functools.partial(loader.convert, SPEC)
save = functools.partial(loader.save, SPEC)
