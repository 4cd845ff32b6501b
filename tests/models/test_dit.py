"""Wan2.1 DiT: parity with diffusers' WanTransformer3DModel (fp32, CPU), sizes, one-step denoise, remat,
attention implementations and input validation."""

import dataclasses
import json
import re

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import PartitionSpec as P
from safetensors.torch import save_file

from diffst_jax.convert import load_dit
from diffst_jax.models.dit import WanDiT, WanDiTConfig, one_step_denoise, wan21_t2v_14b, wan21_t2v_1_3b
from diffst_jax.parallel.plan import ExecutionPlan
from tests import wan_original_layout
from tests.conftest import rbg_rngs

ONE_DEVICE = ExecutionPlan()

TOLERANCE = 1e-4  # max |ours - reference| <= TOLERANCE * max |reference|
TINY_B = dict(num_attention_heads=3, attention_head_dim=24, ffn_dim=40, num_layers=3, text_dim=20, freq_dim=32,
              in_channels=8, out_channels=8, cross_attn_norm=False)
REAL_WIDTH_BLOCK = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=1, text_dim=4096)


def _via_original_shards(reference, config, tmp_path):
  """diffusers state dict -> original Wan2.1 names (public table) in two safetensors shards with an index, and
  config.json with WanModel's fields, as the 14B release folder holds them -> our converter, given the folder."""
  original = wan_original_layout.dit_to_original_layout(reference.state_dict())
  keys = sorted(original)
  weight_map = {}
  for shard, part in enumerate((keys[::2], keys[1::2])):
    name = f"diffusion_pytorch_model-0000{shard + 1}-of-00002.safetensors"
    save_file({k: original[k].contiguous() for k in part}, tmp_path / name)
    weight_map.update({k: name for k in part})
  (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  config = WanDiTConfig(**config)
  (tmp_path / "config.json").write_text(json.dumps({
      "_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v", "text_len": 512,
      "in_dim": config.in_channels, "out_dim": config.out_channels, "dim": config.dim, "ffn_dim": config.ffn_dim,
      "freq_dim": config.freq_dim, "text_dim": config.text_dim, "num_heads": config.num_attention_heads,
      "num_layers": config.num_layers, "window_size": [-1, -1], "qk_norm": config.qk_norm is not None,
      "cross_attn_norm": config.cross_attn_norm,
      "eps": config.eps}))
  torch.save({"encoder.conv1.weight": torch.zeros(1)}, tmp_path / "Wan2.1_VAE.pth")  # the release's other files
  torch.save({"token_embedding.weight": torch.zeros(1)}, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
  return load_dit(tmp_path)


def _via_diffusers_dir(reference, config, tmp_path):
  del config
  reference.save_pretrained(tmp_path / "dit")
  return load_dit(tmp_path / "dit")


@pytest.fixture(scope="module", params=["tiny_original_shards", "tiny_b_diffusers_dir", "real_width_block"])
def dit_pair(request, tmp_path_factory, tiny_config):
  cases = {
      "tiny_original_shards": (dict(tiny_config.dit), _via_original_shards),
      "tiny_b_diffusers_dir": (TINY_B, _via_diffusers_dir),
      "real_width_block": (REAL_WIDTH_BLOCK, _via_diffusers_dir),
  }
  config, route = cases[request.param]
  torch.manual_seed(0)
  reference = diffusers.WanTransformer3DModel(**config).eval()
  return reference, route(reference, config, tmp_path_factory.mktemp(request.param)), request.param


def _inputs(config, seed=0, frames=3, height=4, width=6, context_len=7):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((1, frames, height, width, config.in_channels)).astype(np.float32)
  context = rng.standard_normal((1, context_len, config.text_dim)).astype(np.float32)
  return x, context


def _reference_velocity(reference, x, t, context):
  with torch.no_grad():
    out = reference(torch.from_numpy(x).permute(0, 4, 1, 2, 3), torch.tensor([t]), torch.from_numpy(context))
  return out.sample.numpy().transpose(0, 2, 3, 4, 1)


@pytest.mark.parametrize("t", [400.0, 937.0])
def test_forward_matches_diffusers(dit_pair, t):
  reference, ours, name = dit_pair
  x, context = _inputs(ours.config)  # latent grid T', H', W' = 3, 4, 6: all different
  expected = _reference_velocity(reference, x, t, context)
  got = nnx.jit(lambda m, x, t, c: m(ONE_DEVICE, x, t, c))(ours, jnp.asarray(x), jnp.full((1,), t),
                                                           jnp.asarray(context))
  assert got.shape == expected.shape
  error = float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())
  print(f"[parity] {name} t={t}: max|ours-ref|/max|ref| = {error:.2e}")
  assert error <= TOLERANCE


def test_one_step_denoise_matches_the_reference_velocity(dit_pair):
  reference, ours, _ = dit_pair
  x, context = _inputs(ours.config, seed=1)
  sigma = 0.4
  expected = x - sigma * _reference_velocity(reference, x, 1000 * sigma, context)
  got = one_step_denoise(ONE_DEVICE, ours, jnp.asarray(x), jnp.asarray(context), sigma)
  np.testing.assert_allclose(got, expected, atol=TOLERANCE * np.abs(expected).max())


@pytest.mark.parametrize("make, expected", [(wan21_t2v_1_3b, 1_418_996_800), (wan21_t2v_14b, 14_288_491_584)])
def test_released_sizes(make, expected):
  dit = nnx.eval_shape(lambda: WanDiT(make(), rngs=nnx.Rngs(0)))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(dit, nnx.Param))) == expected


