"""The public Wan2.1 VAE key mapping, as an oracle for tests.

`public_original_to_diffusers` transcribes the rules of diffusers' `scripts/convert_wan_to_diffusers.py`
(`convert_vae`), which maps the original `Wan2.1_VAE.pth` names to `AutoencoderKLWan` names; like that script it
assumes 4 stages with 2 residual blocks each. `diffusers_to_original` is the inverse written from the original
Wan2.1 module tree, and is checked against the public rules by `assert_inverse`. Neither uses project code.
"""

import re

_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}
_MIDDLE = {"resnets.0": "middle.0", "attentions.0": "middle.1", "resnets.1": "middle.2"}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2", "encoder.conv_in": "encoder.conv1",
        "decoder.conv_in": "decoder.conv1", "encoder.norm_out": "encoder.head.0", "encoder.conv_out": "encoder.head.2",
        "decoder.norm_out": "decoder.head.0", "decoder.conv_out": "decoder.head.2"}


def public_original_to_diffusers(key: str) -> str:
  """The rules of diffusers' convert_vae, key by key."""
  for part in ("encoder", "decoder"):
    for name, original in _MIDDLE.items():
      for sub, orig_sub in _RESIDUAL.items():
        if name.startswith("resnets") and sub != "conv_shortcut":
          leaf = key.rsplit(".", 1)[-1]
          if key == f"{part}.{original}.{orig_sub}.{leaf}":
            return f"{part}.mid_block.{name}.{sub}.{leaf}"
      if name.startswith("attentions") and key.startswith(f"{part}.{original}."):
        return f"{part}.mid_block.{name}." + key[len(f"{part}.{original}."):]
  for name, original in _TOP.items():
    if key.startswith(original + ".") and key.count(".") == original.count(".") + 1:
      return name + key[len(original):]
  if key.startswith("encoder.downsamples."):
    new = key.replace("encoder.downsamples.", "encoder.down_blocks.")
    for sub, orig_sub in _RESIDUAL.items():
      new = new.replace(f".{orig_sub}.", f".{sub}.")
    return new
  if key.startswith("decoder.upsamples."):
    block = int(key.split(".")[2])
    if "residual" in key:
      stage, resnet = divmod(block, 4)
      for sub, orig_sub in _RESIDUAL.items():
        if f".{orig_sub}." in key:
          return f"decoder.up_blocks.{stage}.resnets.{resnet}.{sub}." + key.rsplit(".", 1)[-1]
    if ".shortcut." in key:
      if block == 4:
        return key.replace(".shortcut.", ".resnets.0.conv_shortcut.").replace("decoder.upsamples.4", "decoder.up_blocks.1")
      return key.replace("decoder.upsamples.", "decoder.up_blocks.").replace(".shortcut.", ".conv_shortcut.")
    if ".resample." in key or ".time_conv." in key:
      upsampler = {3: 0, 7: 1, 11: 2}
      if block in upsampler:
        return key.replace(f"decoder.upsamples.{block}", f"decoder.up_blocks.{upsampler[block]}.upsamplers.0")
  return key


def diffusers_to_original(key: str) -> str:
  """diffusers name -> original Wan2.1 name, for 4 stages of 2 residual blocks."""
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


def _residual_leaf(rest: str) -> str:
  head, _, leaf = rest.partition(".")
  return f"{_RESIDUAL[head]}.{leaf}" if head in _RESIDUAL else rest


def assert_inverse(diffusers_keys) -> None:
  for key in diffusers_keys:
    original = diffusers_to_original(key)
    assert public_original_to_diffusers(original) == key, (key, original)
