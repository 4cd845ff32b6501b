"""DESIGN §8 degradations: deterministic per seed, shapes and value ranges kept, the right frames dropped."""

import concurrent.futures
import dataclasses
import itertools

import numpy as np
import pytest
import scipy.ndimage

from diffst_jax.data import degrade
from diffst_jax.io import video
from diffst_jax.ops import resize
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def clip():
  """8 real frames (carphone, distorted), 48x64."""
  frames = list(itertools.islice(video.iter_frames(ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"), 8))
  return np.stack(frames)


def test_kernels_are_normalized_and_symmetric():
  for kernel in (degrade.gaussian_kernel(11, 1.5, 0.7, 0.3), degrade.gaussian_kernel(9, 2.0, 2.0, 0, power=0.5),
                 degrade.gaussian_kernel(13, 1.2, 2.2, 1.0, power=3.0, plateau=True), degrade.sinc_kernel(15, 1.2)):
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)  # point-symmetric


@pytest.mark.parametrize("kernel", [degrade.gaussian_kernel(11, 1.5, 0.7, 0.3), degrade.sinc_kernel(21, 1.2)])
@pytest.mark.parametrize("border, scipy_mode", [("reflect", "mirror"), ("symmetric", "reflect")])
def test_blur_matches_direct_correlation_with_reflected_borders(clip, kernel, border, scipy_mode):
  """"reflect" (OpenCV's default border, reflect-101: scipy's "mirror") or "symmetric" (the edge repeated)."""
  x = clip.astype(np.float32)
  expected = scipy.ndimage.correlate(x, kernel[None, :, :, None], mode=scipy_mode)
  np.testing.assert_allclose(degrade.blur(x, kernel, border), expected, atol=2e-3)


@pytest.mark.parametrize("name, step", [
    ("blur", lambda x, rng: degrade.blur(x, degrade.random_kernel(rng, (0.2, 3.0)))),
    ("resize", lambda x, rng: degrade.resize(x, 24, 32, degrade._RESAMPLE[rng.integers(3)])),  # noqa: SLF001
    ("noise", lambda x, rng: np.clip(degrade.add_noise(x, rng, degrade.FIRST), 0, 255)),
    ("jpeg", lambda x, rng: degrade.jpeg(x, rng.integers(30, 96))),
    ("opencv resize",
     lambda x, rng: degrade.resize_opencv(x, 24, 32, degrade._OPENCV_RESIZE[rng.integers(3)])),  # noqa: SLF001
    ("opencv jpeg", lambda x, rng: degrade.jpeg_opencv(x, degrade.drifting_qualities(rng, len(x), (30, 95)))),
    ("video compression", lambda x, rng: degrade.compress_video(x, rng.choice(degrade.CODECS), rng.uniform(1e4, 1e5))),
])
def test_each_degradation_is_deterministic_and_keeps_ranges(clip, name, step):
  x = clip.astype(np.float32)
  first, second = step(x, np.random.default_rng(7)), step(x, np.random.default_rng(7))
  np.testing.assert_array_equal(first, second)
  assert first.shape[0] == clip.shape[0] and first.shape[-1] == 3
  rounding = 1e-3 if name == "blur" else 0  # FFT rounding around exact 0s and 255s
  assert float(first.min()) >= -rounding and float(first.max()) <= 255 + rounding, name
  assert not np.array_equal(first, x) or name.endswith("resize")


@pytest.mark.parametrize("codec", degrade.CODECS)
def test_video_compression_of_tiny_clips_is_reproducible_under_concurrency(codec):
  """The training crops are tiny (16 px LR at 64 px HR) and grain degrades several at once: x264's assembly once
  gave other bits for a quarter of such encodings."""
  rng = np.random.default_rng(0)
  clips = [rng.integers(0, 256, (5, size // 8, size // 8, 3)).repeat(8, 1).repeat(8, 2).astype(np.float32)
           for size in (32, 64) for _ in range(4)]
  reference = [degrade.compress_video(clip, codec, 1e4) for clip in clips]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    for _ in range(4):
      again = pool.map(lambda clip: degrade.compress_video(clip, codec, 1e4), clips)
      assert all(np.array_equal(a, b) for a, b in zip(reference, again))


@pytest.mark.parametrize("space_scale, time_scale", [(4, 2), (4, 4), (2, 2)])
def test_full_degradation(clip, space_scale, time_scale):
  lr = degrade.degrade(clip, seed=3, space_scale=space_scale, time_scale=time_scale)
  assert lr.dtype == np.uint8 and float(lr.std()) > 5  # still an image, not a flat field
  assert lr.shape == (len(range(0, 8, time_scale)), 48 // space_scale, 64 // space_scale, 3)
  np.testing.assert_array_equal(lr, degrade.degrade(clip, seed=3, space_scale=space_scale, time_scale=time_scale))
  assert not np.array_equal(lr, degrade.degrade(clip, seed=4, space_scale=space_scale, time_scale=time_scale))


@pytest.mark.parametrize("codec", ["libx264", "h264"])
def test_a_frame_gets_the_bits_of_doves_codec_stream(codec):
  """DOVE opens the codec stream at 1 fps (`add_stream(codec, rate=1)`), so a frame gets `bitrate` bits, 1e4-1e5;
  the earlier recipe's 25 fps gave it 1/25 of that. x264's rate control on 16 frames lands within a factor 2.5 of
  its target (measured 1.59 and 0.48 of it here); ffmpeg's mpeg4 (DOVE's third codec) does not get under its
  quantizer floor at these rates, so it is left out."""
  base = np.random.default_rng(0).integers(0, 256, (128, 160, 3)).astype(np.float32)
  clip = np.stack([np.roll(base, 3 * t, axis=1) for t in range(16)])  # a texture panning 3 pixels a frame
  for bitrate in degrade.BITRATE:
    bits = {name: len(degrade.encode_video(clip, codec, bitrate, recipe.codec_rate)) * 8 / len(clip)
            for name, recipe in degrade.RECIPES.items()}
    assert 0.4 * bitrate <= bits["dove"] <= 2.5 * bitrate, bits
    assert bits["earlier"] <= 0.2 * bits["dove"], bits


@pytest.mark.parametrize("name, calls", [("dove", 16), ("earlier", 8)])
def test_dove_compresses_the_video_in_both_orders(clip, monkeypatch, name, calls):
  rates = []
  compress = degrade.compress_video
  monkeypatch.setattr(degrade, "compress_video", lambda x, codec, bitrate, rate: rates.append(rate) or compress(
      x, codec, bitrate, rate))
  for seed in range(8):
    degrade.degrade(clip[:5], seed, recipe=degrade.recipe(name))
  assert len(rates) == calls and set(rates) == {degrade.RECIPES[name].codec_rate}
  with pytest.raises(ValueError, match="data.degradation is 'realbasicvsr'; expected one of dove, earlier"):
    degrade.recipe("realbasicvsr")


def test_float_rounding_does_not_change_the_drawn_degradation(clip, monkeypatch):
  """Evaluation's realistic protocol depends on it: a rounding in a blur (another implementation, another SciPy)
  may change the noise, never which resizes, JPEG qualities, codec and bitrate the seed draws."""
  drawn = []

  def recorded(name, step):
    def run(x, *args):
      drawn.append((name, *args))
      return step(x, *args)
    return run

  for name in ("resize", "jpeg", "resize_opencv", "jpeg_opencv", "compress_video"):
    monkeypatch.setattr(degrade, name, recorded(name, getattr(degrade, name)))

  def draws(blur_error):
    drawn.clear()
    with monkeypatch.context() as patch:
      blur = degrade.blur
      patch.setattr(degrade, "blur", lambda x, kernel, border: blur(x, kernel, border) + blur_error)
      for seed in range(8):
        degrade.degrade(clip, seed)
    return list(drawn)

  exact = draws(0.0)
  assert sum(name == "compress_video" for name, *_ in exact) == 16  # two per clip: one in each order
  assert draws(1e-3) == exact


def test_time_degradation_keeps_every_s_t_th_frame():
  clip = np.arange(9)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  np.testing.assert_array_equal(degrade.degrade_time(clip, 2)[:, 0, 0, 0], [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(degrade.degrade_time(clip, 4)[:, 0, 0, 0], [0, 4, 8])


# DOVE's finetune/configs/degradation.yaml (kernel_list, kernel_prob), written out here as the reference states it.
DOVE_KERNEL_ODDS = {"iso": 0.405, "aniso": 0.225, "generalized_iso": 0.108, "generalized_aniso": 0.027,
                    "plateau_iso": 0.108, "plateau_aniso": 0.027, "sinc": 0.1}


def test_dove_kernels_come_at_doves_odds():
  rng, draws = np.random.default_rng(0), 8000
  kinds = [degrade.dove_kernels(rng, (0.2, 3.0), 1)[0] for _ in range(draws)]
  for kind, odds in DOVE_KERNEL_ODDS.items():
    assert abs(kinds.count(kind) / draws - odds) <= 4 * np.sqrt(odds * (1 - odds) / draws), kind


def _reference_kernel(size, sigma_x, sigma_y, angle, beta, plateau):
  """mmagic's blur_kernels.py (DOVE's copy): grid arange(-k // 2 + 1, k // 2 + 1), covariance
  R diag(sx^2, sy^2) R^T, exp(-0.5 (x^T S^-1 x)^beta) or 1 / ((x^T S^-1 x)^beta + 1), normalized."""
  grid = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
  xy = np.stack(np.meshgrid(grid, grid), axis=-1)
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  inverse = np.linalg.inv(rotation @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rotation.T)
  distance = np.sum((xy @ inverse) * xy, axis=-1)
  kernel = 1 / (distance ** beta + 1) if plateau else np.exp(-0.5 * distance ** beta)
  return kernel / kernel.sum()


@pytest.mark.parametrize("plateau", [False, True])
def test_generalized_and_plateau_kernels_are_the_references(plateau):
  for size, sx, sy, angle, beta in ((11, 1.5, 0.7, 0.3, 0.6), (21, 2.8, 1.1, -2.0, 3.5), (7, 0.4, 0.4, 0.0, 1.0)):
    np.testing.assert_allclose(degrade.gaussian_kernel(size, sx, sy, angle, beta, plateau),
                               _reference_kernel(size, sx, sy, angle, beta, plateau), rtol=1e-10, atol=1e-12)


def test_a_generalized_kernels_beta_changes_from_frame_to_frame_between_1_and_the_clips_bound():
  rng = np.random.default_rng(3)
  kind, kernels = "", []
  while not kind.startswith("generalized_aniso"):
    kind, kernels = degrade.dove_kernels(rng, (0.2, 3.0), 4)
  assert kernels.shape[0] == 4 and len({kernel.tobytes() for kernel in kernels}) == 4
  frames = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3))
  np.testing.assert_allclose(degrade.blur(frames, kernels),  # frame t through kernel t, in one call
                             np.concatenate([degrade.blur(f[None], k) for f, k in zip(frames, kernels)]), atol=1e-9)


@pytest.mark.parametrize("poisson, expected_std", [
    ("dove", 2.0 * np.sqrt(100)),  # Poisson(x v) / v - x on 0-255 levels, v = 1 for one level: std sqrt(x)
    ("earlier", 2.0 * 255 * np.sqrt(2 * 100 / 255) / 2),  # on [0, 1], v = 2 (BasicSR's floor of 2 levels)
])
def test_poisson_noise_has_the_formulas_strength(poisson, expected_std):
  order = dataclasses.replace(degrade.FIRST, gaussian_noise_prob=0.0, gray_noise_prob=0.0, poisson_scale=(2.0, 2.0))
  flat = np.full((4, 32, 32, 3), 100.0, np.float32)
  noise = degrade.add_noise(flat, np.random.default_rng(0), order, poisson) - flat
  assert abs(noise.std() / expected_std - 1) < 0.03 and abs(noise.mean()) < 0.05 * expected_std


def test_doves_final_sinc_cutoff_does_not_depend_on_the_kernel_size(clip, monkeypatch):
  cutoffs = []
  sinc = degrade.sinc_kernel
  monkeypatch.setattr(degrade, "sinc_kernel", lambda size, cutoff: cutoffs.append(cutoff) or sinc(size, cutoff))
  monkeypatch.setattr(degrade, "dove_kernels", lambda rng, sigma, frames: ("iso", np.ones((1, 1, 1))))
  for seed in range(12):
    degrade.degrade(clip[:3], seed)
  assert cutoffs and all(np.pi / 3 <= c <= np.pi for c in cutoffs)


def test_doves_resize_does_not_antialias():
  """Shrunk to a third, stripes of period 3 (0, 255, 0, ...) alias: OpenCV's bilinear resize samples the middle
  column of every three, 255; PIL's antialiased one averages them, 85."""
  stripes = np.tile(np.array([0.0, 255.0, 0.0], np.float32)[None, None, :, None], (1, 12, 40, 3))
  aliased = degrade.resize_opencv(stripes, 4, 40, degrade._OPENCV_RESIZE[0])  # noqa: SLF001
  averaged = degrade.resize(stripes, 4, 40, degrade._RESAMPLE[0])  # noqa: SLF001
  assert aliased.shape == averaged.shape == (1, 4, 40, 3)
  np.testing.assert_array_equal(aliased, 255.0)
  assert abs(averaged.mean() - 85) < 2


def test_doves_jpeg_quality_drifts_from_frame_to_frame_within_its_range():
  qualities = degrade.drifting_qualities(np.random.default_rng(0), 200, (30, 95))
  assert all(30 <= q <= 95 for q in qualities)
  assert max(abs(a - b) for a, b in zip(qualities, qualities[1:])) <= degrade.JPEG_QUALITY_STEP + 1
  assert len(set(qualities)) > 10


def test_a_mixture_draws_one_recipe_per_example_and_bicubic_is_the_clean_protocol(clip):
  assert degrade.mixture("dove") == ("dove",)
  assert degrade.mixture("dove+earlier+bicubic") == ("dove", "earlier", "bicubic")
  for spec in ("dove+realbasicvsr", "dove+dove", ""):
    with pytest.raises(ValueError, match="expected one of dove, earlier, bicubic, or several of them joined by"):
      degrade.mixture(spec)
  hr = clip[:3]  # 48x64
  clean = degrade.degrade_space_by("bicubic", hr, np.random.default_rng(0), 4)
  np.testing.assert_array_equal(clean, np.stack([resize.resize_bicubic(frame, 12, 16) for frame in hr]))
  np.testing.assert_array_equal(degrade.degrade_space_by("dove", hr, np.random.default_rng(3), 4),
                                degrade.degrade_space(hr, np.random.default_rng(3), 4, degrade.DOVE))
