"""Training degradations (DESIGN §8): space first (RealBasicVSR / Real-ESRGAN second order, parameters drawn per clip
but for what the recipe redraws per frame), then time (keep every s_t-th frame).

Clips are uint8 (T, H, W, 3). Every random draw comes from the `np.random.Generator` passed in, so a clip seeded
per example degrades identically every time. A `Recipe` holds the switches by which the pipeline follows DOVE's
(github zhengchen1999/DOVE, finetune/configs/degradation.yaml and finetune/datasets/degradation.py) or this
project's earlier one, which evaluate.py's realistic protocol keeps so that reported numbers reproduce; the
differences still open are listed in docs/TRAINING.md.
"""

import dataclasses
import io
import math

import av
import cv2
import numpy as np
import scipy.signal
import scipy.special
from PIL import Image

from diffst_jax.ops.resize import resize_bicubic


@dataclasses.dataclass(frozen=True)
class Order:
  """The parameters of one degradation order."""

  blur_prob: float
  blur_sigma: tuple[float, float]
  resize_prob: tuple[float, float, float]  # up, down, keep
  resize_scale: tuple[float, float]
  gaussian_noise_prob: float  # else Poisson
  noise_sigma: tuple[float, float]  # on the 0-255 scale
  poisson_scale: tuple[float, float]
  gray_noise_prob: float
  jpeg_quality: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Switches between DOVE's degradations (the defaults) and this project's earlier ones (`EARLIER`)."""

  first_order_video: bool = True  # DOVE compresses the video in both orders; earlier: in the second only
  # The frame rate the codec stream is opened at. A bitrate is per second, so each frame gets bitrate / codec_rate
  # bits: DOVE opens it at 1 fps (`add_stream(codec, rate=1)`), 1e4-1e5 bits per frame; earlier 25 fps.
  codec_rate: int = 1
  # The blur kernels: "dove" draws DOVE's seven kinds at its odds (KERNEL_ODDS), the generalized Gaussian
  # exp(-0.5 d^beta) and the plateau 1 / (1 + d^beta) with d = x^T S^-1 x and beta redrawn per frame between 1 and
  # a draw per clip (mmagic's blur_kernels.py, which DOVE copies); "earlier": sinc or one of four kinds at equal
  # odds, the generalized Gaussian exp(-0.5 d^(beta / 2)), one beta ~ U(0.5, 4) per clip.
  kernels: str = "dove"
  # How a blur extends the frame: "reflect" mirrors about the edge pixel (OpenCV's default, filter2D's in DOVE);
  # "symmetric" repeats it.
  blur_border: str = "reflect"
  # Poisson noise: "dove" counts on the 0-255 levels of the rounded frame (gray noise from its luma; mmagic's);
  # "earlier" on [0, 1] (BasicSR's, about 16x stronger at one scale; gray noise from the channels' mean).
  poisson: str = "dove"
  # The final sinc filter's cutoff: DOVE's U[pi/3, pi] (None: the blur kernels' rule, pi/5 for sizes of 13 and up).
  final_sinc_cutoff: tuple[float, float] | None = (math.pi / 3, math.pi)
  # Resizing: "opencv" as DOVE (bilinear, area or bicubic without antialiasing, even sizes, no bound); "pil"
  # antialiased when shrinking, at most 4x the LR size.
  resize: str = "opencv"
  # JPEG: "opencv" as DOVE (the quality drifting by up to JPEG_QUALITY_STEP from frame to frame, the RGB frame
  # handed to OpenCV's encoder as if it were BGR, values truncated to 8 bits); "pil" one quality per clip.
  jpeg: str = "opencv"


DOVE = Recipe()
EARLIER = Recipe(first_order_video=False, codec_rate=25, kernels="earlier", blur_border="symmetric", poisson="earlier",
                 final_sinc_cutoff=None, resize="pil", jpeg="pil")
RECIPES = {"dove": DOVE, "earlier": EARLIER}
# Clean input: each frame bicubic-downscaled (PIL's antialiased bicubic, evaluate.py's "bicubic" protocol).
BICUBIC = "bicubic"


def recipe(name: str) -> Recipe:
  if name not in RECIPES:
    raise ValueError(f"data.degradation is {name!r}; expected one of {', '.join(RECIPES)}")
  return RECIPES[name]


def mixture(spec: str) -> tuple[str, ...]:
  """data.degradation: a recipe of RECIPES, "bicubic", or several joined by "+" ("dove+earlier+bicubic"), one drawn
  per example at equal odds."""
  names = tuple(spec.split("+"))
  if any(name not in RECIPES and name != BICUBIC for name in names) or len(set(names)) < len(names):
    raise ValueError(f"data.degradation is {spec!r}; expected one of {', '.join([*RECIPES, BICUBIC])}, or several "
                     "of them joined by '+'")
  return names


def degrade_space_by(name: str, clip: np.ndarray, rng: np.random.Generator, scale: int = 4) -> np.ndarray:
  """`degrade_space` by the recipe `name` of RECIPES, or each frame bicubic-downscaled for BICUBIC."""
  if name == BICUBIC:
    return np.stack([resize_bicubic(frame, frame.shape[0] // scale, frame.shape[1] // scale) for frame in clip])
  return degrade_space(clip, rng, scale, recipe(name))


FIRST = Order(1.0, (0.2, 3.0), (0.2, 0.7, 0.1), (0.15, 1.5), 0.5, (1.0, 30.0), (0.05, 3.0), 0.4, (30, 95))
SECOND = Order(0.8, (0.2, 1.5), (0.3, 0.4, 0.3), (0.3, 1.2), 0.5, (1.0, 25.0), (0.05, 2.5), 0.4, (30, 95))
KERNEL_SIZES = tuple(range(7, 22, 2))
# DOVE's degradation.yaml: kernel_list and kernel_prob (mmagic's names).
KERNEL_ODDS = {"iso": 0.405, "aniso": 0.225, "generalized_iso": 0.108, "generalized_aniso": 0.027,
               "plateau_iso": 0.108, "plateau_aniso": 0.027, "sinc": 0.1}
GENERALIZED_BETA = (0.5, 4.0)  # beta_gaussian
PLATEAU_BETA = (1.0, 2.0)  # beta_plateau
CODECS = ("libx264", "h264", "mpeg4")
BITRATE = (1e4, 1e5)
FINAL_SINC_PROB = 0.8


# ---------------------------------------------------------------------------------------------------------------
# Blur kernels


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  r = np.arange(size) - size // 2
  return np.meshgrid(r, r, indexing="xy")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float, power: float = 1.0,
                    plateau: bool = False) -> np.ndarray:
  """exp(-0.5 d^power) (a Gaussian at power 1, generalized otherwise), or with `plateau` 1 / (1 + d^power), with
  d = x^T S^-1 x, S = R diag(sigma_x^2, sigma_y^2) R^T and R the rotation by `angle`; normalized to sum 1."""
  x, y = _grid(size)
  c, s = math.cos(angle), math.sin(angle)
  u, v = c * x + s * y, -s * x + c * y
  d2 = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
  kernel = 1 / (1 + d2 ** power) if plateau else np.exp(-0.5 * d2 ** power)
  return kernel / kernel.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
  """A circular low-pass (2D sinc / Airy) filter with cutoff in radians per pixel, normalized to sum 1."""
  x, y = _grid(size)
  r = np.hypot(x, y)
  with np.errstate(divide="ignore", invalid="ignore"):
    kernel = cutoff * scipy.special.j1(cutoff * r) / (2 * np.pi * r)
  kernel[r == 0] = cutoff ** 2 / (4 * np.pi)
  return kernel / kernel.sum()


def _sinc_cutoff(rng: np.random.Generator, size: int) -> float:
  return rng.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi)


def random_kernel(rng: np.random.Generator, sigma: tuple[float, float]) -> np.ndarray:
  """The earlier recipe's kernel of a clip."""
  size = int(rng.choice(KERNEL_SIZES))
  if rng.random() < 0.1:
    return sinc_kernel(size, _sinc_cutoff(rng, size))
  kind = rng.choice(["iso", "aniso", "generalized", "plateau"])
  sx = rng.uniform(*sigma)
  sy = sx if kind == "iso" else rng.uniform(*sigma)
  beta = rng.uniform(0.5, 4.0) if kind in ("generalized", "plateau") else 2.0
  plateau = kind == "plateau"
  return gaussian_kernel(size, sx, sy, rng.uniform(0, math.pi), beta if plateau else beta / 2, plateau)


