"""Wan2.1 VAE: parity with diffusers' AutoencoderKLWan (fp32, CPU), causality, gradients and input validation."""

import dataclasses
import functools
import re

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from diffst_jax.convert import load_vae
from diffst_jax.convert import vae as convert_vae
from diffst_jax.models import vae as vae_lib
from diffst_jax.models.vae import WanVAE, WanVAEConfig, wan21_vae_config
from diffst_jax.parallel.plan import ExecutionPlan
from tests import wan_original_layout
from tests.conftest import rbg_rngs

ONE_DEVICE = ExecutionPlan()

# 1 and 9 frames cover the first chunk alone and the causal caches carried between chunks; 5 and 13 (one and three
# chunks after the first) run with the slow set, and so does Wan2.1's own VAE at 9 frames (by default it runs 1
# frame, its widths; the tiny preset's VAE, tiny_original_layout, has its structure at a twelfth of the widths and
# runs 9 frames).
PAIRS = ("tiny_original_layout", "tiny_b_diffusers_dir", "three_stages_diffusers_dir", "patched_2x_time_state_dict",
         "patched_no_time_diffusers_dir", "wan21_state_dict")
PAIRS_AND_FRAMES = [pytest.param(pair, frames, marks=pytest.mark.slow) if frames in (5, 13) or (
    pair, frames) == ("wan21_state_dict", 9) else (pair, frames) for pair in PAIRS for frames in (1, 5, 9, 13)]
TOLERANCE = 1e-4  # max |ours - reference| <= TOLERANCE * max |reference|

# A second tiny config that differs in every structural field from the tiny preset.
TINY_B = dict(base_dim=12, decoder_base_dim=16, z_dim=4, dim_mult=[1, 2, 2, 3], num_res_blocks=1,
              temperal_downsample=[True, False, True], latents_mean=[0.3, -0.2, 0.1, 0.5],
              latents_std=[1.5, 0.7, 2.0, 1.1])
# Three stages: 4x in space instead of Wan2.1's 8x (diffusers' scale_factor_spatial says so too).
THREE_STAGES = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[True, True],
                    scale_factor_spatial=4)
# Wan2.2's patch_size (2x2 pixels folded into 12 channels) with 2x in time, read off the tensors alone; and 4x4
# patches with no compression in time or by stages (48 channels in, 48 latent channels), from a diffusers folder.
PATCHED_2X_TIME = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, False],
                       patch_size=2, in_channels=12, out_channels=12)
PATCHED_NO_TIME = dict(base_dim=8, z_dim=48, dim_mult=[1], num_res_blocks=1, temperal_downsample=[], patch_size=4,
                       in_channels=48, out_channels=48, latents_mean=np.linspace(-0.5, 0.5, 48).tolist(),
                       latents_std=np.linspace(0.8, 1.6, 48).tolist(), scale_factor_spatial=4,
                       scale_factor_temporal=1)


def _reference(kwargs: dict, seed: int):
  torch.manual_seed(seed)
  return diffusers.AutoencoderKLWan(**kwargs).eval()


def _via_original_layout(reference, tmp_path):
  """diffusers state dict -> original Wan2.1 names (public table) -> a .pth file -> our converter."""
  original = wan_original_layout.to_original_layout(reference.state_dict())
  path = tmp_path / "Wan2.1_VAE.pth"
  torch.save(original, path)
  return load_vae(path)


def _via_diffusers_dir(reference, tmp_path):
  reference.save_pretrained(tmp_path / "vae")
  return load_vae(tmp_path / "vae")


def _via_state_dict(reference, tmp_path):
  del tmp_path
  return convert_vae.from_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})


@pytest.fixture(scope="module")
def vae_pairs(tmp_path_factory, tiny_config):
  """A name in `PAIRS` -> (diffusers reference, our converted VAE, name), each made on first use."""
  cases = {
      "tiny_original_layout": (dict(tiny_config.vae), _via_original_layout),
      "tiny_b_diffusers_dir": (TINY_B, _via_diffusers_dir),
      "three_stages_diffusers_dir": (THREE_STAGES, _via_diffusers_dir),
      "patched_2x_time_state_dict": (PATCHED_2X_TIME, _via_state_dict),
      "patched_no_time_diffusers_dir": (PATCHED_NO_TIME, _via_diffusers_dir),
      "wan21_state_dict": ({}, _via_state_dict),
  }
  made = {}

  def pair(name):
    if name not in made:
      kwargs, route = cases[name]
      reference = _reference({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}, seed=0)
      made[name] = reference, route(reference, tmp_path_factory.mktemp(name)), name
    return made[name]

  return pair


