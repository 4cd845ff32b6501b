"""Wan's 3D rotary position embedding: head_dim split into time/height/width bands rotated by the patch-grid index.

head_dim D: height and width bands 2*(D//6) each, time gets the rest (D=128: 44/42/42). Angles are computed in
float64 on the host (the grid is static) and rotate consecutive pairs (x[2i], x[2i+1]).
"""

import jax
import jax.numpy as jnp
import numpy as np


def band_dims(head_dim: int) -> tuple[int, int, int]:
  hw = 2 * (head_dim // 6)
  return head_dim - 2 * hw, hw, hw


def rope_tables(head_dim: int, grid: tuple[int, int, int], theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """cos and sin of the rotation angles, (T*H*W, head_dim/2) float64, one row per token in (t, h, w) order (WanDiT
  reorders them rows first, as its tokens)."""
  per_axis = []
  for axis, (dim, size) in enumerate(zip(band_dims(head_dim), grid)):
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim)
    angles = np.outer(np.arange(size, dtype=np.float64), inv_freq)  # (size, dim/2)
    shape = [1, 1, 1, dim // 2]
    shape[axis] = size
    per_axis.append(np.broadcast_to(angles.reshape(shape), (*grid, dim // 2)))
  angles = np.concatenate(per_axis, axis=-1).reshape(-1, head_dim // 2)
  return np.cos(angles), np.sin(angles)


def apply_rope(x: jax.Array, cos: np.ndarray | jax.Array, sin: np.ndarray | jax.Array) -> jax.Array:
  """Rotates pairs of x (B, S, N, D) by the tables (S, D/2); computed in float32 (or wider), returned in x's dtype."""
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  cos = jnp.asarray(cos, dtype)[None, :, None, :]
  sin = jnp.asarray(sin, dtype)[None, :, None, :]
  pairs = x.astype(dtype).reshape(*x.shape[:-1], -1, 2)
  even, odd = pairs[..., 0], pairs[..., 1]
  rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
  return rotated.reshape(x.shape).astype(x.dtype)
