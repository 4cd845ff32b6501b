"""Wan's 3D RoPE against a float64 numpy reference written from the definition."""

import numpy as np
import pytest

from diffst_jax.ops.rope import apply_rope, band_dims, rope_tables


def _reference(x, grid, theta=10000.0):
  """Rotate each pair (x[2i], x[2i+1]) as a complex number by position * theta^(-2i/d) of its band's axis."""
  b, s, n, d = x.shape
  bands = band_dims(d)
  t, h, w = np.meshgrid(*(np.arange(g) for g in grid), indexing="ij")
  positions = [t.reshape(-1), h.reshape(-1), w.reshape(-1)]
  angles = []
  for band, pos in zip(bands, positions):
    freqs = theta ** (-np.arange(0, band, 2) / band)
    angles.append(pos[:, None] * freqs[None, :])
  angles = np.concatenate(angles, axis=1)  # (S, d/2)
  z = x[..., 0::2] + 1j * x[..., 1::2]
  z = z * np.exp(1j * angles)[None, :, None, :]
  out = np.empty_like(x)
  out[..., 0::2], out[..., 1::2] = z.real, z.imag
  return out


def test_wan21_bands():
  assert band_dims(128) == (44, 42, 42)
  assert band_dims(12) == (4, 4, 4)
  assert band_dims(24) == (8, 8, 8)


@pytest.mark.parametrize("head_dim, grid", [(12, (3, 4, 5)), (24, (2, 3, 7)), (128, (5, 6, 4))])
def test_rope_matches_float64_reference(head_dim, grid):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, int(np.prod(grid)), 3, head_dim))
  expected = _reference(x, grid)
  got = np.asarray(apply_rope(x.astype(np.float32), *rope_tables(head_dim, grid)))
  np.testing.assert_allclose(got, expected, atol=2e-6 * np.abs(expected).max())


def test_rope_tables_are_exact_in_float64():
  cos, sin = rope_tables(24, (2, 3, 7))
  assert cos.dtype == np.float64
  x = np.random.default_rng(1).standard_normal((1, 42, 1, 24))
  z = x[..., 0::2] + 1j * x[..., 1::2]
  rotated = z * (cos + 1j * sin)[None, :, None, :]
  np.testing.assert_allclose(rotated, _reference(x, (2, 3, 7))[..., 0::2] + 1j * _reference(x, (2, 3, 7))[..., 1::2],
                             atol=1e-12)
