"""DiffST end to end on the tiny preset: shapes and padding rules, ablation switches, checkpoints."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.models import diffst


@pytest.fixture(scope="module")
def model(tiny_config):
  return diffst.init(diffst.DiffSTConfig.from_dict(tiny_config.to_dict()))


def _with(model, **changes):
  parts = {k: dataclasses.replace(getattr(model.config, k), **v) for k, v in changes.items() if isinstance(v, dict)}
  top = {k: v for k, v in changes.items() if not isinstance(v, dict)}
  return diffst.with_config(model, dataclasses.replace(model.config, **parts, **top))


# N in {3, 5, 9, 17}, s_t in {2, 4}, s_x in {1, 4}; sizes that need padding in space, even N that needs a frame.
@pytest.mark.parametrize("frames, time_scale, space_scale, size", [
    (3, 2, 4, (10, 14)), (5, 4, 1, (20, 18)), (9, 2, 1, (16, 32)), (17, 4, 4, (6, 5)), (4, 2, 4, (8, 9)),
])
def test_output_shapes(model, frames, time_scale, space_scale, size):
  m = _with(model, cfca={"time_scale": time_scale}, space_scale=space_scale)
  out = jax.eval_shape(lambda x: diffst.upscale(m, x), jax.ShapeDtypeStruct((1, frames, *size, 3), jnp.float32))
  assert out.shape == (1, time_scale * (frames - 1) + 1, space_scale * size[0], space_scale * size[1], 3)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize("space_scale", [1, 2, 4])
@pytest.mark.parametrize("row_devices", [1, 2, 3, 4, 8])
def test_padding_lets_the_vae_rows_split_over_the_row_devices(model, space_scale, row_devices):
  config = dataclasses.replace(model.config, space_scale=space_scale)
  compression = config.vae.spatial_compression

  def fits(rows):
    hr_rows = space_scale * rows
    return hr_rows % 16 == 0 and (hr_rows // compression) % row_devices == 0

  for rows in range(1, 130):
    extra = diffst.padding_for(config, 3, rows, 8, row_devices)[1]
    assert fits(rows + extra) and not any(fits(rows + fewer) for fewer in range(extra)), (rows, extra)


def test_720p_rows_split_over_four_devices():
  # 180 LR rows make 90 latent rows, which do not split over context=4: the VAE would run whole on every device
  # (13.5 GiB per v5e chip for 9 frames, 6.0 GiB with 4 rows of padding; docs/BENCHMARKS.md).
  assert diffst.padding_for(diffst.DiffSTConfig(), 9, 180, 320) == (0, 0, 0)
  assert diffst.padding_for(diffst.DiffSTConfig(), 9, 180, 320, row_devices=4) == (0, 4, 0)


@pytest.mark.slow  # 40 s on 2 cores: a program per variant of the model
def test_ablation_switches_use_the_same_code(model):
  x = jax.random.uniform(jax.random.key(0), (1, 3, 8, 8, 3), minval=-1, maxval=1)
  base = diffst.upscale(model, x)
  assert bool(jnp.all(jnp.abs(base) <= 1))
  # At initialization CFCA is linear blending and VRG is gated off, so switching them off changes nothing.
  np.testing.assert_array_equal(diffst.upscale(_with(model, cfca={"enabled": False}), x), base)
  no_vrg = diffst.without(model, "vrg")  # what evaluate.py's ablation runs
  assert no_vrg.vrg is None and not no_vrg.config.vrg.enabled
  np.testing.assert_allclose(diffst.upscale(no_vrg, x), base, rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match="cannot switch off 'vae'"):
    diffst.without(model, "vae")


def test_rejects_a_single_frame(model):
  with pytest.raises(ValueError, match="at least 2 input frames"):
    diffst.upscale(model, jnp.zeros((1, 1, 8, 8, 3)))


def test_checkpoint_round_trip(model, tmp_path):
  diffst.save(model, tmp_path / "ckpt")
  loaded = diffst.load(tmp_path / "ckpt")
  assert loaded.config == model.config
  x = jax.random.uniform(jax.random.key(1), (1, 3, 8, 8, 3), minval=-1, maxval=1)
  np.testing.assert_array_equal(diffst.upscale(loaded, x), diffst.upscale(model, x))


def test_checkpoint_of_an_older_release_with_conv_implementation_loads(model, tmp_path):
  """Checkpoints written before the convolution choice moved to the run (parallel/plan.py) stored it per part;
  they still load, with the same numbers."""
  diffst.save(model, tmp_path / "ckpt")
  metadata_file = tmp_path / "ckpt" / "model.json"
  metadata = json.loads(metadata_file.read_text())
  for part in ("vae", "dit", "cfca", "vrg"):
    metadata["config"][part]["conv_implementation"] = "gemm"
  metadata_file.write_text(json.dumps(metadata))
  loaded = diffst.load(tmp_path / "ckpt")
  assert loaded.config == model.config
  x = jax.random.uniform(jax.random.key(1), (1, 3, 8, 8, 3), minval=-1, maxval=1)
  np.testing.assert_array_equal(diffst.upscale(loaded, x), diffst.upscale(model, x))


@pytest.mark.slow  # 40 s on 2 cores
def test_weights_stored_in_compute_dtype_give_the_same_upscale(model):
  from flax import nnx

  from diffst_jax.models import layers

  bf16 = _with(model, vae={"dtype": "bfloat16"}, dit={"dtype": "bfloat16"})
  frames = jax.random.uniform(jax.random.key(3), (1, 3, 8, 12, 3), minval=-1, maxval=1)
  expected = diffst.upscale(bf16, frames)
  stored = nnx.clone(bf16)
  layers.store_in_compute_dtype(stored)
  names = {jax.tree_util.keystr(path): leaf.dtype
           for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(stored))[0]}
  assert names["['dit']['blocks']['ffn']['proj_in']['kernel'].value"] == jnp.bfloat16  # stacked DiT blocks
  assert names["['vae']['decoder']['conv_out']['kernel'].value"] == jnp.bfloat16
  # computes in float32:
  assert names["['dit']['condition_embedder']['time_embedder']['linear_1']['kernel'].value"] == jnp.float32
  assert names["['dit']['patch_embedding']['kernel'].value"] == jnp.float32
  assert sum(a.nbytes for a in jax.tree.leaves(nnx.state(stored))) < sum(
      a.nbytes for a in jax.tree.leaves(nnx.state(bf16)))
  np.testing.assert_array_equal(np.asarray(diffst.upscale(stored, frames)), np.asarray(expected))


def test_two_loads_of_a_checkpoint_share_their_compiled_programs(tmp_path, tiny_config):
  """The graph of a loaded model (jit's static argument) is equal across loads, so a second load reuses the programs
  the first compiled instead of tracing them anew."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  path = diffst.save(diffst.init(diffst.DiffSTConfig.from_dict(tiny_config.to_dict())), tmp_path / "model")
  first, second = nnx.split(diffst.load(path))[0], nnx.split(diffst.load(path))[0]
  assert first == second and hash(first) == hash(second)


def test_the_near_identity_preset_starts_as_the_bilinear_linearly_blended_input():
  """configs/tiny.py:near_identity starts training from a VAE set to the identity and a DiT at zero velocity
  (`init.zero_residuals`): the untrained model is the linear blend in time (CFCA's fusion starts at zero), upscaled
  bilinearly, through a VAE that gives it back."""
  from diffst_jax.models.cfca import linear_blend  # pylint: disable=import-outside-toplevel
  from diffst_jax.ops.resize import resize_bilinear  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.plan import ExecutionPlan  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import tasks  # pylint: disable=import-outside-toplevel
  from tests.conftest import load_config  # pylint: disable=import-outside-toplevel

  model = tasks.get("diffst").build(load_config("tiny", "near_identity"))
  plan = ExecutionPlan()
  frames = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 12, 3)).astype(np.float32)
  baseline = resize_bilinear(linear_blend(jnp.asarray(frames), 2), 32, 48)
  through_vae = model.vae.decode(plan, model.vae.encode(plan, baseline))
  upscaled = diffst.upscale(model, frames, plan)
  np.testing.assert_allclose(upscaled, through_vae, atol=1e-5)
  assert float(jnp.abs(upscaled - baseline).max()) < 0.02  # the VAE's identity: vae.IDENTITY_EPSILON per half
  model.dit = diffst.init(model.config, seed=1).dit  # a DiT as initialized without zero residuals changes it
  assert float(jnp.abs(diffst.upscale(model, frames, plan) - through_vae).max()) > 1e-3
