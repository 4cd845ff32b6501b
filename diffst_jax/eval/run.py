"""The space-time SR evaluation protocol (SPEC §9) and its built-in baseline.

A ground-truth clip of 2N-1 frames (an odd count; an even clip drops its last frame) becomes the N-frame LR input
by one of two protocols, both keeping frames 0, s_t, 2 s_t, ...:
* "bicubic": x s_x bicubic downscaling (PIL, antialiased like MATLAB's imresize), the synthetic benchmark protocol;
* "realistic": the training degradations of SPEC §8 (second order blur, resize, noise, JPEG, video compression),
  seeded per clip, so every method sees the same LR input.
Every one of the 2N-1 output frames is scored against the ground truth (frame means, then clip means).
"""

from collections.abc import Callable, Mapping

import numpy as np
from PIL import Image

from diffst_jax.data import degrade
from diffst_jax.eval import metrics

PROTOCOLS = ("bicubic", "realistic")
Method = Callable[[np.ndarray], np.ndarray]  # LR uint8 (N, h, w, 3) -> output uint8 (s_t (N-1) + 1, H, W, 3)


def ground_truth(frames: np.ndarray, s_x: int, s_t: int) -> np.ndarray:
  """Crops a clip to what the protocol can reproduce: (frames - 1) a multiple of s_t, H and W multiples of s_x."""
  usable = (len(frames) - 1) // s_t * s_t + 1
  height, width = frames.shape[1] // s_x * s_x, frames.shape[2] // s_x * s_x
  if usable < s_t + 1 or height == 0 or width == 0:
    raise ValueError(f"a ground-truth clip of shape {frames.shape} is too small for x{s_x} space, x{s_t} time")
  return frames[:usable, :height, :width]


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


def low_quality(hr: np.ndarray, protocol: str, s_x: int, s_t: int, seed: int) -> np.ndarray:
  """The LR input (N, H/s_x, W/s_x, 3) of a ground-truth clip (2N-1 frames when s_t = 2)."""
  if protocol == "bicubic":
    return np.stack([_resize(frame, frame.shape[0] // s_x, frame.shape[1] // s_x) for frame in hr[::s_t]])
  if protocol == "realistic":
    return degrade.degrade(hr, seed, space_scale=s_x, time_scale=s_t)
  raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


def bicubic_blend(lr: np.ndarray, s_x: int, s_t: int) -> np.ndarray:
  """The trivial baseline: bicubic x s_x per frame, in-between frames as linear blends of their neighbours."""
  up = np.stack([_resize(frame, frame.shape[0] * s_x, frame.shape[1] * s_x) for frame in lr]).astype(np.float64)
  out = [up[0]]
  for previous, following in zip(up[:-1], up[1:]):
    out += [(1 - j / s_t) * previous + j / s_t * following for j in range(1, s_t + 1)]
  return np.clip(np.round(np.stack(out)), 0, 255).astype(np.uint8)


def score_clip(output: np.ndarray, hr: np.ndarray, lpips: metrics.Lpips) -> dict[str, float]:
  if output.shape != hr.shape:
    raise ValueError(f"the method returned {output.shape}, the ground truth is {hr.shape}")
  return {"psnr": float(np.mean([metrics.psnr(o, t) for o, t in zip(output, hr)])),
          "lpips": float(np.mean(np.concatenate([lpips(output[i:i + 8], hr[i:i + 8])
                                                 for i in range(0, len(hr), 8)]))),
          "frames": len(hr)}


def evaluate(methods: Mapping[str, Method], clips: Mapping[str, np.ndarray], protocol: str, s_x: int, s_t: int,
             seed: int = 0) -> dict[str, dict]:
  """{method: {"clips": {clip: scores}, "mean": scores over clips}} for ground-truth `clips` (uint8 T, H, W, 3)."""
  lpips = metrics.Lpips()
  results = {name: {"clips": {}} for name in methods}
  for index, (clip_name, frames) in enumerate(clips.items()):
    hr = ground_truth(frames, s_x, s_t)
    lr = low_quality(hr, protocol, s_x, s_t, seed + index)
    for name, method in methods.items():
      results[name]["clips"][clip_name] = score_clip(method(lr), hr, lpips)
  for result in results.values():
    scores = list(result["clips"].values())
    result["mean"] = {key: float(np.mean([s[key] for s in scores])) for key in ("psnr", "lpips")}
  return results


def markdown_table(results: Mapping[str, dict]) -> str:
  clips = list(next(iter(results.values()))["clips"])
  header = ["method"] + [f"{clip} PSNR / LPIPS" for clip in clips] + ["mean PSNR ↑", "mean LPIPS ↓"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, result in results.items():
    cells = [f"{result['clips'][c]['psnr']:.2f} / {result['clips'][c]['lpips']:.4f}" for c in clips]
    mean = result["mean"]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean['psnr']:.2f} | {mean['lpips']:.4f} |")
  return "\n".join(lines) + "\n"
