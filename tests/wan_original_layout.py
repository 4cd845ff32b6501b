"""diffusers -> original Wan2.1 key names (VAE and DiT), checked against diffusers' public converters.

diffusers ships the public original -> diffusers mapping as `convert_wan_vae_to_diffusers` (the rules of
`scripts/convert_wan_to_diffusers.py`; it assumes 4 stages of 2 residual blocks). `to_original_layout` is the
inverse, written here from the original Wan2.1 module tree without project code, and `to_original_layout` checks
itself: the public converter must map its result back to exactly the diffusers state dict.
"""

import re

from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers

_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}
_MIDDLE = {"resnets.0": "middle.0", "attentions.0": "middle.1", "resnets.1": "middle.2"}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2", "encoder.conv_in": "encoder.conv1",
        "decoder.conv_in": "decoder.conv1", "encoder.norm_out": "encoder.head.0", "encoder.conv_out": "encoder.head.2",
        "decoder.norm_out": "decoder.head.0", "decoder.conv_out": "decoder.head.2"}


def _residual_leaf(rest: str) -> str:
  head, _, leaf = rest.partition(".")
  return f"{_RESIDUAL[head]}.{leaf}" if head in _RESIDUAL else rest


def _original_key(key: str) -> str:
  for name, original in _TOP.items():
    if key.startswith(name + ".") and key.count(".") == name.count(".") + 1:
      return original + key[len(name):]
  m = re.match(r"(encoder|decoder)\.mid_block\.(resnets\.\d|attentions\.0)\.(.*)", key)
  if m:
    part, block, rest = m.groups()
    return f"{part}.{_MIDDLE[block]}.{_residual_leaf(rest)}"
  m = re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", key)
  if m:
    return f"encoder.downsamples.{m.group(1)}.{_residual_leaf(m.group(2))}"
  m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
  if m:
    return f"decoder.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_residual_leaf(m.group(3))}"
  m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key)
  if m:
    return f"decoder.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
  raise KeyError(key)


def to_original_layout(diffusers_state: dict) -> dict:
  """A diffusers AutoencoderKLWan state dict under the original Wan2.1_VAE.pth names."""
  original = {_original_key(k): v for k, v in diffusers_state.items()}
  back = convert_wan_vae_to_diffusers(dict(original))
  assert set(back) == set(diffusers_state), sorted(set(back) ^ set(diffusers_state))[:4]
  assert all(back[k] is diffusers_state[k] for k in back)
  return original


# diffusers -> original DiT names: each public rename (`TRANSFORMER_KEYS_RENAME_DICT`) read backwards.
_DIT_RENAMES = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("proj_out.", "head.head."),
    ("attn1.", "self_attn."),
    ("attn2.", "cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
    (".norm2.", ".norm3."),
)


def _original_dit_key(key: str) -> str:
  if key == "scale_shift_table":
    return "head.modulation"
  if key.endswith(".scale_shift_table"):
    return key[: -len("scale_shift_table")] + "modulation"
  for new, old in _DIT_RENAMES:
    key = key.replace(new, old)
  return key


def dit_to_original_layout(diffusers_state: dict) -> dict:
  """A diffusers WanTransformer3DModel state dict under the original Wan2.1 names, checked against diffusers'
  public `convert_wan_transformer_to_diffusers`."""
  original = {_original_dit_key(k): v for k, v in diffusers_state.items()}
  back = convert_wan_transformer_to_diffusers(dict(original))
  assert set(back) == set(diffusers_state), sorted(set(back) ^ set(diffusers_state))[:4]
  assert all(back[k] is diffusers_state[k] for k in back)
  return original
