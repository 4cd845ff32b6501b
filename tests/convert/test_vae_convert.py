"""VAE conversion: both public layouts, our Orbax checkpoints, bit-exact round trips and loud failures."""

import hashlib
import json
import subprocess
import sys

import diffusers
import jax
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.torch import save_file

from diffst_jax.convert import CheckpointError, load_vae
from diffst_jax.convert import vae as convert_vae
from diffst_jax.models.vae import WanVAE, WanVAEConfig
from tests import wan_original_layout
from tests.conftest import ROOT, rbg_rngs


@pytest.fixture(scope="module")
def vae(tiny_config):
  return WanVAE(WanVAEConfig(**tiny_config.vae), rngs=rbg_rngs(0))


def _params(module):
  return jax.tree.leaves(nnx.state(module, nnx.Param))


def _assert_bit_exact(a, b):
  assert a.config == b.config
  for x, y in zip(_params(a), _params(b), strict=True):
    assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_through_diffusers_is_bit_exact(vae, tmp_path):
  convert_vae.export_diffusers(vae, tmp_path / "diffusers")
  reference = diffusers.AutoencoderKLWan.from_pretrained(tmp_path / "diffusers")  # diffusers accepts the export
  assert reference.config.base_dim == vae.config.base_dim
  _assert_bit_exact(vae, load_vae(tmp_path / "diffusers"))


def test_round_trip_through_original_layout_is_bit_exact(vae):
  original = convert_vae.state_dict(vae, "original")
  public_original = wan_original_layout.to_original_layout(convert_vae.state_dict(vae, "diffusers"))
  assert set(original) == set(public_original)
  _assert_bit_exact(vae, convert_vae.from_state_dict(original))


def test_diffusers_state_dict_loads_strictly_into_diffusers(vae):
  reference = diffusers.AutoencoderKLWan(**{k: list(v) if isinstance(v, tuple) else v
                                            for k, v in vae.config.to_diffusers().items() if not k.startswith("_")})
  state = {k: torch.from_numpy(v) for k, v in convert_vae.state_dict(vae).items()}
  reference.load_state_dict(state, strict=True)


@pytest.mark.parametrize("layout", ["diffusers", "original"])
@pytest.mark.parametrize("corruption", ["renamed", "removed", "reshaped"])
def test_corrupted_checkpoint_names_the_key(vae, layout, corruption):
  state = convert_vae.state_dict(vae, layout)
  key = next(k for k in sorted(state) if k.startswith("decoder.") and state[k].ndim == 5)
  if corruption == "renamed":
    state[key + "_renamed"] = state.pop(key)
    name = key + "_renamed"
  elif corruption == "removed":
    del state[key]
    name = key
  else:
    state[key] = state[key][:, :-1]
    name = key
  with pytest.raises(CheckpointError, match=f"'{name}'") as info:
    convert_vae.from_state_dict(state, vae.config)
  assert "\n" not in str(info.value)


def test_not_a_vae_checkpoint(tmp_path):
  torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pth")
  with pytest.raises(CheckpointError, match="not a Wan2.1 VAE checkpoint"):
    load_vae(tmp_path / "x.pth")


def test_unsafe_pickle_is_refused(tmp_path):
  torch.save({"weights": object()}, tmp_path / "evil.pth")
  with pytest.raises(CheckpointError, match="weights-only"):
    load_vae(tmp_path / "evil.pth")


def _run_cli(*args):
  return subprocess.run([sys.executable, str(ROOT / "convert_torch_weights.py"), *map(str, args)],
                        capture_output=True, text=True, cwd=ROOT, check=False)


def test_cli_converts_original_pth_to_orbax_and_back(vae, tmp_path):
  source = tmp_path / "Wan2.1_VAE.pth"
  torch.save({k: torch.from_numpy(v) for k, v in convert_vae.state_dict(vae, "original").items()}, source)
  result = _run_cli("--vae", source, "--out", tmp_path / "ours")
  assert result.returncode == 0, result.stderr
  metadata = json.loads((tmp_path / "ours" / "model.json").read_text())
  assert metadata["model"] == "wan21_vae"
  assert metadata["source"]["sha256"] == {source.name: hashlib.sha256(source.read_bytes()).hexdigest()}
  _assert_bit_exact(vae, load_vae(tmp_path / "ours"))

  result = _run_cli("--vae", tmp_path / "ours", "--out", tmp_path / "back", "--to", "diffusers")
  assert result.returncode == 0, result.stderr
  _assert_bit_exact(vae, load_vae(tmp_path / "back"))


def test_the_original_release_folder_converts_its_vae_file(vae, tmp_path):
  """Wan2.1-T2V-1.3B/ holds the DiT's config.json (WanModel fields) and safetensors, the umT5 encoder and
  Wan2.1_VAE.pth: --vae FOLDER converts the last, and records its hash alone."""
  release = tmp_path / "Wan2.1-T2V-1.3B"
  release.mkdir()
  public = wan_original_layout.to_original_layout(convert_vae.state_dict(vae, "diffusers"))
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in public.items()}, release / "Wan2.1_VAE.pth")
  (release / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 1536, "num_heads": 12}))
  save_file({"blocks.0.ffn.0.weight": torch.zeros(2, 2)}, release / "diffusion_pytorch_model.safetensors")
  torch.save({"token_embedding.weight": torch.zeros(2, 2)}, release / "models_t5_umt5-xxl-enc-bf16.pth")
  _assert_bit_exact(vae, load_vae(release))
  result = _run_cli("--vae", release, "--out", tmp_path / "ours")
  assert result.returncode == 0, result.stderr
  metadata = json.loads((tmp_path / "ours" / "model.json").read_text())
  assert list(metadata["source"]["sha256"]) == ["Wan2.1_VAE.pth"]
  _assert_bit_exact(vae, load_vae(tmp_path / "ours"))


def test_cli_never_overwrites(vae, tmp_path):
  source = tmp_path / "vae"
  convert_vae.export_diffusers(vae, source)
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  result = _run_cli("--vae", source, "--out", tmp_path / "out")
  assert result.returncode == 2
  assert "not empty" in result.stderr and "Traceback" not in result.stderr
  assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_reports_a_bad_key_in_one_line(vae, tmp_path):
  state = convert_vae.state_dict(vae, "original")
  state["decoder.head.2.bias"] = state["decoder.head.2.bias"][:2]
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "bad.pth")
  result = _run_cli("--vae", tmp_path / "bad.pth", "--out", tmp_path / "out")
  assert result.returncode == 2
  assert "'decoder.head.2.bias'" in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


def test_legacy_torch_format_is_read(vae, tmp_path):
  state = {k: torch.from_numpy(v) for k, v in convert_vae.state_dict(vae, "original").items()}
  torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
  _assert_bit_exact(vae, load_vae(tmp_path / "legacy.pth"))
