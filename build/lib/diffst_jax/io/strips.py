"""Comparison strips: clips side by side, a row per chosen frame, optionally labelled (a header per column, the frame
number per row), for evaluation reports and TensorBoard."""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

_TEXT_LINE = 12  # pixels per line of PIL's default font, which is at most 6 pixels wide per character


def comparison_strip(columns: Sequence[np.ndarray], frame_indices: Sequence[int],
                     labels: Sequence[Sequence[str]] | None = None) -> np.ndarray:
  """One image: a row per frame index, a column per clip (T, H, W, 3) given, side by side with 4-pixel gaps; with
  `labels` (lines of text per column, e.g. the method and its PSNR) a header names the columns and each row
  carries its frame number."""
  gap = 4
  height, width = columns[0].shape[1:3]
  margin = 3 * _TEXT_LINE if labels else 0
  rows = []
  for t in frame_indices:
    row = np.full((height, margin + len(columns) * (width + gap) - gap, 3), 255, np.uint8)
    for c, clip in enumerate(columns):
      row[:, margin + c * (width + gap):margin + c * (width + gap) + width] = clip[t]
    rows += [_with_text(row, [(2, height // 2 - _TEXT_LINE // 2, f"{t}")]) if labels else row,
             np.full((gap, row.shape[1], 3), 255, np.uint8)]
  strip = np.concatenate(rows[:-1])
  if not labels:
    return strip
  header = np.full((_TEXT_LINE * max(map(len, labels)) + gap, strip.shape[1], 3), 255, np.uint8)
  fits = max(1, width // (_TEXT_LINE // 2))  # characters per column
  texts = [(2, 0, "frame")] + [(margin + c * (width + gap), i * _TEXT_LINE, line[:fits])
                               for c, lines in enumerate(labels) for i, line in enumerate(lines)]
  return np.concatenate([_with_text(header, texts), strip])


def _with_text(image: np.ndarray, texts: Sequence[tuple[int, int, str]]) -> np.ndarray:
  picture = Image.fromarray(image)
  draw = ImageDraw.Draw(picture)
  for x, y, text in texts:
    draw.text((x, y), text, fill=(0, 0, 0))
  return np.asarray(picture)