def dove_kernels(rng: np.random.Generator, sigma: tuple[float, float], frames: int) -> tuple[str, np.ndarray]:
  """DOVE's kernel kind of a clip and its kernels, (1, k, k) for all `frames` frames or (frames, k, k), one each:
  size, sigmas, angle and a beta bound b are drawn once; a generalized or plateau kernel draws its beta per frame
  between 1 and b (mmagic's samplers, given the clip's b as both ends of their range, draw from [b, 1] or [1, b])."""
  kinds = list(KERNEL_ODDS)
  kind = kinds[rng.choice(len(kinds), p=list(KERNEL_ODDS.values()))]
  size = int(rng.choice(KERNEL_SIZES))
  if kind == "sinc":
    return kind, sinc_kernel(size, _sinc_cutoff(rng, size))[None]
  sx = rng.uniform(*sigma)
  isotropic = kind in ("iso", "generalized_iso", "plateau_iso")
  sy, angle = (sx, 0.0) if isotropic else (rng.uniform(*sigma), rng.uniform(-math.pi, math.pi))
  if kind in ("iso", "aniso"):
    return kind, gaussian_kernel(size, sx, sy, angle)[None]
  plateau = kind.startswith("plateau")
  bound = rng.uniform(*(PLATEAU_BETA if plateau else GENERALIZED_BETA))
  betas = rng.uniform(min(1.0, bound), max(1.0, bound), frames)
  return kind, np.stack([gaussian_kernel(size, sx, sy, angle, beta, plateau) for beta in betas])


