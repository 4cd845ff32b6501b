"""How a clip of any length and size is cut for upscaling: temporal chunks and spatial tiles, each overlapping its
neighbours, and the linear ramps that blend them. NumPy and the standard library only, so command lines can offer the
flags (`--help`) without starting JAX; `diffst_jax.inference` runs the model over the pieces.
"""

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

MIN_TILE = 16  # LR pixels: smaller tiles leave the VAE and DiT almost nothing but padding


@dataclasses.dataclass(frozen=True)
class Plan:
  """How to cut a clip of `frames` x `height` x `width` LR pixels; `tile_batch`: at most how many tiles of a chunk
  go through the model in one call (they share one compiled program and its per-call overhead)."""

  chunk_frames: int
  overlap_frames: int
  tile: tuple[int, int]
  tile_overlap: int
  tile_batch: int = 1

  def check(self) -> None:
    if self.chunk_frames < 2:
      raise ValueError(f"--chunk-frames must be at least 2, got {self.chunk_frames}")
    if not 0 <= self.overlap_frames < self.chunk_frames:
      raise ValueError(f"--overlap-frames must be in [0, chunk frames = {self.chunk_frames}), got "
                       f"{self.overlap_frames}")
    if min(self.tile) < MIN_TILE:
      raise ValueError(f"--tile {self.tile[0]} {self.tile[1]} is smaller than the model allows; tiles must be at "
                       f"least {MIN_TILE}x{MIN_TILE} LR pixels")
    if self.tile_batch < 1:
      raise ValueError(f"--tile-batch must be at least 1, got {self.tile_batch}")
    if not 0 <= 2 * self.tile_overlap < min(self.tile):
      raise ValueError(f"--tile-overlap must be under half the tile size, got {self.tile_overlap} for "
                       f"{self.tile[0]}x{self.tile[1]}")


DEFAULT_PLAN = Plan(chunk_frames=17, overlap_frames=4, tile=(128, 128), tile_overlap=32)


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
  """The command-line flags of a Plan (infer.py, evaluate.py); `plan_from_flags` reads them."""
  parser.add_argument("--chunk-frames", type=int, help="input frames per temporal chunk (default: the checkpoint's "
                      f"training clip length, else {DEFAULT_PLAN.chunk_frames})")
  parser.add_argument("--overlap-frames", type=int, help="input frames shared by neighbouring chunks (default: a "
                      "quarter of the chunk)")
  parser.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"), help="LR tile size in pixels (default: the "
                      f"checkpoint's training crop, else {DEFAULT_PLAN.tile[0]}x{DEFAULT_PLAN.tile[1]})")
  parser.add_argument("--tile-overlap", type=int, help="LR pixels shared by neighbouring tiles (default: a quarter "
                      "of the tile)")
  parser.add_argument("--tile-batch", type=int, help="at most this many tiles per model call (default: as many as "
                      f"cover one {DEFAULT_PLAN.tile[0]}x{DEFAULT_PLAN.tile[1]} tile, the memory of one default tile)")


def plan_for(trained: Mapping[str, int], chunk_frames: int | None = None, overlap_frames: int | None = None,
             tile: Sequence[int] | None = None, tile_overlap: int | None = None,
             tile_batch: int | None = None) -> Plan:
  """A checked Plan: each size as given, else the one the checkpoint was trained on (`trained`: its "chunk_frames"
  and "tile", diffst.trained_sizes; a tile at least MIN_TILE), else DEFAULT_PLAN's; each overlap a quarter of its
  chunk or tile (at least 1) unless given; tiles batched up to the area of one DEFAULT_PLAN tile unless given. A
  model sees no longer clips and no larger crops in training: its causal VAE drifts beyond the clip, and its
  attention spreads over more tokens than it learnt on beyond the crop."""
  chunk = chunk_frames or trained.get("chunk_frames") or DEFAULT_PLAN.chunk_frames
  trained_tile = max(trained["tile"], MIN_TILE) if trained.get("tile") else None
  tile = tuple(tile) if tile else (trained_tile,) * 2 if trained_tile else DEFAULT_PLAN.tile
  quarter = lambda size: max(1, size // 4)  # noqa: E731
  same_area = max(1, DEFAULT_PLAN.tile[0] * DEFAULT_PLAN.tile[1] // (tile[0] * tile[1]))
  plan = Plan(chunk, quarter(chunk) if overlap_frames is None else overlap_frames, tile,
              quarter(min(tile)) if tile_overlap is None else tile_overlap, tile_batch or same_area)
  plan.check()
  return plan


def plan_from_flags(args: argparse.Namespace, trained: Mapping[str, int]) -> Plan:
  """`plan_for` with the sizes of `add_plan_flags`' flags."""
  return plan_for(trained, args.chunk_frames, args.overlap_frames, args.tile, args.tile_overlap, args.tile_batch)


def spans(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
  """[start, end) windows of `window` covering `length`, consecutive ones sharing `overlap`; the last one ends at
  `length` (a single window when `window >= length`)."""
  if window >= length:
    return [(0, length)]
  starts = list(range(0, length - window, window - overlap)) + [length - window]
  return [(s, s + window) for s in dict.fromkeys(starts)]


def ramp(length: int, overlap_before: int, overlap_after: int) -> np.ndarray:
  """Blend weights over a window: rising over its first `overlap_before` entries, falling over its last
  `overlap_after`, 1 elsewhere; complementary with the neighbours' ramps."""
  weights = np.ones(length, np.float32)
  if overlap_before:
    weights[:overlap_before] = np.arange(1, overlap_before + 1) / (overlap_before + 1)
  if overlap_after:
    weights[length - overlap_after:] = np.arange(overlap_after, 0, -1) / (overlap_after + 1)
  return weights


def overlaps(windows: list[tuple[int, int]], scale_of: Callable[[int], int]) -> list[tuple[int, int]]:
  """Per window, how many output entries it shares with the previous and with the next window."""
  result = []
  for i, (start, end) in enumerate(windows):
    before = scale_of(windows[i - 1][1] - start) if i else 0
    after = scale_of(end - windows[i + 1][0]) if i + 1 < len(windows) else 0
    result.append((max(before, 0), max(after, 0)))
  return result
