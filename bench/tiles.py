"""Seconds per output frame of chunked, tiled inference (`inference.upscale_video`, what infer.py runs) by tile size
and tiles per model call.

  python bench/tiles.py                                   # weights/tiny on a bikes-sized clip
  python bench/tiles.py --tiles 16 32 128 --height 68 --width 160 --frames 9 --repeats 3
  python bench/tiles.py --tiles 16 --runs 1:xla 0:auto --height 180 --width 320   # 720p output: before, after

Each tile size runs with a quarter of it as overlap and the checkpoint's chunk length, and each --runs entry
BATCH:CONVOLUTIONS: tiles per model call (0: the default, chunking.plan_for) and the convolution implementation
(parallel/plan.py; auto: this backend's default). The runs take turns (one of each, then again), so load on a shared machine reaches
all of them alike; the table gives the median per run and its ratio to the first's. The first, untimed round
compiles.
"""

import argparse
import pathlib
import statistics
import time

import numpy as np

from diffst_jax import cli
from diffst_jax import chunking, inference
from diffst_jax.models import diffst
from diffst_jax.parallel import plan as plan_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", default=str(ROOT / "weights" / "tiny"))
  parser.add_argument("--tiles", type=int, nargs="+", default=[16, 32, 128], help="LR tile sizes (square)")
  parser.add_argument("--frames", type=int, default=9, help="LR input frames")
  parser.add_argument("--height", type=int, default=68, help="LR height (bikes at x4: 68)")
  parser.add_argument("--width", type=int, default=160, help="LR width (bikes at x4: 160)")
  parser.add_argument("--runs", nargs="+", default=["0:auto"], help="BATCH:CONVOLUTIONS per tile size: tiles per "
                      "model call (0: default) and convolution implementation (auto, xla, gemm)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  model = diffst.load(args.checkpoint)
  trained = diffst.trained_sizes(args.checkpoint)
  runs = [(int(batch), convolutions) for batch, convolutions in (run.split(":") for run in args.runs)]
  plans = {(tile, batch, convolutions): chunking.plan_for(trained, tile=(tile, tile), tile_batch=batch or None)
           for tile in args.tiles for batch, convolutions in runs}
  clip = np.random.default_rng(0).integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
  out_frames = model.config.time_scale * (args.frames - 1) + 1
  times = {run: [] for run in plans}
  for round_index in range(args.repeats + 1):
    for run, plan in plans.items():
      start = time.perf_counter()
      convolutions = plan_lib.ExecutionPlan(conv_implementation=run[2])
      for _ in inference.upscale_video(model, clip, len(clip), plan, execution_plan=convolutions):
        pass
      if round_index:  # round 0 compiles
        times[run].append(time.perf_counter() - start)
  print(f"{args.checkpoint}: {args.frames} LR frames {args.height}x{args.width} -> {out_frames} frames, chunks of "
        f"{next(iter(plans.values())).chunk_frames}, median of {args.repeats}")
  print("| LR tile (overlap) | tiles per chunk | tiles per call | convolutions | s | s per output frame | "
        "ratio to the first |")
  print("|---|---:|---:|---|---:|---:|---:|")
  first = statistics.median(next(iter(times.values())))
  for (tile, batch, convolutions), plan in plans.items():
    count = (len(chunking.spans(args.height, tile, plan.tile_overlap))
             * len(chunking.spans(args.width, tile, plan.tile_overlap)))
    seconds = statistics.median(times[tile, batch, convolutions])
    convolutions = plan_lib.ExecutionPlan(conv_implementation=convolutions).convolutions()
    per_call = -(-count // -(-count // plan.tile_batch))  # inference.upscale_chunk's equal batches
    print(f"| {tile}x{tile} ({plan.tile_overlap}) | {count} | {per_call} | {convolutions} | {seconds:.2f} | "
          f"{seconds / out_frames:.3f} | {seconds / first:.2f} |")


if __name__ == "__main__":
  cli.script(main)