def blur(clip: np.ndarray, kernel: np.ndarray, border: str = "reflect") -> np.ndarray:
  """Filters every channel of a float clip (T, H, W, 3) with a 2D kernel (k, k), or frame t with kernel[t] of
  (T, k, k); the frame extended by `border` (numpy's pad modes: "reflect" about the edge pixel, as OpenCV's
  default; "symmetric" repeating it).
  Through the FFT: direct correlation was three quarters of a training window's preparation, which the FFT makes
  2.5x faster (bench/data.py). It differs by float rounding (1e-4 on the 0-255 scale), so an exact 0 under a
  non-negative kernel can come out as -1e-4."""
  radius = kernel.shape[-1] // 2
  padded = np.pad(clip, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode=border)
  kernels = kernel if kernel.ndim == 3 else kernel[None]
  flipped = kernels[:, ::-1, ::-1, None].astype(clip.dtype)
  return scipy.signal.fftconvolve(padded, flipped, mode="valid", axes=(1, 2))


# ---------------------------------------------------------------------------------------------------------------
# Resizing, noise, compression


_RESAMPLE = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.BOX)


def resize(clip: np.ndarray, height: int, width: int, mode: int) -> np.ndarray:
  """Resizes a float clip in [0, 255] frame by frame with PIL (bilinear, bicubic or area)."""
  out = [np.asarray(Image.fromarray(frame.astype(np.float32)[..., c], mode="F").resize((width, height), mode))
         for frame in clip for c in range(3)]
  return np.stack(out).reshape(len(clip), 3, height, width).transpose(0, 2, 3, 1)


LUMA = np.array([0.299, 0.587, 0.114])  # OpenCV's RGB -> gray, which DOVE's gray Poisson noise reads


