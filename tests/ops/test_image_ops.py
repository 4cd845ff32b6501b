"""Bilinear resizing against torch's F.interpolate, and backward warping against numpy shifts and grid_sample."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffst_jax.ops.resize import resize_bilinear
from diffst_jax.ops.warp import warp


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(10, 14), (5, 7), (20, 8)])
def test_resize_matches_torch(align_corners, size):
  x = np.random.default_rng(0).standard_normal((2, 7, 9, 3)).astype(np.float32)
  expected = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                           align_corners=align_corners).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(resize_bilinear(jnp.asarray(x), *size, align_corners=align_corners), expected,
                             atol=1e-5)


@pytest.mark.parametrize("dx, dy", [(2, 0), (0, -3), (1, 2), (-2, -1)])
def test_constant_flow_is_a_shift_in_the_interior(dx, dy):
  image = np.random.default_rng(1).standard_normal((1, 12, 15, 3)).astype(np.float32)
  flow = np.broadcast_to(np.array([dx, dy], np.float32), (1, 12, 15, 2))
  got = np.asarray(warp(jnp.asarray(image), jnp.asarray(flow)))
  expected = np.roll(image, (-dy, -dx), axis=(1, 2))  # out[y, x] = image[y + dy, x + dx]
  interior = (slice(None), slice(3, -3), slice(3, -3))
  np.testing.assert_allclose(got[interior], expected[interior], atol=1e-6)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_warp_matches_grid_sample(padding):
  rng = np.random.default_rng(2)
  image = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
  flow = 3 * rng.standard_normal((2, 9, 11, 2)).astype(np.float32)
  ys, xs = np.meshgrid(np.arange(9), np.arange(11), indexing="ij")
  grid = np.stack([2 * (xs + flow[..., 0]) / 10 - 1, 2 * (ys + flow[..., 1]) / 8 - 1], axis=-1)
  expected = F.grid_sample(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(grid.astype(np.float32)),
                           mode="bilinear", padding_mode=padding, align_corners=True).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(warp(jnp.asarray(image), jnp.asarray(flow), padding), expected, atol=1e-5)
