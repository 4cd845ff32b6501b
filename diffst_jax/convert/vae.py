"""Wan2.1 VAE weights: from the original `Wan2.1_VAE.pth` layout or diffusers `AutoencoderKLWan`, to our module,
to an Orbax checkpoint, and back to diffusers."""

import dataclasses
import json
import pathlib
from typing import Literal

import jax
import numpy as np
from flax import nnx

from diffst_jax.convert import mapping, tables, torch_io
from diffst_jax.convert.torch_io import CheckpointError
from diffst_jax.io import checkpoint
from diffst_jax.models.vae import WanVAE, WanVAEConfig

MODEL_NAME = "wan21_vae"
Layout = Literal["diffusers", "original"]

# Per layout: (encoder block list, residual marker, conv_in, post-quant conv, decoder conv_out) keys.
_ENCODER_KEYS = {
    "diffusers": ("encoder.down_blocks", "norm1.gamma", "conv1.weight", "encoder.conv_in.weight",
                  "post_quant_conv.weight", "decoder.conv_out.weight"),
    "original": ("encoder.downsamples", "residual.0.gamma", "residual.2.weight", "encoder.conv1.weight",
                 "conv2.weight", "decoder.head.2.weight"),
}


def detect_layout(state_dict: dict[str, np.ndarray]) -> Layout:
  if any(k.startswith("encoder.down_blocks.") for k in state_dict):
    return "diffusers"
  if any(k.startswith("encoder.downsamples.") for k in state_dict):
    return "original"
  raise CheckpointError("not a Wan2.1 VAE checkpoint: no 'encoder.down_blocks.*' (diffusers) or "
                        "'encoder.downsamples.*' (original Wan2.1_VAE.pth) keys")


def infer_config(state_dict: dict[str, np.ndarray], layout: Layout) -> WanVAEConfig:
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
  return WanVAEConfig(
      base_dim=base_dim, decoder_base_dim=None if decoder_dim == base_dim else decoder_dim, z_dim=z_dim,
      dim_mult=tuple(stages), num_res_blocks=res_in_stage, temperal_downsample=tuple(temporal),
      in_channels=state_dict[conv_in].shape[1], out_channels=state_dict[decoder_out].shape[0])


def key_table(config: WanVAEConfig, layout: Layout) -> dict[str, mapping.Entry]:
  """{source key: Entry} for every VAE parameter, in the given torch layout."""
  _, state = mapping.abstract_params(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
  to_original = tables.vae_diffusers_to_original(config.num_res_blocks, len(config.dim_mult))

  def source_key(name):
    key = tables.apply_rules(tables.VAE_OURS_TO_DIFFUSERS, name)
    return tables.apply_rules(to_original, key) if layout == "original" else key

  return mapping.key_table(state, source_key, lambda name: tables.first_match(tables.VAE_LAYOUTS, name))


def from_params(config: WanVAEConfig, params: dict) -> WanVAE:
  """A ready module from a nested pure dict of parameters."""
  graphdef, state = mapping.abstract_params(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
  nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, params))
  return nnx.merge(graphdef, state)


def from_state_dict(state_dict: dict[str, np.ndarray], config: WanVAEConfig | None = None,
                    what: str = "Wan2.1 VAE") -> WanVAE:
  """Our VAE from a torch state dict in either layout (detected); the config is inferred when not given."""
  layout = detect_layout(state_dict)
  config = config or infer_config(state_dict, layout)
  table = key_table(config, layout)
  return from_params(config, mapping.from_torch(state_dict, table, config.param_dtype, f"{what} ({layout} layout)"))


def load_vae(path: str | pathlib.Path, config: WanVAEConfig | None = None) -> WanVAE:
  """A ready `WanVAE` from our Orbax checkpoint, a diffusers directory, or an original/diffusers weight file."""
  path = pathlib.Path(path)
  if checkpoint.is_checkpoint(path):
    metadata = checkpoint.read_metadata(path, MODEL_NAME)
    config = config or WanVAEConfig(**metadata["config"])
    _, state = mapping.abstract_params(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
    return from_params(config, checkpoint.restore(path, nnx.to_pure_dict(state)))
  diffusers_config = torch_io.read_diffusers_config(path) if path.is_dir() else None
  if config is None and diffusers_config is not None:
    config = WanVAEConfig.from_diffusers(diffusers_config)
  return from_state_dict(torch_io.read_state_dict(path), config, what=str(path))


def state_dict(vae: WanVAE, layout: Layout = "diffusers") -> dict[str, np.ndarray]:
  """The torch state dict (numpy arrays) of our VAE in the diffusers or original layout."""
  return mapping.to_torch(nnx.to_pure_dict(nnx.state(vae, nnx.Param)), key_table(vae.config, layout))


def export_diffusers(vae: WanVAE, directory: str | pathlib.Path) -> pathlib.Path:
  """Writes a diffusers `AutoencoderKLWan` directory (config.json + diffusion_pytorch_model.safetensors)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  directory = pathlib.Path(directory)
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory}: the output directory is not empty; choose a new one (nothing was written)")
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(vae.config.to_diffusers(), indent=2) + "\n")
  save_file(state_dict(vae, "diffusers"), str(directory / "diffusion_pytorch_model.safetensors"))
  return directory


def convert(source: str | pathlib.Path, out: str | pathlib.Path) -> pathlib.Path:
  """Converts a torch VAE source into our Orbax checkpoint directory `out` (with config and source sha256)."""
  vae = load_vae(source)
  params = nnx.to_pure_dict(nnx.state(vae, nnx.Param))
  source_info = {"path": str(pathlib.Path(source).absolute()), "sha256": torch_io.source_hashes(source)}
  return checkpoint.save(out, MODEL_NAME, dataclasses.asdict(vae.config), params, source_info)
