"""Preparation time of one training example: DESIGN §8's space and time degradation of a 9-frame HR window.

  python bench/data.py --video bikes.mp4 [--repeats 5]

Prints, for each window size (a 64x64 crop degraded alone, a 256x256 window, a whole frame as the tiny preset's
`data.degradation_window` = 640 degrades), the median wall time of `degrade.degrade` over `repeats` seeds, with
`degrade.blur` as shipped (FFT) and as direct correlation (scipy.ndimage.correlate), side by side, and the share of
the time spent in the blur.
"""

import argparse
import itertools
import statistics
import time

import numpy as np
import scipy.ndimage

from diffst_jax import cli
from diffst_jax.data import degrade
from diffst_jax.io import video


SCIPY_BORDERS = {"reflect": "mirror", "symmetric": "reflect"}  # numpy's pad modes -> scipy.ndimage's names for them


def _direct_blur(clip: np.ndarray, kernel: np.ndarray, border: str) -> np.ndarray:
  """degrade.blur by direct correlation: one kernel (k, k) or (1, k, k) for all frames, or one per frame."""
  kernels = kernel if kernel.ndim == 3 else kernel[None]
  frames = [clip] if len(kernels) == 1 else [frame[None] for frame in clip]
  return np.concatenate([scipy.ndimage.correlate(part, k[None, :, :, None], mode=SCIPY_BORDERS[border])
                         for part, k in zip(frames, kernels)])


def _median_degrade_seconds(clip: np.ndarray, repeats: int) -> tuple[float, float]:
  """Median seconds of `degrade.degrade` over seeds 0..repeats-1, and the median share of it spent in blur."""
  blur, in_blur = degrade.blur, []

  def timed_blur(x, kernel, border):
    start = time.perf_counter()
    out = blur(x, kernel, border)
    in_blur[-1] += time.perf_counter() - start
    return out

  degrade.blur = timed_blur
  try:
    totals, shares = [], []
    for seed in range(repeats):
      in_blur.append(0.0)
      start = time.perf_counter()
      degrade.degrade(clip, seed)
      totals.append(time.perf_counter() - start)
      shares.append(in_blur[-1] / totals[-1])
  finally:
    degrade.blur = blur
  return statistics.median(totals), statistics.median(shares)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--video", required=True, help="an HR video (e.g. ../shared/data/bikes.mp4, 640x272)")
  parser.add_argument("--frames", type=int, default=9)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  frames = np.stack(list(itertools.islice(video.iter_frames(args.video), args.frames)))
  height, width = frames.shape[1:3]
  print(f"{args.frames} frames of {args.video} ({width}x{height}), median over {args.repeats} seeds\n")
  print("| window | FFT blur s | direct blur s | ratio (direct / FFT) | blur share FFT | blur share direct |")
  print("|---|---:|---:|---:|---:|---:|")
  for size in (64, 256, None):
    clip = frames[:, :size, :size] if size else frames
    fft, fft_share = _median_degrade_seconds(clip, args.repeats)
    shipped, degrade.blur = degrade.blur, _direct_blur
    try:
      direct, direct_share = _median_degrade_seconds(clip, args.repeats)
    finally:
      degrade.blur = shipped
    name = f"{clip.shape[2]}x{clip.shape[1]}" + ("" if size else " (whole frame)")
    print(f"| {name} | {fft:.3f} | {direct:.3f} | {direct / fft:.1f} | {fft_share:.0%} | {direct_share:.0%} |")


if __name__ == "__main__":
  cli.script(main)
