"""Seconds per output frame of chunked, tiled inference (`inference.upscale_video`, what infer.py runs) by tile size.

  python bench/tiles.py                                   # weights/tiny on a bikes-sized clip
  python bench/tiles.py --tiles 16 32 128 --height 68 --width 160 --frames 9 --repeats 3

Each tile size runs with a quarter of it as overlap and the checkpoint's chunk length. The runs of the tile sizes
take turns (one of each, then again), so load on a shared machine reaches all of them alike; the table gives the
median per size and its ratio to the first size's. The first, untimed round compiles.
"""

import argparse
import pathlib
import statistics
import time

import numpy as np

from diffst_jax import chunking, inference
from diffst_jax.models import diffst

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", default=str(ROOT / "weights" / "tiny"))
  parser.add_argument("--tiles", type=int, nargs="+", default=[16, 32, 128], help="LR tile sizes (square)")
  parser.add_argument("--frames", type=int, default=9, help="LR input frames")
  parser.add_argument("--height", type=int, default=68, help="LR height (bikes at x4: 68)")
  parser.add_argument("--width", type=int, default=160, help="LR width (bikes at x4: 160)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  model = diffst.load(args.checkpoint)
  trained = diffst.trained_sizes(args.checkpoint)
  plans = {tile: chunking.plan_for(trained, tile=(tile, tile)) for tile in args.tiles}
  clip = np.random.default_rng(0).integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
  out_frames = model.config.time_scale * (args.frames - 1) + 1
  times = {tile: [] for tile in plans}
  for round_index in range(args.repeats + 1):
    for tile, plan in plans.items():
      start = time.perf_counter()
      for _ in inference.upscale_video(model, clip, len(clip), plan):
        pass
      if round_index:  # round 0 compiles
        times[tile].append(time.perf_counter() - start)
  print(f"{args.checkpoint}: {args.frames} LR frames {args.height}x{args.width} -> {out_frames} frames, chunks of "
        f"{plans[args.tiles[0]].chunk_frames}, median of {args.repeats}")
  print("| LR tile (overlap) | tiles per chunk | s | s per output frame | ratio to the first |")
  print("|---|---:|---:|---:|---:|")
  first = statistics.median(times[args.tiles[0]])
  for tile, plan in plans.items():
    count = (len(chunking.spans(args.height, tile, plan.tile_overlap))
             * len(chunking.spans(args.width, tile, plan.tile_overlap)))
    seconds = statistics.median(times[tile])
    print(f"| {tile}x{tile} ({plan.tile_overlap}) | {count} | {seconds:.2f} | {seconds / out_frames:.3f} | "
          f"{seconds / first:.2f} |")


if __name__ == "__main__":
  main()