def test_parameters_carry_logical_axes(tiny_config):
  dit = nnx.eval_shape(lambda: WanDiT(WanDiTConfig(**tiny_config.dit), rngs=nnx.Rngs(0)))
  specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(dit, nnx.Param)))
  assert specs["blocks"]["attn1"]["to_q"]["kernel"] == P("layers", "embed", "heads")
  assert specs["blocks"]["ffn"]["proj_out"]["kernel"] == P("layers", "mlp", "embed")
  assert specs["blocks"]["scale_shift_table"] == P("layers", None, None, "embed")
  assert specs["patch_embedding"]["kernel"] == P(None, None, None, None, "embed")


@pytest.fixture(scope="module")
def tiny_dit(tiny_config):
  return WanDiT(WanDiTConfig(**tiny_config.dit), rngs=rbg_rngs(3))


def _with(dit, **changes):
  """A copy of `dit` under a config with `changes` (remat policy, dtypes)."""
  _, state = nnx.split(nnx.clone(dit))
  config = dataclasses.replace(dit.config, **changes)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: WanDiT(config, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, state)


@pytest.mark.parametrize("changes, choices", [(dict(remat_policy="none"), {}), (dict(remat_policy="dots"), {}),
                                              ({}, dict(attention="blockwise", attention_block_size=5))])
def test_remat_and_attention_choices_do_not_change_results(tiny_dit, changes, choices):
  x, context = (jnp.asarray(a) for a in _inputs(tiny_dit.config, seed=2))
  t = jnp.array([400.0])

  def loss(dit, x, plan=ONE_DEVICE):
    return jnp.sum(dit(plan, x, t, context) ** 2)

  base_value, base_grad = jax.value_and_grad(loss, argnums=1)(tiny_dit, x)
  value, grad = jax.value_and_grad(loss, argnums=1)(_with(tiny_dit, **changes), x, ExecutionPlan(**choices))
  np.testing.assert_allclose(value, base_value, rtol=1e-5)
  np.testing.assert_allclose(grad, base_grad, atol=1e-5 * float(jnp.abs(base_grad).max()))


@pytest.mark.parametrize("x_shape, t_shape, context_shape, message", [
    ((1, 3, 4, 6, 8), (1,), (1, 7, 24), "expected latents"),
    ((1, 3, 5, 6, 16), (1,), (1, 7, 24), "multiples of the patch size"),
    ((1, 3, 4, 6, 16), (2,), (1, 7, 24), "timesteps"),
    ((1, 3, 4, 6, 16), (1,), (1, 7, 25), "context"),
])
def test_bad_inputs_raise_one_line_errors(tiny_dit, x_shape, t_shape, context_shape, message):
  with pytest.raises(ValueError, match=re.escape(message)) as info:
    tiny_dit(ONE_DEVICE, jnp.zeros(x_shape), jnp.zeros(t_shape), jnp.zeros(context_shape))
  assert "\n" not in str(info.value)


def test_accelerator_attention_is_rejected_on_cpu_with_a_clear_error(tiny_dit):
  x, context = _inputs(tiny_dit.config)
  with pytest.raises(ValueError, match="needs a gpu backend"):
    tiny_dit(ExecutionPlan(attention="cudnn"), jnp.asarray(x), jnp.array([1.0]), jnp.asarray(context))


def test_bfloat16_policy_stays_close_to_float32(tiny_dit):
  """bf16 parameters and matmuls; the residual stream, norms, modulation and output stay float32."""
  x, context = (jnp.asarray(a) for a in _inputs(tiny_dit.config, seed=4))
  t = jnp.array([400.0])
  bf16 = _with(tiny_dit, param_dtype="bfloat16", dtype="bfloat16")
  nnx.update(bf16, jax.tree.map(lambda p: p.astype(jnp.bfloat16), nnx.state(bf16, nnx.Param)))
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  rounded = _with(tiny_dit)
  nnx.update(rounded, jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32),
                                   nnx.state(rounded, nnx.Param)))
  got, expected = bf16(ONE_DEVICE, x, t, context), rounded(ONE_DEVICE, x, t, context)
  assert got.dtype == jnp.float32
  assert float(jnp.abs(got - expected).max()) < 0.05 * float(jnp.abs(expected).max())
