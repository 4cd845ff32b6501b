"""Bilinear resizing with torch's `F.interpolate(mode="bilinear")` conventions, as two small matrix products."""

import jax
import jax.numpy as jnp
import numpy as np


def _interpolation_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
  """(size_out, size_in) weights; rows sum to 1."""
  out = np.arange(size_out, dtype=np.float64)
  if align_corners:
    src = out * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
  else:
    src = np.maximum((out + 0.5) * (size_in / size_out) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(int), size_in - 1)
  hi = np.minimum(lo + 1, size_in - 1)
  frac = src - lo
  matrix = np.zeros((size_out, size_in))
  np.add.at(matrix, (np.arange(size_out), lo), 1 - frac)
  np.add.at(matrix, (np.arange(size_out), hi), frac)
  return matrix


def resize_bilinear(x: jax.Array, height: int, width: int, align_corners: bool = False) -> jax.Array:
  """Resizes (..., H, W, C) to (..., height, width, C)."""
  rows = jnp.asarray(_interpolation_matrix(x.shape[-3], height, align_corners), x.dtype)
  cols = jnp.asarray(_interpolation_matrix(x.shape[-2], width, align_corners), x.dtype)
  return jnp.einsum("oh,...hwc,pw->...opc", rows, x, cols)
