"""SPEC §8 degradations: deterministic per seed, shapes and value ranges kept, the right frames dropped."""

import concurrent.futures
import itertools

import numpy as np
import pytest
import scipy.ndimage

from diffst_jax.data import degrade
from diffst_jax.io import video
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def clip():
  """8 real frames (carphone, distorted), 48x64."""
  frames = list(itertools.islice(video.iter_frames(ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"), 8))
  return np.stack(frames)


def test_kernels_are_normalized_and_symmetric():
  for kernel in (degrade.gaussian_kernel(11, 1.5, 0.7, 0.3), degrade.gaussian_kernel(9, 2.0, 2.0, 0, beta=1.0),
                 degrade.gaussian_kernel(13, 1.2, 2.2, 1.0, beta=3.0, plateau=True), degrade.sinc_kernel(15, 1.2)):
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)  # point-symmetric


@pytest.mark.parametrize("kernel", [degrade.gaussian_kernel(11, 1.5, 0.7, 0.3), degrade.sinc_kernel(21, 1.2)])
def test_blur_matches_direct_correlation_with_reflected_borders(clip, kernel):
  x = clip.astype(np.float32)
  expected = scipy.ndimage.correlate(x, kernel[None, :, :, None], mode="reflect")
  np.testing.assert_allclose(degrade.blur(x, kernel), expected, atol=2e-3)


@pytest.mark.parametrize("name, step", [
    ("blur", lambda x, rng: degrade.blur(x, degrade.random_kernel(rng, (0.2, 3.0)))),
    ("resize", lambda x, rng: degrade.resize(x, 24, 32, degrade._RESAMPLE[rng.integers(3)])),  # noqa: SLF001
    ("noise", lambda x, rng: np.clip(degrade.add_noise(x, rng, degrade.FIRST), 0, 255)),
    ("jpeg", lambda x, rng: degrade.jpeg(x, rng.integers(30, 96))),
    ("video compression", lambda x, rng: degrade.compress_video(x, rng.choice(degrade.CODECS), rng.uniform(1e4, 1e5))),
])
def test_each_degradation_is_deterministic_and_keeps_ranges(clip, name, step):
  x = clip.astype(np.float32)
  first, second = step(x, np.random.default_rng(7)), step(x, np.random.default_rng(7))
  np.testing.assert_array_equal(first, second)
  assert first.shape[0] == clip.shape[0] and first.shape[-1] == 3
  rounding = 1e-3 if name == "blur" else 0  # FFT rounding around exact 0s and 255s
  assert float(first.min()) >= -rounding and float(first.max()) <= 255 + rounding, name
  assert not np.array_equal(first, x) or name == "resize"


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


def test_float_rounding_does_not_change_the_drawn_degradation(clip, monkeypatch):
  """Evaluation's realistic protocol depends on it: a rounding in a blur (another implementation, another SciPy)
  may change the noise, never which resizes, JPEG qualities, codec and bitrate the seed draws."""
  drawn = []

  def recorded(name, step):
    def run(x, *args):
      drawn.append((name, *args))
      return step(x, *args)
    return run

  for name in ("resize", "jpeg", "compress_video"):
    monkeypatch.setattr(degrade, name, recorded(name, getattr(degrade, name)))

  def draws(blur_error):
    drawn.clear()
    with monkeypatch.context() as patch:
      blur = degrade.blur
      patch.setattr(degrade, "blur", lambda x, kernel: blur(x, kernel) + blur_error)
      for seed in range(8):
        degrade.degrade(clip, seed)
    return list(drawn)

  exact = draws(0.0)
  assert sum(name == "compress_video" for name, *_ in exact) == 8
  assert draws(1e-3) == exact


def test_time_degradation_keeps_every_s_t_th_frame():
  clip = np.arange(9)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  np.testing.assert_array_equal(degrade.degrade_time(clip, 2)[:, 0, 0, 0], [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(degrade.degrade_time(clip, 4)[:, 0, 0, 0], [0, 4, 8])
