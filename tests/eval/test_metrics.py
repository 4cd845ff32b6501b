"""PSNR, SSIM and LPIPS against pyiqa's calibration scores; tOF and tLP on a real clip with a synthetic temporal
perturbation; Horn-Schunck flow on a known shift."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from diffst_jax.eval import metrics
from diffst_jax.io import video

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"
# pyiqa's ResultsCalibra/calibration_summary.csv (chaofengc/IQA-PyTorch), rows psnr(ours), ssim(ours), lpips(ours),
# columns I03.bmp and I04.bmp; the images are tests/assets/pyiqa_calibration (see its README).
EXPECTED = {"psnr": (21.1136, 20.9872), "ssim": (0.6997, 0.9978), "lpips": (0.7237, 0.2572)}


@pytest.fixture(scope="module")
def calibration_pairs():
  def read(kind: str, pair: str) -> np.ndarray:
    return np.asarray(Image.open(ASSETS / "pyiqa_calibration" / f"{kind}_{pair}.png").convert("RGB"))

  return [(read("distorted", pair), read("reference", pair)) for pair in ("I03", "I04")]


@pytest.mark.parametrize("name", ["psnr", "ssim"])
def test_frame_metrics_match_the_calibration(calibration_pairs, name):
  scores = [getattr(metrics, name)(distorted, reference) for distorted, reference in calibration_pairs]
  np.testing.assert_allclose(scores, EXPECTED[name], rtol=0, atol=1e-3)


def test_lpips_on_uint8_frames_matches_the_calibration(calibration_pairs):
  distorted, reference = map(np.stack, zip(*calibration_pairs))
  np.testing.assert_allclose(metrics.Lpips()(distorted, reference), EXPECTED["lpips"], rtol=0, atol=1e-3)


def test_border_crop_and_luminance_change_what_is_scored():
  rng = np.random.default_rng(0)
  target = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
  output = target.copy()
  output[:2] = 255 - output[:2]  # errors only in the top two rows
  assert metrics.psnr(output, target) < 30 and metrics.psnr(output, target, crop_border=2) == float("inf")
  assert metrics.ssim(output, target) < 1 and metrics.ssim(output, target, crop_border=2) == pytest.approx(1.0)
  grey_shift = np.clip(target.astype(int) + [2, -1, 0], 0, 255).astype(np.uint8)  # Y almost unchanged
  assert metrics.psnr(grey_shift, target, y_channel=True) > metrics.psnr(grey_shift, target) + 3


def test_horn_schunck_finds_a_one_pixel_shift():
  y, x = np.mgrid[0:48, 0:64]
  pattern = lambda shift: 128 + 60 * np.sin((x - shift) / 5.0) * np.cos(y / 7.0)  # noqa: E731
  flow = metrics.horn_schunck_flow(pattern(0), pattern(1))
  interior = flow[8:-8, 8:-8]
  assert np.median(interior[..., 0]) == pytest.approx(1.0, abs=0.15) and abs(np.median(interior[..., 1])) < 0.1


@pytest.fixture(scope="module")
def real_clip():
  frames, _ = video.read_video(ASSETS / "carphone_distorted_9.mp4")
  return frames[:5]


def _jitter(clip: np.ndarray, pixels: int) -> np.ndarray:
  """Every other frame shifted sideways: the same frames, wrong motion."""
  out = clip.copy()
  out[1::2] = np.roll(clip[1::2], pixels, axis=2)
  return out


def test_tof_is_zero_for_the_ground_truth_and_grows_with_temporal_jitter(real_clip):
  assert metrics.tof(real_clip, real_clip) == 0.0
  small, large = metrics.tof(_jitter(real_clip, 1), real_clip), metrics.tof(_jitter(real_clip, 3), real_clip)
  assert 0.1 < small < large


def test_tlp_is_zero_for_the_ground_truth_and_grows_with_temporal_jitter(real_clip):
  lpips = metrics.Lpips()
  assert metrics.tlp(real_clip, real_clip, lpips) == pytest.approx(0.0, abs=1e-6)
  assert 0 < metrics.tlp(_jitter(real_clip, 1), real_clip, lpips) < metrics.tlp(_jitter(real_clip, 3), real_clip, lpips)


def test_colour_offset_is_the_largest_channel_shift_of_the_mean():
  target = np.full((2, 4, 4, 3), 100, np.uint8)
  output = target.copy()
  output[0, :2, :, 1] = 140  # a quarter of the green pixels up 40 levels: the mean up 10
  output[..., 2] = 97  # blue down 3 everywhere
  assert metrics.colour_offset(output, target) == pytest.approx(10.0)
  assert metrics.colour_offset(target, target) == 0.0
  with pytest.raises(ValueError, match="colour_offset: expected two RGB arrays of one shape"):
    metrics.colour_offset(output[:1], target)


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="ssim: frames of different shapes"):
    metrics.ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))
  with pytest.raises(ValueError, match=r"tof: expected two RGB clips \(T >= 2"):
    metrics.tof(np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 16, 16, 3), np.uint8))
