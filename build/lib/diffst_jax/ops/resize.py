"""Resizing: bilinear with torch's `F.interpolate(mode="bilinear")` conventions, as two small matrix products (JAX);
bicubic frames as PIL (antialiased like MATLAB's imresize) for the benchmark protocol and the trivial baseline.
"""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


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


def resize_bicubic(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  """A uint8 (H, W, 3) frame resized by PIL's bicubic filter (antialiased when shrinking)."""
  return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


def bicubic_blend(lr: np.ndarray, s_x: int, s_t: int) -> np.ndarray:
  """The trivial baseline: bicubic x s_x per frame, in-between frames as linear blends of their neighbours; uint8
  (N, h, w, 3) -> (s_t (N-1) + 1, s_x h, s_x w, 3)."""
  up = np.stack([resize_bicubic(frame, frame.shape[0] * s_x, frame.shape[1] * s_x) for frame in lr]).astype(np.float64)
  out = [up[0]]
  for previous, following in zip(up[:-1], up[1:]):
    out += [(1 - j / s_t) * previous + j / s_t * following for j in range(1, s_t + 1)]
  return np.clip(np.round(np.stack(out)), 0, 255).astype(np.uint8)
