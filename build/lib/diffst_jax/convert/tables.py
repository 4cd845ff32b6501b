"""Every checkpoint key mapping, as data: rename rules between our parameter paths and the public layouts, and the
tensor layout changes between torch and us.

Our parameter paths are the dot-joined `nnx.state` paths of a model (`encoder.down_blocks.3.conv1.kernel`).
A table is an ordered list of (regex, replacement) rules applied in turn to a path; a layout table maps a path to
the name of the tensor transform between the torch tensor and ours. Tables run in both directions because the
converter enumerates our model's paths and builds the explicit key dictionary from them.
"""

import re
from typing import Callable, NamedTuple

import numpy as np


class Layout(NamedTuple):
  """How a torch tensor becomes ours (`to_ours`) and back (`to_torch`); `torch_shape` maps our shape to torch's."""

  to_ours: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]
  torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


def _transpose_layout(ours_from_torch: tuple[int, ...]) -> Layout:
  inverse = tuple(int(i) for i in np.argsort(ours_from_torch))
  return Layout(
      to_ours=lambda a: np.array(np.transpose(a, ours_from_torch), order="C"),
      to_torch=lambda a: np.array(np.transpose(a, inverse), order="C"),
      torch_shape=lambda shape: tuple(shape[i] for i in inverse),
  )


def _squeezed_layout(trailing_ones: int) -> Layout:
  return Layout(
      to_ours=lambda a: np.array(a).reshape(a.shape[0]),
      to_torch=lambda a: np.array(a).reshape(a.shape + (1,) * trailing_ones),
      torch_shape=lambda shape: tuple(shape) + (1,) * trailing_ones,
  )


LAYOUTS: dict[str, Layout] = {
    "conv3d": _transpose_layout((2, 3, 4, 1, 0)),  # torch (O, I, T, H, W) -> ours (T, H, W, I, O)
    "conv2d": _transpose_layout((2, 3, 1, 0)),  # torch (O, I, H, W) -> ours (H, W, I, O)
    "linear": _transpose_layout((1, 0)),  # torch (O, I) -> ours (I, O)
    "vector": _transpose_layout((0,)),
    "same": Layout(to_ours=np.array, to_torch=np.array, torch_shape=tuple),
    "rms_video": _squeezed_layout(3),  # torch gamma (C, 1, 1, 1) -> ours (C,)
    "rms_image": _squeezed_layout(2),  # torch gamma (C, 1, 1) -> ours (C,)
}

Rules = tuple[tuple[str, str], ...]


def apply_rules(rules: Rules, name: str) -> str:
  for pattern, replacement in rules:
    name = re.sub(pattern, replacement, name)
  return name


def first_match(table: tuple[tuple[str, str], ...], name: str) -> str:
  for pattern, value in table:
    if re.search(pattern, name):
      return value
  raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------------
# Wan2.1 VAE

# Our path -> diffusers `AutoencoderKLWan` key.
VAE_OURS_TO_DIFFUSERS: Rules = (
    (r"\.upsampler\.", ".upsamplers.0."),
    (r"\.resample\.(kernel|bias)$", r".resample.1.\1"),
    (r"\.kernel$", ".weight"),
)

# Our path -> tensor layout (first match wins).
VAE_LAYOUTS: tuple[tuple[str, str], ...] = (
    (r"attentions\.\d+\.norm\.gamma$", "rms_image"),
    (r"\.gamma$", "rms_video"),
    (r"(to_qkv|proj|resample)\.kernel$", "conv2d"),
    (r"\.kernel$", "conv3d"),
    (r"\.bias$", "vector"),
)


def vae_diffusers_to_original(num_res_blocks: int, num_stages: int) -> Rules:
  """diffusers key -> original `Wan2.1_VAE.pth` key, the inverse of diffusers' `convert_wan_to_diffusers.py`.

  The original decoder keeps one flat `upsamples` list: per stage num_res_blocks + 1 residual blocks, then the
  upsampler (none after the last stage).
  """
  per_stage = num_res_blocks + 2
  decoder_blocks = []
  for stage in range(num_stages):
    for j in range(num_res_blocks + 1):
      decoder_blocks.append(
          (rf"^decoder\.up_blocks\.{stage}\.resnets\.{j}\.", f"decoder.upsamples.{stage * per_stage + j}."))
    decoder_blocks.append(
        (rf"^decoder\.up_blocks\.{stage}\.upsamplers\.0\.",
         f"decoder.upsamples.{stage * per_stage + num_res_blocks + 1}."))
  return (
      # inside residual blocks, which always sit at a numbered position
      (r"(\.\d+)\.norm1\.", r"\1.residual.0."),
      (r"(\.\d+)\.conv1\.", r"\1.residual.2."),
      (r"(\.\d+)\.norm2\.", r"\1.residual.3."),
      (r"(\.\d+)\.conv2\.", r"\1.residual.6."),
      (r"(\.\d+)\.conv_shortcut\.", r"\1.shortcut."),
      (r"^quant_conv\.", "conv1."),
      (r"^post_quant_conv\.", "conv2."),
      (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
      (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
      (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
      (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.middle.0."),
      (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1."),
      (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.middle.2."),
      (r"^encoder\.down_blocks\.", "encoder.downsamples."),
      *decoder_blocks,
  )


# ---------------------------------------------------------------------------------------------------------------
# Wan2.1 DiT (our paths with the layer index already inserted: `blocks.{i}.attn1.to_q.kernel`)

# Our path -> diffusers `WanTransformer3DModel` key.
DIT_OURS_TO_DIFFUSERS: Rules = (
    (r"\.to_out\.", ".to_out.0."),
    (r"\.ffn\.proj_in\.", ".ffn.net.0.proj."),
    (r"\.ffn\.proj_out\.", ".ffn.net.2."),
    (r"\.(kernel|scale)$", ".weight"),
)

DIT_LAYOUTS: tuple[tuple[str, str], ...] = (
    (r"^patch_embedding\.kernel$", "conv3d"),
    (r"scale_shift_table$", "same"),
    (r"\.kernel$", "linear"),
    (r"\.(scale|bias)$", "vector"),
)

# diffusers key -> original Wan2.1 key: the inverse of diffusers' public `TRANSFORMER_KEYS_RENAME_DICT`
# (`convert_wan_to_diffusers.py`), including its swap of the block norms (original norm3 = diffusers norm2).
DIT_DIFFUSERS_TO_ORIGINAL: Rules = (
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"\.scale_shift_table$", ".modulation"),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_out\.0\.", ".o."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"\.norm2\.", ".norm3."),
)

# The original release's config.json (Wan2.1 `WanModel`, wan/modules/model.py) -> diffusers `WanTransformer3DModel`.
# WanModel keeps patch_size, qk_norm, cross_attn_norm, text_dim and window_size out of its config.json, so a
# release config is read over WanModel's own defaults; dim and num_heads give num_attention_heads and
# attention_head_dim, qk_norm (a bool) diffusers' norm name.
WAN_MODEL_DEFAULTS: dict[str, object] = {
    "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 16, "dim": 2048, "ffn_dim": 8192,
    "freq_dim": 256, "text_dim": 4096, "out_dim": 16, "num_heads": 16, "num_layers": 32, "window_size": (-1, -1),
    "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
WAN_MODEL_TO_DIFFUSERS: dict[str, str] = {
    "patch_size": "patch_size", "in_dim": "in_channels", "out_dim": "out_channels", "text_dim": "text_dim",
    "freq_dim": "freq_dim", "ffn_dim": "ffn_dim", "num_layers": "num_layers", "cross_attn_norm": "cross_attn_norm",
    "eps": "eps"}