@pytest.fixture
def vae_pair(request, vae_pairs):
  """(diffusers reference, our converted VAE, name) for the name in `PAIRS` a test is parametrized with."""
  return vae_pairs(request.param)


def _relative_error(ours, reference):
  return float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())


def _stats(reference):
  config = reference.config
  return (np.asarray(config.latents_mean, np.float32), np.asarray(config.latents_std, np.float32))


@pytest.mark.parametrize("vae_pair, frames", PAIRS_AND_FRAMES, indirect=["vae_pair"])
def test_encode_matches_diffusers(vae_pair, frames):
  reference, ours, name = vae_pair
  x = np.random.default_rng(frames).uniform(-1, 1, (1, frames, 16, 24, 3)).astype(np.float32)
  with torch.no_grad():
    mean = reference.encode(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).latent_dist.mean.numpy()
  latents_mean, latents_std = _stats(reference)
  expected = (mean.transpose(0, 2, 3, 4, 1) - latents_mean) / latents_std
  got = ours.encode(ONE_DEVICE, jnp.asarray(x))
  c, s = ours.config.spatial_compression, ours.config.temporal_compression
  assert got.shape == (1, 1 + (frames - 1) // s, 16 // c, 24 // c, ours.config.z_dim)
  error = _relative_error(got, expected)
  print(f"[parity] {name} encode T={frames}: max|ours-ref|/max|ref| = {error:.2e}")
  assert error <= TOLERANCE


@pytest.mark.parametrize("vae_pair, frames", PAIRS_AND_FRAMES, indirect=["vae_pair"])
def test_decode_matches_diffusers(vae_pair, frames):
  reference, ours, name = vae_pair
  latent_frames = 1 + (frames - 1) // ours.config.temporal_compression
  c = ours.config.spatial_compression
  z = np.random.default_rng(100 + frames).standard_normal((1, latent_frames, 16 // c, 24 // c, ours.config.z_dim))
  z = z.astype(np.float32)
  latents_mean, latents_std = _stats(reference)
  with torch.no_grad():
    raw = torch.from_numpy(z * latents_std + latents_mean).permute(0, 4, 1, 2, 3)
    expected = reference.decode(raw).sample.numpy().transpose(0, 2, 3, 4, 1)
  assert np.mean(np.abs(expected) < 1) > 0.5, "reference output is mostly clamped; the comparison would be weak"
  got = ours.decode(ONE_DEVICE, jnp.asarray(z))
  assert got.shape == (1, frames, 16, 24, 3)
  error = _relative_error(got, expected)
  print(f"[parity] {name} decode T={frames}: max|ours-ref|/max|ref| = {error:.2e}")
  assert error <= TOLERANCE


def test_real_config_size():
  vae = nnx.eval_shape(lambda: WanVAE(wan21_vae_config(), rngs=nnx.Rngs(0)))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(vae, nnx.Param)))
  assert count == 126_892_531  # diffusers' AutoencoderKLWan() has the same count (checked in the parity case)


@pytest.fixture(scope="module")
def tiny_vae(tiny_config):
  """The tiny VAE with random weights: diffusers' initialization, converted (torch draws them in a fraction of a
  second; our initializers would compile a sampler for each parameter shape, ~10 s)."""
  reference = _reference({k: list(v) if isinstance(v, tuple) else v for k, v in dict(tiny_config.vae).items()}, seed=1)
  return convert_vae.from_state_dict({k: v.numpy() for k, v in reference.state_dict().items()},
                                     WanVAEConfig(**tiny_config.vae))


# The causality tests' clips have the parity tests' frames and sizes: the tiny VAE's programs at those shapes are
# compiled once for both (the same model structure, its weights an argument).
def test_encoder_is_causal(tiny_vae):
  """Nine frames: the first chunk alone, then two chunks with the causal caches carried between them."""
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 9, 16, 24, 3)), jnp.float32)
  whole = tiny_vae.encode(ONE_DEVICE, x)
  for frames in (1, 5):
    prefix = tiny_vae.encode(ONE_DEVICE, x[:, :frames])
    np.testing.assert_allclose(prefix, whole[:, :prefix.shape[1]], rtol=0, atol=1e-5 * float(jnp.abs(whole).max()))
  changed_tail = tiny_vae.encode(ONE_DEVICE, x.at[:, 5:].set(0.0))
  np.testing.assert_array_equal(changed_tail[:, :2] == whole[:, :2], True)
  assert not np.allclose(changed_tail[:, 2], whole[:, 2])