def add_noise(clip: np.ndarray, rng: np.random.Generator, order: Order, poisson: str = "dove") -> np.ndarray:
  """Gaussian or Poisson noise (`poisson`: Recipe.poisson). The noise itself comes from a generator of its own,
  seeded from `rng`: NumPy's Poisson sampler takes a number of draws that depends on the values, so sampling it
  from `rng` let a float rounding anywhere earlier (another blur implementation, another SciPy) change every later
  draw of the degradation (its resizes, JPEG quality, codec and bitrate)."""
  gray = rng.random() < order.gray_noise_prob
  shape = (*clip.shape[:-1], 1) if gray else clip.shape
  noise_rng = np.random.default_rng(rng.integers(2**63))
  if rng.random() < order.gaussian_noise_prob:
    return clip + noise_rng.normal(0.0, rng.uniform(*order.noise_sigma), shape)
  scale = rng.uniform(*order.poisson_scale)
  if poisson == "dove":  # n = Poisson(x v) / v - x on the frame's 0-255 levels x, v = 2^ceil(log2(#distinct x))
    values = np.round(np.clip(clip, 0, 255))
    base = np.round(values @ LUMA)[..., None] if gray else values
    levels = 2.0 ** np.ceil(np.log2(len(np.unique(base))))
    return clip + (noise_rng.poisson(base * levels) / levels - base) * scale
  values = np.clip(clip, 0, 255) / 255
  base = values.mean(-1, keepdims=True) if gray else values
  distinct = np.count_nonzero(np.bincount((base * 255).astype(np.uint8).ravel(), minlength=256))
  levels = 2 ** np.ceil(np.log2(max(distinct, 2)))
  noisy = noise_rng.poisson(base * levels) / levels
  return clip + (noisy - base) * scale * 255


_OPENCV_RESIZE = (cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC)  # DOVE's bilinear, area, bicubic
JPEG_QUALITY_STEP = 3  # DOVE's quality_step


def resize_opencv(clip: np.ndarray, height: int, width: int, mode: int) -> np.ndarray:
  """Resizes a float clip frame by frame with OpenCV (`mode`: one of _OPENCV_RESIZE), without antialiasing;
  bicubic overshoot is clipped to [0, 255], as OpenCV saturates DOVE's 8-bit frames."""
  return np.clip(np.stack([cv2.resize(frame, (width, height), interpolation=mode)
                           for frame in clip.astype(np.float32)]), 0, 255)


def drifting_qualities(rng: np.random.Generator, frames: int, quality: tuple[int, int]) -> list[int]:
  """DOVE's JPEG quality of each frame: a start in `quality`, then steps of up to JPEG_QUALITY_STEP, kept in it."""
  current, qualities = rng.uniform(*quality), []
  for _ in range(frames):
    qualities.append(int(round(current)))
    current = round(float(np.clip(current + rng.uniform(-JPEG_QUALITY_STEP, JPEG_QUALITY_STEP), *quality)))
  return qualities


def jpeg_opencv(clip: np.ndarray, qualities: list[int]) -> np.ndarray:
  """Each frame through OpenCV's JPEG at its quality, as DOVE does it: truncated to 8 bits, and given in RGB order
  where OpenCV reads BGR (so red and blue trade places in its colour conversion; the frame comes back in RGB)."""
  out = []
  for frame, quality in zip(np.clip(clip, 0, 255).astype(np.uint8), qualities):
    _, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    out.append(cv2.imdecode(data, cv2.IMREAD_COLOR))
  return np.stack(out).astype(np.float32)


def jpeg(clip: np.ndarray, quality: int) -> np.ndarray:
  out = []
  for frame in np.clip(np.round(clip), 0, 255).astype(np.uint8):
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    out.append(np.asarray(Image.open(buffer).convert("RGB")))
  return np.stack(out).astype(np.float32)


def encode_video(clip: np.ndarray, codec: str, bitrate: float, rate: int) -> bytes:
  """The clip as an .mp4 stream of `codec` at `bitrate` bits/s, opened at `rate` frames/s (PyAV, in memory)."""
  frames = np.clip(np.round(clip), 0, 255).astype(np.uint8)
  _, h, w, _ = frames.shape
  padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p needs even sizes
  buffer = io.BytesIO()
  with av.open(buffer, "w", format="mp4") as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = padded.shape[2], padded.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.bit_rate = int(bitrate)
    if stream.codec_context.name == "libx264":  # also what "h264" opens
      # x264's assembly gives other bits for the same tiny clip from run to run (measured on 32 and 64 px clips at
      # 1e4 bit/s, 3 at a time: 9 and 18 of 64 encodings differed); its C code does not, at ~10 ms a clip.
      stream.options = {"x264-params": "asm=0"}
    for frame in padded:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  return buffer.getvalue()


