"""Wan2.1 DiT weights: the original `diffusion_pytorch_model.safetensors` layout (one file or shards, optional
`model.diffusion_model.` prefix) and diffusers `WanTransformer3DModel`, both ways. Per-layer tensors are stacked
into the scanned block layout."""

import functools
import math
import re
from collections.abc import Mapping
from typing import Literal

import numpy as np
from flax import nnx

from diffst_jax.convert import loader, mapping, tables
from diffst_jax.convert.torch_io import CheckpointError
from diffst_jax.models.dit import WanDiT, WanDiTConfig

Layout = Literal["diffusers", "original"]
WAN21_HEAD_DIM = 128  # both released Wan2.1 sizes; head count is not visible in the tensor shapes

# Per layout: keys whose shapes give the config (block 0 stands for every block).
_SHAPE_KEYS = {
    "diffusers": dict(time="condition_embedder.time_embedder.linear_1.weight",
                      text="condition_embedder.text_embedder.linear_1.weight", ffn="blocks.0.ffn.net.0.proj.weight",
                      head="proj_out.weight", cross_norm="blocks.0.norm2.weight"),
    "original": dict(time="time_embedding.0.weight", text="text_embedding.0.weight", ffn="blocks.0.ffn.0.weight",
                     head="head.head.weight", cross_norm="blocks.0.norm3.weight"),
}


def detect_layout(state_dict: Mapping[str, np.ndarray]) -> Layout:
  if "condition_embedder.time_proj.weight" in state_dict:
    return "diffusers"
  if "time_projection.1.weight" in state_dict:
    return "original"
  raise CheckpointError("not a Wan2.1 DiT checkpoint: no 'condition_embedder.time_proj.weight' (diffusers) or "
                        "'time_projection.1.weight' (original Wan2.1) key")


def infer_config(state_dict: Mapping[str, np.ndarray], layout: Layout) -> WanDiTConfig:
  """Reads the DiT size off the tensor shapes (patch_embedding gives the width; heads are width / 128)."""
  keys = _SHAPE_KEYS[layout]
  for key in ("patch_embedding.weight", keys["time"], keys["text"], keys["ffn"], keys["head"]):
    if key not in state_dict:
      raise CheckpointError(f"Wan2.1 DiT checkpoint ({layout} layout) is missing key {key!r}")
  dim, in_channels, *patch = state_dict["patch_embedding.weight"].shape
  if dim % WAN21_HEAD_DIM:
    raise CheckpointError(f"Wan2.1 DiT checkpoint: width {dim} is not a multiple of head_dim {WAN21_HEAD_DIM}; "
                          "pass a WanDiTConfig (or a diffusers directory with config.json)")
  layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
  return WanDiTConfig(
      patch_size=tuple(patch), num_attention_heads=dim // WAN21_HEAD_DIM, attention_head_dim=WAN21_HEAD_DIM,
      in_channels=in_channels, out_channels=state_dict[keys["head"]].shape[0] // math.prod(patch),
      text_dim=state_dict[keys["text"]].shape[1], freq_dim=state_dict[keys["time"]].shape[1],
      ffn_dim=state_dict[keys["ffn"]].shape[0], num_layers=len(layers),
      cross_attn_norm=keys["cross_norm"] in state_dict)


def diffusers_config(config: Mapping) -> Mapping:
  """A DiT directory's config.json as diffusers' fields: the original release's (`WanModel`: dim, num_heads, in_dim,
  ...; tables.WAN_MODEL_TO_DIFFUSERS) is translated, a diffusers one passes through."""
  if config.get("_class_name") != "WanModel" and "num_heads" not in config:
    return config
  fields = {**tables.WAN_MODEL_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
  unknown = sorted(set(fields) - set(tables.WAN_MODEL_DEFAULTS))
  if unknown:
    raise CheckpointError(f"Wan2.1 config.json: unknown WanModel field {unknown[0]!r}")
  if fields["model_type"] != "t2v" or tuple(fields["window_size"]) != (-1, -1):
    raise CheckpointError(f"Wan2.1 config.json: model_type {fields['model_type']!r}, window_size "
                          f"{tuple(fields['window_size'])}; only text-to-video with full attention (t2v, (-1, -1)) is "
                          "supported")
  if fields["dim"] % fields["num_heads"]:
    raise CheckpointError(f"Wan2.1 config.json: dim {fields['dim']} does not divide into {fields['num_heads']} heads")
  return {**{theirs: fields[ours] for ours, theirs in tables.WAN_MODEL_TO_DIFFUSERS.items()},
          "num_attention_heads": fields["num_heads"], "attention_head_dim": fields["dim"] // fields["num_heads"],
          "qk_norm": "rms_norm_across_heads" if fields["qk_norm"] else None}


def key_table(config: WanDiTConfig, layout: Layout) -> dict[str, mapping.Entry]:
  """{source key: Entry} for every DiT parameter (one entry per layer of the stacked blocks)."""
  _, state = mapping.abstract_params(lambda rngs: WanDiT(config, rngs=rngs))

  def source_key(name):
    key = tables.apply_rules(tables.DIT_OURS_TO_DIFFUSERS, name)
    return tables.apply_rules(tables.DIT_DIFFUSERS_TO_ORIGINAL, key) if layout == "original" else key

  return mapping.key_table(state, source_key, lambda name: tables.first_match(tables.DIT_LAYOUTS, name),
                           stacked=("blocks",))


SPEC = loader.ModelSpec("wan21_dit", WanDiTConfig, WanDiT, detect_layout, infer_config, key_table,
                        strip_prefix="model.diffusion_model.", diffusers_config=diffusers_config)

load_dit = functools.partial(loader.load, SPEC)
from_state_dict = functools.partial(loader.from_state_dict, SPEC)
state_dict = functools.partial(loader.state_dict, SPEC)
export_diffusers = functools.partial(loader.export_diffusers, SPEC)
convert = functools.partial(loader.convert, SPEC)
save = functools.partial(loader.save, SPEC)
