"""The space-time SR evaluation protocol (DESIGN §9), its built-in baseline, scores and comparison strips.

A ground-truth clip of 2N-1 frames (an odd count; an even clip drops its last frame) becomes the N-frame LR input
by one of three protocols, all keeping frames 0, s_t, 2 s_t, ...:
* "bicubic": x s_x bicubic downscaling (PIL, antialiased like MATLAB's imresize), the synthetic benchmark protocol;
* "realistic": the degradations of DESIGN §8 in their "earlier" recipe (second order blur, resize, noise, JPEG,
  video compression), seeded per clip, so every method sees the same LR input (optionally several draws per
  clip, scores averaged);
* "paired": real low-quality frames captured beside the ground truth (RealVSR / MVSR4x layout: a clip of the same
  name and frame count, 1/s_x the size).
Every one of the 2N-1 output frames is scored against the ground truth (frame means, then clip means) with the
metrics of `diffst_jax.eval.metrics` (METRICS).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from diffst_jax.data import degrade
from diffst_jax.eval import metrics
from diffst_jax.ops import resize

PROTOCOLS = ("bicubic", "realistic", "paired")
Method = Callable[[np.ndarray], np.ndarray]  # LR uint8 (N, h, w, 3) -> output uint8 (s_t (N-1) + 1, H, W, 3)


def ground_truth(frames: np.ndarray, s_x: int, s_t: int, name: object = "a ground-truth clip") -> np.ndarray:
  """Crops a clip to what the protocol can reproduce: (frames - 1) a multiple of s_t, H and W multiples of s_x;
  raises, naming the clip (`name`), for one too small to give an input of two frames."""
  usable = (len(frames) - 1) // s_t * s_t + 1
  height, width = frames.shape[1] // s_x * s_x, frames.shape[2] // s_x * s_x
  if usable < s_t + 1 or height == 0 or width == 0:
    raise ValueError(f"{name}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} pixels are too few or "
                     f"too small for x{s_x} space, x{s_t} time: a clip needs at least {s_t + 1} frames of "
                     f"{s_x}x{s_x} pixels")
  return frames[:usable, :height, :width]


def low_quality(hr: np.ndarray, protocol: str, s_x: int, s_t: int, seed: int,
                paired: np.ndarray | None = None) -> np.ndarray:
  """The LR input (N, H/s_x, W/s_x, 3) of a ground-truth clip (2N-1 frames when s_t = 2); "paired" takes it from
  `paired`, the captured low-quality clip."""
  if protocol == "paired":
    if paired is None or len(paired) < len(hr) or paired.shape[1:3] != (hr.shape[1] // s_x, hr.shape[2] // s_x):
      raise ValueError(f"a paired low-quality clip must have the ground truth's {len(hr)} frames at "
                       f"{hr.shape[1] // s_x}x{hr.shape[2] // s_x}, got {None if paired is None else paired.shape}")
    return paired[:len(hr):s_t]
  if protocol == "bicubic":
    return np.stack([resize.resize_bicubic(frame, frame.shape[0] // s_x, frame.shape[1] // s_x)
                     for frame in hr[::s_t]])
  if protocol == "realistic":
    # The recipe every realistic score in docs/RESULTS.md was measured with, kept so that they reproduce.
    return degrade.degrade(hr, seed, space_scale=s_x, time_scale=s_t, recipe=degrade.EARLIER)
  raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


# psnr_key / psnr_between: PSNR of the kept frames (0, s_t, ...) and of the frames made in between them alone.
# colour: the clip's mean colour offset from the ground truth's (metrics.colour_offset), in levels.
METRICS = ("psnr", "psnr_y", "ssim", "lpips", "dists", "tof", "tlp", "psnr_key", "psnr_between", "colour")
HIGHER_IS_BETTER = {"psnr": True, "psnr_y": True, "ssim": True, "lpips": False, "dists": False, "tof": False,
                    "tlp": False, "psnr_key": True, "psnr_between": True, "colour": False}
_BATCH = 8  # frames per LPIPS / DISTS call


class Scorer:
  """All METRICS of an output clip against its ground truth; DISTS only with `dists` (it needs the torch extra)."""

  def __init__(self, dists: bool = True, crop_border: int = 0):
    self.lpips = metrics.Lpips()
    self.dists = metrics.Dists() if dists else None
    self.crop_border = crop_border

  def __call__(self, output: np.ndarray, hr: np.ndarray, time_scale: int = 1,
               hr_flows: np.ndarray | None = None) -> dict[str, float]:
    """The scores of `output`; `hr_flows` (metrics.clip_flows(hr)) spares recomputing the ground truth's flows."""
    if output.shape != hr.shape:
      raise ValueError(f"the method returned {output.shape}, the ground truth is {hr.shape}")
    batched = lambda metric: float(np.mean(np.concatenate(  # noqa: E731
        [metric(output[i:i + _BATCH], hr[i:i + _BATCH]) for i in range(0, len(hr), _BATCH)])))
    frame_mean = lambda metric, **kw: float(np.mean(  # noqa: E731
        [metric(o, t, crop_border=self.crop_border, **kw) for o, t in zip(output, hr)]))
    psnr = np.array([metrics.psnr(o, t, crop_border=self.crop_border) for o, t in zip(output, hr)])
    scores = {"psnr": float(np.mean(psnr)), "psnr_y": frame_mean(metrics.psnr, y_channel=True),
              "ssim": frame_mean(metrics.ssim), "lpips": batched(self.lpips)}
    if time_scale > 1:
      kept = np.arange(len(hr)) % time_scale == 0
      scores.update(psnr_key=float(np.mean(psnr[kept])), psnr_between=float(np.mean(psnr[~kept])))
    if self.dists is not None:
      scores["dists"] = batched(self.dists)
    scores.update(tof=metrics.tof(output, hr, hr_flows), tlp=metrics.tlp(output, hr, self.lpips),
                  colour=metrics.colour_offset(output, hr), frames=len(hr))
    return scores