def compress_video(clip: np.ndarray, codec: str, bitrate: float, rate: int = DOVE.codec_rate) -> np.ndarray:
  """The clip encoded by `encode_video` and decoded back."""
  t, h, w, _ = clip.shape
  with av.open(io.BytesIO(encode_video(clip, codec, bitrate, rate))) as container:
    decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  return np.stack(decoded)[:t, :h, :w].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# The pipeline


def _compression(clip: np.ndarray, rng: np.random.Generator, recipe: Recipe) -> np.ndarray:
  return compress_video(clip, rng.choice(CODECS), rng.uniform(*BITRATE), recipe.codec_rate)


def _one_order(clip: np.ndarray, rng: np.random.Generator, order: Order, base_size: tuple[int, int],
               video: bool, recipe: Recipe) -> np.ndarray:
  """One order: blur, resize, noise, JPEG, and (`video`) video compression."""
  if rng.random() < order.blur_prob:
    if recipe.kernels == "dove":
      clip = blur(clip, dove_kernels(rng, order.blur_sigma, len(clip))[1], recipe.blur_border)
    else:
      clip = blur(clip, random_kernel(rng, order.blur_sigma), recipe.blur_border)
  direction = rng.choice(3, p=order.resize_prob)
  scale = (rng.uniform(1, order.resize_scale[1]) if direction == 0 else
           rng.uniform(order.resize_scale[0], 1) if direction == 1 else 1.0)
  if recipe.resize == "opencv":
    h, w = (max(2, 2 * int(size * scale / 2)) for size in clip.shape[1:3])
    clip = resize_opencv(clip, h, w, _OPENCV_RESIZE[rng.integers(3)])
  else:
    h = max(int(clip.shape[1] * scale), 4)
    w = max(int(clip.shape[2] * scale), 4)
    clip = resize(clip, min(h, 4 * base_size[0]), min(w, 4 * base_size[1]), _RESAMPLE[rng.integers(3)])
  clip = np.clip(add_noise(clip, rng, order, recipe.poisson), 0, 255)
  if recipe.jpeg == "opencv":
    clip = jpeg_opencv(clip, drifting_qualities(rng, len(clip), order.jpeg_quality))
  else:
    clip = jpeg(clip, rng.integers(order.jpeg_quality[0], order.jpeg_quality[1] + 1))
  return _compression(clip, rng, recipe) if video else clip


def degrade_space(clip: np.ndarray, rng: np.random.Generator, scale: int = 4, recipe: Recipe = DOVE) -> np.ndarray:
  """HR uint8 clip (T, H, W, 3) -> LR uint8 clip (T, H/scale, W/scale, 3) by the second-order degradation."""
  t, h, w, _ = clip.shape
  lr_size = (h // scale, w // scale)
  x = clip.astype(np.float32)
  x = _one_order(x, rng, FIRST, lr_size, recipe.first_order_video, recipe)
  x = _one_order(x, rng, SECOND, lr_size, False, recipe)

  def compression(x):
    return _compression(x, rng, recipe)

  def final_resize(x):
    if recipe.resize == "opencv":
      x = resize_opencv(x, *lr_size, _OPENCV_RESIZE[rng.integers(3)])
    else:
      x = resize(x, *lr_size, _RESAMPLE[rng.integers(3)])
    if rng.random() < FINAL_SINC_PROB:
      size = int(rng.choice(KERNEL_SIZES))
      cutoff = rng.uniform(*recipe.final_sinc_cutoff) if recipe.final_sinc_cutoff else _sinc_cutoff(rng, size)
      x = blur(x, sinc_kernel(size, cutoff), recipe.blur_border)
    return x

  steps = [compression, final_resize]
  if rng.random() < 0.5:
    steps.reverse()
  for step in steps:
    x = step(x)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def degrade_time(clip: np.ndarray, time_scale: int) -> np.ndarray:
  """Keeps frames 0, s_t, 2 s_t, ... (the low-frame-rate input of the space-time task)."""
  return clip[::time_scale]


def degrade(clip: np.ndarray, seed: int, space_scale: int = 4, time_scale: int = 2,
            recipe: Recipe = DOVE) -> np.ndarray:
  """Space then time degradation of an HR uint8 clip, deterministic for `seed`."""
  return degrade_time(degrade_space(clip, np.random.default_rng(seed), space_scale, recipe), time_scale)
