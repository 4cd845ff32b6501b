"""Colour correction (ops/color_fix.py): the blur against scipy's correlation, and what each fix promises."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from diffst_jax.ops import color_fix


def frames(seed: int, shape=(2, 24, 40, 3)) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("radius", [1, 2, 4, 16])
def test_the_dilated_blur_is_scipys_correlation_with_edges_repeated(radius):
  x = frames(0)
  kernel = np.zeros((2 * radius + 1, 2 * radius + 1), np.float64)
  kernel[::radius, ::radius] = np.outer([1, 2, 1], [1, 2, 1]) / 16
  expected = np.stack([np.stack([ndimage.correlate(f[..., c].astype(np.float64), kernel, mode="nearest")
                                 for c in range(3)], -1) for f in x])
  np.testing.assert_allclose(color_fix._dilated_blur(jnp.asarray(x), radius), expected, atol=1e-6)  # pylint: disable=protected-access


def test_wavelet_fix_takes_the_references_colour_and_keeps_the_detail():
  detail = frames(1)
  cast = np.array([0.3, -0.2, 0.1], np.float32)
  fixed = color_fix.color_fix("wavelet", jnp.asarray(detail + cast), jnp.asarray(detail))
  np.testing.assert_allclose(fixed, detail, atol=1e-5)
  high, low = color_fix.wavelet_split(jnp.asarray(detail))
  np.testing.assert_allclose(high + low, detail, atol=1e-6)


def test_adain_matches_each_frames_channel_statistics_to_the_reference():
  x, reference = frames(2), 0.5 * frames(3) + 0.2
  fixed = np.asarray(color_fix.color_fix("adain", jnp.asarray(x), jnp.asarray(reference)))
  np.testing.assert_allclose(fixed.mean(axis=(1, 2)), reference.mean(axis=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(fixed.std(axis=(1, 2)), reference.std(axis=(1, 2)), rtol=1e-3)


def test_none_changes_nothing_and_bad_requests_are_named():
  x = frames(4)
  np.testing.assert_array_equal(color_fix.color_fix("none", jnp.asarray(x), jnp.asarray(frames(5))), x)
  with pytest.raises(ValueError, match="unknown; use one of none, wavelet, adain"):
    color_fix.color_fix("histogram", jnp.asarray(x), jnp.asarray(x))
  with pytest.raises(ValueError, match="differ in shape"):
    color_fix.color_fix("adain", jnp.asarray(x), jnp.asarray(x[:1]))