def evaluate(methods: Mapping[str, Method], clips: Mapping[str, np.ndarray], protocol: str, s_x: int, s_t: int,
             seed: int = 0, scorer: Scorer | None = None, paired: Mapping[str, np.ndarray] | None = None,
             keep_outputs: bool = False, draws: int = 1,
             progress: Callable[[Iterable], Iterable] = iter) -> dict[str, dict]:
  """{method: {"clips": {clip: scores}, "mean": scores over clips}} for ground-truth `clips` (uint8 T, H, W, 3);
  with `keep_outputs`, also {"outputs": {clip: (hr, {method: output of the first draw})}} for comparison strips.

  `draws` > 1 (realistic protocol): each clip is degraded that many times, draw d of clip i with seed
  seed + i + d * len(clips) (so draw 0 is the single-draw protocol), a clip's scores are the means over its draws,
  and {method: {"draws": {clip: [scores of each draw]}}} keeps them. One draw of DESIGN §8's degradations is a
  single blur, resize, noise, JPEG and codec setting per clip, and scores move by more than a dB from one to the
  next. `progress` wraps the list of (clip, draw, method) runs (a progress bar)."""
  if draws < 1 or (draws > 1 and protocol != "realistic"):
    raise ValueError(f"draws must be 1, or more with the realistic protocol (random degradations), got {draws} "
                     f"with {protocol!r}")
  scorer = scorer or Scorer()
  results = {name: {"clips": {}} | ({"draws": {}} if draws > 1 else {}) for name in methods}
  outputs = {}
  truths = {clip_name: ground_truth(frames, s_x, s_t, clip_name) for clip_name, frames in clips.items()}
  per_draw = {(clip_name, name): [] for clip_name in truths for name in methods}
  hr_flows, lr = {}, None
  runs = [(index, clip_name, draw, name) for index, clip_name in enumerate(truths) for draw in range(draws)
          for name in methods]
  for index, clip_name, draw, name in progress(runs):
    hr = truths[clip_name]
    if name == next(iter(methods)):  # the first method of a (clip, draw): degrade once for all methods
      lr = low_quality(hr, protocol, s_x, s_t, seed + index + draw * len(clips),
                       paired.get(clip_name) if paired else None)
    if clip_name not in hr_flows:
      hr_flows = {clip_name: metrics.clip_flows(hr)}  # the ground truth's motion, once per clip
    output = methods[name](lr)
    per_draw[clip_name, name].append(scorer(output, hr, s_t, hr_flows[clip_name]))
    if keep_outputs and draw == 0:
      outputs.setdefault(clip_name, (hr, {}))[1][name] = output
  for (clip_name, name), scores in per_draw.items():
    results[name]["clips"][clip_name] = _means(scores, scores[0]) | {"frames": len(truths[clip_name])}
    if draws > 1:
      results[name]["draws"][clip_name] = scores
  for result in results.values():
    result["mean"] = _means(list(result["clips"].values()), METRICS)
  return results | ({"outputs": outputs} if keep_outputs else {})


def _means(scores: Sequence[Mapping[str, float]], keys) -> dict[str, float]:
  return {key: float(np.mean([s[key] for s in scores])) for key in keys if key in scores[0]}


def markdown_table(results: Mapping[str, dict]) -> str:
  """Mean scores per method, then PSNR / SSIM / LPIPS per clip."""
  methods = {name: result for name, result in results.items() if name != "outputs"}
  first = next(iter(methods.values()))
  keys = [key for key in METRICS if key in first["mean"]]
  arrow = lambda key: "↑" if HIGHER_IS_BETTER[key] else "↓"  # noqa: E731
  lines = ["| method | " + " | ".join(f"{key} {arrow(key)}" for key in keys) + " |", "|---" + "|---:" * len(keys) + "|"]
  for name, result in methods.items():
    lines.append(f"| {name} | " + " | ".join(_format(key, result["mean"][key]) for key in keys) + " |")
  clips = list(first["clips"])
  lines += ["", "| method | " + " | ".join(f"{clip} PSNR / SSIM / LPIPS" for clip in clips) + " |",
            "|---" + "|---" * len(clips) + "|"]
  for name, result in methods.items():
    cells = [" / ".join(_format(key, result["clips"][clip][key]) for key in ("psnr", "ssim", "lpips"))
             for clip in clips]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if "draws" in first:
    lines += ["", "| method | " + " | ".join(f"{clip} PSNR of each draw" for clip in clips) + " |",
              "|---" + "|---" * len(clips) + "|"]
    for name, result in methods.items():
      cells = [", ".join(_format("psnr", scores["psnr"]) for scores in result["draws"][clip]) for clip in clips]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _format(key: str, value: float) -> str:
  return f"{value:.2f}" if key.startswith("psnr") or key == "colour" else f"{value:.4f}"
