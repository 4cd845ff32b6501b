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
class ChunkPlan:
  """How to cut a clip of `frames` x `height` x `width` LR pixels; `tile_batch`: at most how many tiles of a chunk
  go through the model in one call (they share one compiled program and its per-call overhead). `tile` None: the
  whole frame, or the largest tile whose program fits in memory (`inference.fit_to_memory`), with `tile_overlap`
  a quarter of it."""

  chunk_frames: int
  overlap_frames: int
  tile: tuple[int, int] | None
  tile_overlap: int | None
  tile_batch: int = 1

  def with_tile(self, tile: tuple[int, int]) -> "ChunkPlan":
    """This plan with `tile`, its overlap a quarter of it (at least 1) unless the plan gives one."""
    overlap = max(1, min(tile) // 4) if self.tile_overlap is None else self.tile_overlap
    return dataclasses.replace(self, tile=tuple(tile), tile_overlap=overlap)

  def check(self) -> None:
    if self.chunk_frames < 2:
      raise ValueError(f"--chunk-frames must be at least 2, got {self.chunk_frames}")
    if not 0 <= self.overlap_frames < self.chunk_frames:
      raise ValueError(f"--overlap-frames must be in [0, chunk frames = {self.chunk_frames}), got "
                       f"{self.overlap_frames}")
    if self.tile_batch < 1:
      raise ValueError(f"--tile-batch must be at least 1, got {self.tile_batch}")
    if self.tile is None:
      return
    if min(self.tile) < MIN_TILE:
      raise ValueError(f"--tile {self.tile[0]} {self.tile[1]} is smaller than the model allows; tiles must be at "
                       f"least {MIN_TILE}x{MIN_TILE} LR pixels")
    if not 0 <= 2 * self.tile_overlap < min(self.tile):
      raise ValueError(f"--tile-overlap must be under half the tile size, got {self.tile_overlap} for "
                       f"{self.tile[0]}x{self.tile[1]}")


DEFAULT_CHUNK_PLAN = ChunkPlan(chunk_frames=17, overlap_frames=4, tile=None, tile_overlap=None)
BATCH_AREA = 128 * 128  # LR pixels of the tiles batched into one call by default


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
  """The command-line flags of a ChunkPlan (infer.py, evaluate.py); `plan_from_flags` reads them."""
  parser.add_argument("--chunk-frames", type=int, help="input frames per temporal chunk (default: the checkpoint's "
                      f"training clip length, else {DEFAULT_CHUNK_PLAN.chunk_frames})")
  parser.add_argument("--overlap-frames", type=int, help="input frames shared by neighbouring chunks (default: a "
                      "quarter of the chunk)")
  parser.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"), help="LR tile size in pixels (default: the "
                      "tile the checkpoint records, else the whole frame, tiled only as far as the device's memory "
                      "requires)")
  parser.add_argument("--tile-overlap", type=int, help="LR pixels shared by neighbouring tiles (default: a quarter "
                      "of the tile)")
  parser.add_argument("--tile-batch", type=int, help="at most this many tiles per model call (default: as many as "
                      "cover 128x128 LR pixels)")


def plan_for(trained: Mapping[str, int], chunk_frames: int | None = None, overlap_frames: int | None = None,
             tile: Sequence[int] | None = None, tile_overlap: int | None = None,
             tile_batch: int | None = None) -> ChunkPlan:
  """A checked ChunkPlan: each size as given, else what the checkpoint records (`trained`, diffst.trained_sizes: its
  training clip length "chunk_frames", and a "tile" measured best for it, at least MIN_TILE), else DEFAULT_CHUNK_PLAN's;
  each overlap a quarter of its chunk or tile (at least 1) unless given; tiles batched up to BATCH_AREA unless given.
  Without a tile the model sees whole frames, tiled only where memory requires (inference.fit_to_memory): its causal
  VAE drifts beyond the training clip length, but its video-level guidance (VRG) and the DiT's attention are meant
  to see the frame."""
  for flag, value, least in (("--chunk-frames", chunk_frames, 2), ("--overlap-frames", overlap_frames, 0),
                             ("--tile", min(tile) if tile else None, MIN_TILE), ("--tile-overlap", tile_overlap, 0),
                             ("--tile-batch", tile_batch, 1)):
    if value is not None and value < least:
      given = " ".join(map(str, tile)) if flag == "--tile" else value
      raise ValueError(f"{flag} {given}: must be at least {least}" + (" LR pixels on each side" if flag == "--tile"
                                                                      else ""))
  chunk = chunk_frames if chunk_frames is not None else trained.get("chunk_frames") or DEFAULT_CHUNK_PLAN.chunk_frames
  recorded = max(trained["tile"], MIN_TILE) if trained.get("tile") else None
  tile = tuple(tile) if tile else (recorded,) * 2 if recorded else None
  overlap = max(1, chunk // 4) if overlap_frames is None else overlap_frames
  plan = ChunkPlan(chunk, overlap, None, tile_overlap, 1 if tile_batch is None else tile_batch)
  if tile:
    batch = max(1, BATCH_AREA // (tile[0] * tile[1])) if tile_batch is None else tile_batch
    plan = dataclasses.replace(plan.with_tile(tile), tile_batch=batch)
  plan.check()
  return plan


def plan_from_flags(args: argparse.Namespace, trained: Mapping[str, int]) -> ChunkPlan:
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
