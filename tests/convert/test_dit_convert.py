"""DiT conversion: original Wan2.1 and diffusers layouts, stacking into scanned blocks, round trips, failures."""

import json
import subprocess
import sys

import diffusers
import jax
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from flax import nnx
from safetensors.torch import save_file

from diffst_jax.convert import CheckpointError, load_dit
from diffst_jax.convert import dit as convert_dit
from diffst_jax.models.dit import WanDiT, WanDiTConfig
from tests.conftest import ROOT, rbg_rngs

# head_dim 128 as in both released sizes, so the config can be read off the shapes alone.
SHAPE_INFERABLE = dict(num_attention_heads=2, attention_head_dim=128, ffn_dim=64, num_layers=3, text_dim=16,
                       freq_dim=32)


@pytest.fixture(scope="module")
def dit():
  return WanDiT(WanDiTConfig(**SHAPE_INFERABLE), rngs=rbg_rngs(0))


def _assert_bit_exact(a, b):
  assert a.config == b.config
  for x, y in zip(jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param)), strict=True):
    assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_through_diffusers_is_bit_exact(dit, tmp_path):
  convert_dit.export_diffusers(dit, tmp_path / "dit")
  reference = diffusers.WanTransformer3DModel.from_pretrained(tmp_path / "dit")
  assert reference.config.num_layers == 3
  _assert_bit_exact(dit, load_dit(tmp_path / "dit"))


def test_original_layout_is_the_public_one(dit):
  original = convert_dit.state_dict(dit, "original")
  assert len(original) == 15 + 27 * 3  # as the 1.3B checkpoint has 825 = 15 + 27 x 30 tensors
  reference = diffusers.WanTransformer3DModel(**SHAPE_INFERABLE)
  converted = convert_wan_transformer_to_diffusers({k: torch.from_numpy(v) for k, v in original.items()})
  reference.load_state_dict(converted, strict=True)


def test_original_file_with_prefix_infers_config_and_is_bit_exact(dit, tmp_path):
  original = convert_dit.state_dict(dit, "original")
  prefixed = {f"model.diffusion_model.{k}": torch.from_numpy(v) for k, v in original.items()}
  save_file(prefixed, tmp_path / "dit.safetensors")
  _assert_bit_exact(dit, load_dit(tmp_path / "dit.safetensors"))


def test_bfloat16_source_converts_to_the_config_dtype(dit, tmp_path):
  original = convert_dit.state_dict(dit, "original")
  save_file({k: torch.from_numpy(v).bfloat16() for k, v in original.items()}, tmp_path / "dit.safetensors")
  loaded = load_dit(tmp_path / "dit.safetensors")
  expected = torch.from_numpy(original["blocks.2.ffn.0.weight"]).bfloat16().float().numpy().T
  np.testing.assert_array_equal(np.asarray(loaded.blocks.ffn.proj_in.kernel[...][2]), expected)


@pytest.mark.parametrize("layout", ["diffusers", "original"])
@pytest.mark.parametrize("corruption", ["renamed", "removed", "reshaped"])
def test_corrupted_checkpoint_names_the_key(dit, layout, corruption):
  state = convert_dit.state_dict(dit, layout)
  key = next(k for k in sorted(state) if k.startswith("blocks.1.") and state[k].ndim == 2)
  name = key
  if corruption == "renamed":
    name = key.replace("blocks.1.", "blocks.1.extra_")
    state[name] = state.pop(key)
  elif corruption == "removed":
    del state[key]
  else:
    state[key] = state[key][:-1]
  with pytest.raises(CheckpointError, match=f"'{name}'") as info:
    convert_dit.from_state_dict(state, dit.config)
  assert "\n" not in str(info.value)


def test_cli_converts_and_exports(dit, tmp_path):
  source = tmp_path / "diffusion_pytorch_model.safetensors"
  save_file({k: torch.from_numpy(v) for k, v in convert_dit.state_dict(dit, "original").items()}, source)
  run = lambda *a: subprocess.run([sys.executable, str(ROOT / "convert_torch_weights.py"), *map(str, a)],  # noqa: E731
                                  capture_output=True, text=True, cwd=ROOT, check=False)
  result = run("--dit", source, "--out", tmp_path / "ours")
  assert result.returncode == 0, result.stderr
  _assert_bit_exact(dit, load_dit(tmp_path / "ours"))
  result = run("--dit", tmp_path / "ours", "--out", tmp_path / "back", "--to", "diffusers")
  assert result.returncode == 0, result.stderr
  _assert_bit_exact(dit, load_dit(tmp_path / "back"))
  result = run("--dit", tmp_path / "ours", "--out", tmp_path / "back", "--to", "diffusers")
  assert result.returncode == 2 and "not empty" in result.stderr


def test_a_vae_is_not_a_dit(tmp_path):
  save_file({"encoder.conv1.weight": torch.zeros(1)}, tmp_path / "x.safetensors")
  with pytest.raises(CheckpointError, match="not a Wan2.1 DiT checkpoint"):
    load_dit(tmp_path / "x.safetensors")


def test_the_original_release_directory_converts_with_its_head_count(tmp_path):
  """A release folder as Wan-AI publishes it: config.json with WanModel's fields (here dim 96 in 3 heads of 32,
  which the weights alone cannot tell) and diffusion_pytorch_model.safetensors in the original layout."""
  dit = WanDiT(WanDiTConfig(num_attention_heads=3, attention_head_dim=32, ffn_dim=64, num_layers=2, text_dim=16,
                            freq_dim=32), rngs=rbg_rngs(1))
  release = tmp_path / "Wan2.1-T2V-tiny"
  release.mkdir()
  save_file({k: torch.from_numpy(v) for k, v in convert_dit.state_dict(dit, "original").items()},
            release / "diffusion_pytorch_model.safetensors")
  config = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 96, "eps": 1e-06, "ffn_dim": 64,
            "freq_dim": 32, "in_dim": 16, "model_type": "t2v", "num_heads": 3, "num_layers": 2, "out_dim": 16,
            "text_len": 512, "text_dim": 16}
  (release / "config.json").write_text(json.dumps(config))
  _assert_bit_exact(dit, load_dit(release))
  (release / "config.json").write_text(json.dumps({**config, "model_type": "i2v"}))
  with pytest.raises(CheckpointError, match="only text-to-video"):
    load_dit(release)
