"""Comparison strips: clips side by side, pictures untouched; labels as text above the columns, frame numbers beside
the rows."""

import numpy as np

from diffst_jax.io import strips


def _clip(frames, height, width, seed):
  return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_comparison_strip_lays_clips_side_by_side():
  a, b = _clip(3, 8, 10, seed=8), _clip(3, 8, 10, seed=9)
  strip = strips.comparison_strip([a, b], [0, 2])
  assert strip.shape == (8 + 4 + 8, 10 + 4 + 10, 3)
  np.testing.assert_array_equal(strip[:8, 14:], b[0])
  np.testing.assert_array_equal(strip[12:, :10], a[2])


def test_labelled_strip_names_columns_and_frames():
  a, b = _clip(3, 40, 64, seed=8), _clip(3, 40, 64, seed=9)
  strip = strips.comparison_strip([a, b], [0, 2], labels=[("bicubic", "28.01 dB"), ("ground truth",)])
  header, margin = 2 * 12 + 4, 36
  assert strip.shape == (header + 40 + 4 + 40, margin + 64 + 4 + 64, 3)
  np.testing.assert_array_equal(strip[header:header + 40, margin + 68:], b[0])  # the pictures are untouched
  np.testing.assert_array_equal(strip[header + 44:, margin:margin + 64], a[2])
  ink = lambda region: int((region < 128).any(axis=-1).sum())  # noqa: E731  # black text on white
  assert ink(strip[:12, margin:margin + 64]) > 20 and ink(strip[12:24, margin:margin + 64]) > 20  # two lines
  assert ink(strip[12:24, margin + 68:]) == 0  # the second column has one line
  assert ink(strip[header:header + 40, :margin]) > 5 and ink(strip[header + 40:header + 44]) == 0  # frame numbers