def test_decoder_is_causal(tiny_vae):
  z = jnp.asarray(np.random.default_rng(1).standard_normal((1, 3, 2, 3, 16)), jnp.float32)
  whole = tiny_vae.decode(ONE_DEVICE, z)
  for latent_frames in (1, 2):
    prefix = tiny_vae.decode(ONE_DEVICE, z[:, :latent_frames])
    np.testing.assert_allclose(prefix, whole[:, :prefix.shape[1]], rtol=0, atol=1e-5)


@pytest.mark.slow  # 40 s on 2 cores; by default test_layers checks the convolutions' gradients against XLA's
def test_gradients_match_finite_differences(tiny_config):
  with jax.enable_x64(True):
    # One residual block per stage (every layer kind still present): half the program to compile in float64.
    config = WanVAEConfig(**dict(tiny_config.vae, num_res_blocks=1), dtype="float64", param_dtype="float64")
    graphdef, params, rest = nnx.split(WanVAE(config, rngs=rbg_rngs(2)), nnx.Param, ...)
    x = 0.5 * jax.random.uniform(jax.random.key(3), (1, 5, 16, 16, 3), jnp.float64, minval=-1, maxval=1)

    # Without LLVM's optimizations the float64 programs compile ~3x faster; they run only a few times.
    jit = functools.partial(jax.jit, compiler_options=dict(xla_backend_optimization_level=0,
                                                           xla_llvm_disable_expensive_passes=True))

    def reconstruct(params, x):
      model = nnx.merge(graphdef, params, rest)
      return model.decode(ONE_DEVICE, model.encode(ONE_DEVICE, x))

    weights = jax.random.normal(jax.random.key(4), x.shape, jnp.float64)
    # Outputs near the [-1, 1] clamp are left out: finite differences across the kink would not agree.
    weights = jnp.where(jnp.abs(jit(reconstruct)(params, x)) < 0.95, weights, 0.0)
    weighted_sum = lambda params, x: jnp.sum(reconstruct(params, x) * weights)  # noqa: E731
    grad_params, grad_x = jit(jax.grad(weighted_sum, argnums=(0, 1)))(params, x)
    loss = jit(weighted_sum)
    assert bool(jnp.all(jnp.isfinite(grad_x))) and float(jnp.abs(grad_x).max()) > 0
    for seed in range(3):
      direction = jax.random.normal(jax.random.key(10 + seed), x.shape, jnp.float64)
      eps = 1e-6  # central differences converge as eps^2 here: 1e-5 leaves ~1e-5 relative truncation error
      numeric = (loss(params, x + eps * direction) - loss(params, x - eps * direction)) / (2 * eps)
      np.testing.assert_allclose(jnp.sum(grad_x * direction), numeric, rtol=1e-5)

    # With respect to every parameter too (what training needs), along one random direction in parameter space.
    # (numpy draws it: jax.random would compile a sampler for each of the 27 parameter shapes, ~35 s in float64)
    rng = np.random.default_rng(20)
    direction = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape)), params)
    shifted = jax.jit(lambda step: jax.tree.map(lambda p, d: p + step * d, params, direction))
    numeric = (loss(shifted(1e-6), x) - loss(shifted(-1e-6), x)) / 2e-6
    analytic = jax.jit(lambda g, d: sum(jax.tree.leaves(jax.tree.map(jnp.vdot, g, d))))(grad_params, direction)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


@pytest.mark.slow  # 30 s on 2 cores
def test_grouped_remat_scan_matches_plain_gradients(tiny_config):
  """Nine latent frames: the first chunk, then 8 in two checkpointed groups of 4 (the grouping a 33-frame clip
  gets), against the same decoder without remat."""
  z = jax.random.normal(jax.random.key(1), (1, 9, 8, 8, tiny_config.vae["z_dim"]))
  grads = []
  for remat in (True, False):
    vae = WanVAE(WanVAEConfig(**dict(tiny_config.vae, num_res_blocks=1), remat=remat), rngs=rbg_rngs(2))
    grads.append(jax.jit(jax.grad(lambda z, vae=vae: jnp.sum(vae.decode(ONE_DEVICE, z) ** 2)))(z))
  np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-5 * float(jnp.abs(grads[1]).max()))


@pytest.mark.parametrize("chunks, groups", [(1, 1), (4, 1), (6, 2), (7, 1), (8, 2), (9, 3), (16, 4)])
def test_checkpoint_groups_minimize_kept_caches(chunks, groups):
  assert vae_lib._checkpoint_groups(chunks) == groups  # pylint: disable=protected-access


@pytest.mark.slow  # 1 min; the float64 finite-difference test above checks the gradients themselves
def test_gradients_are_finite_in_float32_with_remat(tiny_vae):
  x = jax.random.uniform(jax.random.key(5), (1, 9, 16, 16, 3), minval=-1, maxval=1)
  grad = jax.grad(lambda x: jnp.mean(tiny_vae.decode(ONE_DEVICE, tiny_vae.encode(ONE_DEVICE, x)) ** 2))(x)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


@pytest.mark.parametrize("shape, dtype, bad_value, message", [
    ((1, 6, 16, 16, 3), jnp.float32, None, "4k+1"),
    ((1, 5, 20, 16, 3), jnp.float32, None, "multiples of 8"),
    ((1, 5, 16, 16, 4), jnp.float32, None, "3 channels"),
    ((5, 16, 16, 3), jnp.float32, None, "5-D"),
    ((1, 5, 16, 16, 3), jnp.int32, None, "float"),
    ((1, 5, 16, 16, 3), jnp.float32, np.nan, "NaN or Inf"),
    ((1, 5, 16, 16, 3), jnp.float32, np.inf, "NaN or Inf"),
])
def test_encode_rejects_bad_input(tiny_vae, shape, dtype, bad_value, message):
  x = jnp.zeros(shape, dtype)
  if bad_value is not None:
    x = x.at[0, 2, 3, 4, 1].set(bad_value)
  with pytest.raises(ValueError, match=re.escape(message)) as info:
    tiny_vae.encode(ONE_DEVICE, x)
  assert "\n" not in str(info.value)


def test_decode_rejects_wrong_latent_channels(tiny_vae):
  with pytest.raises(ValueError, match="16 channels"):
    tiny_vae.decode(ONE_DEVICE, jnp.zeros((1, 2, 2, 2, 4)))


def test_zero_residual_branches_make_every_residual_block_and_attention_pass_its_input(tiny_config):
  """`init.zero_residuals` of a VAE trained from scratch (configs/tiny.py:near_identity): what remains at the start
  is the convolutions in and out."""
  vae = WanVAE(WanVAEConfig(**dict(tiny_config.vae)), rngs=rbg_rngs(0))
  vae_lib.zero_residual_branches(vae)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 3, 4, 4, 32)), jnp.float32)
  blocks = [vae.encoder.mid_block, vae.decoder.mid_block]  # the widest blocks: residual, attention, residual
  assert all(block.resnets[0].conv_shortcut is None for block in blocks)
  for block in blocks:
    y, _ = block(ONE_DEVICE, x, None)
    np.testing.assert_array_equal(y, x)
  changed = [module for _, module in nnx.iter_graph(vae) if isinstance(module, vae_lib.ResidualBlock)
             and module.conv_shortcut is None]
  assert len(changed) > 4 and all(not np.any(module.conv2.kernel[...]) for module in changed)


def test_identity_weights_reconstruct_a_scene_never_seen_and_latents_are_diffusers_folded_pixels():
  """`set_identity` (init.vae = "identity", configs/tiny.py:near_identity): the latent (after latents_mean and
  latents_std) is the clip folded as diffusers' own `patchify` folds it (an oracle we did not write), and the decoder
  gives the clip back: a held-out scene's crop (tests/assets/heldout_dune_9) well over 45 dB."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from diffusers.models.autoencoders import autoencoder_kl_wan  # pylint: disable=import-outside-toplevel

  from tests.conftest import ROOT  # pylint: disable=import-outside-toplevel

  config = WanVAEConfig.from_diffusers(dict(PATCHED_NO_TIME, base_dim=49, num_res_blocks=0), remat=False)
  vae = WanVAE(config, rngs=rbg_rngs(0))
  vae_lib.set_identity(vae)
  frames = sorted((ROOT / "tests" / "assets" / "heldout_dune_9").glob("*.png"))
  clip = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in frames])[None]
  x = clip.astype(np.float32) / 127.5 - 1.0
  folded = autoencoder_kl_wan.patchify(torch.from_numpy(x).permute(0, 4, 1, 2, 3), patch_size=4).numpy()
  latent = vae.encode(ONE_DEVICE, jnp.asarray(x))
  assert float(jnp.abs(latent - folded.transpose(0, 2, 3, 4, 1)).max()) < 0.01  # vae.IDENTITY_EPSILON / 2
  decoded = np.clip(np.round((np.asarray(vae.decode(ONE_DEVICE, latent)) + 1.0) * 127.5), 0, 255)
  psnr = 10 * np.log10(255.0**2 / np.mean(np.square(decoded - clip)))
  assert psnr > 45, psnr
  with pytest.raises(ValueError, match="must exceed z_dim"):
    vae_lib.set_identity(WanVAE(dataclasses.replace(config, base_dim=48), rngs=rbg_rngs(0)))
