"""Full-reference frame metrics and temporal metrics, on uint8 RGB frames (H, W, 3) or clips (T, H, W, 3).

Conventions (pyiqa's, whose calibration scores the tests reproduce):
* PSNR: 10 log10(255² / MSE), the MSE over all pixels and the three RGB channels of one frame (pyiqa `psnr`), or over
  the luminance Y = 0.299 R + 0.587 G + 0.114 B (`y_channel=True`, pyiqa `psnry`).
* SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), "valid" filtering, K1 = 0.01, K2 = 0.03 for data
  range 255, the contrast-structure term clipped at 0, averaged over positions; on Y rounded to integers by default
  (pyiqa `ssim`) or on the RGB channels averaged (`y_channel=False`, pyiqa `ssimc`); no downsampling.
* LPIPS: v0.1 with AlexNet features (pyiqa's `lpips`, what the papers report), frames mapped to [-1, 1]; frames must
  be at least 32x32. DISTS: Ding et al. 2020 (pyiqa's `dists`).
* `crop_border=b` leaves b pixels out on every side before PSNR / SSIM (the VSR convention of cropping the scale).
* tOF (TecoGAN): the mean absolute difference, in pixels, between the optical flow of consecutive output frames and
  that of the ground truth; flow by Horn-Schunck on Y (alpha = 15 in 0..255 units, 100 iterations), not TecoGAN's
  Farneback, so values are comparable between methods here, not with published tOF.
* tLP (TecoGAN): the mean |LPIPS(out_t, out_t+1) - LPIPS(gt_t, gt_t+1)| over consecutive frames.
Scores are per frame (per pair of frames for tOF, tLP); a clip's score is the mean over its frames, a dataset's the
mean over its clips (DESIGN §9).
"""

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from diffst_jax.models import perceptual
from diffst_jax.parallel import plan as plan_lib

_LUMA = np.array([0.299, 0.587, 0.114])


def _pair(name: str, output: np.ndarray, target: np.ndarray, y_channel: bool, crop_border: int):
  """Both frames as float64 in 0..255, cropped, and as (H, W, C) with C = 1 for luminance."""
  if output.shape != target.shape:
    raise ValueError(f"{name}: frames of different shapes {output.shape} and {target.shape}")
  if output.ndim != 3 or output.shape[-1] != 3:
    raise ValueError(f"{name}: expected RGB frames (H, W, 3), got {output.shape}")
  frames = []
  for frame in (output, target):
    frame = frame.astype(np.float64)
    if crop_border:
      frame = frame[crop_border:-crop_border, crop_border:-crop_border]
    frames.append(frame @ _LUMA[:, None] if y_channel else frame)
  return frames


def psnr(output: np.ndarray, target: np.ndarray, *, y_channel: bool = False, crop_border: int = 0) -> float:
  output, target = _pair("psnr", output, target, y_channel, crop_border)
  mse = np.mean(np.square(output - target))
  return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def colour_offset(output: np.ndarray, target: np.ndarray) -> float:
  """How far a clip's (or frame's) mean colour is from its ground truth's: the largest per-channel difference of the
  means over all pixels, in 0-255 levels (a colour cast that PSNR spreads thin over the frame)."""
  if output.shape != target.shape or output.shape[-1] != 3:
    raise ValueError(f"colour_offset: expected two RGB arrays of one shape, got {output.shape} and {target.shape}")
  means = [np.asarray(x, np.float64).reshape(-1, 3).mean(0) for x in (output, target)]
  return float(np.abs(means[0] - means[1]).max())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  offsets = np.arange(size) - (size - 1) / 2
  window = np.exp(-offsets**2 / (2 * sigma**2))
  return window / window.sum()


def _filter_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
  """Separable "valid" correlation of (H, W, C) with the 2D window outer(window, window)."""
  for axis in (0, 1):
    x = np.tensordot(sliding_window_view(x, len(window), axis=axis), window, axes=([-1], [0]))
  return x


def ssim(output: np.ndarray, target: np.ndarray, *, y_channel: bool = True, crop_border: int = 0) -> float:
  x, y = _pair("ssim", output, target, y_channel, crop_border)
  if y_channel:  # luminance rounded to integers, as pyiqa (and MATLAB's SSIM on uint8 luminance) has it
    x, y = np.round(x), np.round(y)
  if min(x.shape[:2]) < 11:
    raise ValueError(f"ssim: frames must be at least 11x11 after the border crop, got {x.shape[:2]}")
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  window = _gaussian_window()
  mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
  var_x = _filter_valid(x * x, window) - mu_x**2
  var_y = _filter_valid(y * y, window) - mu_y**2
  covariance = _filter_valid(x * y, window) - mu_x * mu_y
  contrast_structure = np.maximum((2 * covariance + c2) / (var_x + var_y + c2), 0)
  return float(np.mean((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * contrast_structure))


# Scores are computed on one device.
@jax.jit
def _lpips(params: perceptual.LpipsParams, output: jax.Array, target: jax.Array) -> jax.Array:
  return perceptual.lpips(plan_lib.ExecutionPlan(), params, _unit(output), _unit(target))


@jax.jit
def _dists(params: perceptual.DistsParams, output: jax.Array, target: jax.Array) -> jax.Array:
  return perceptual.dists(plan_lib.ExecutionPlan(), params, _unit(output), _unit(target))


def _unit(frames: jax.Array) -> jax.Array:
  return frames.astype(jnp.float32) / 127.5 - 1.0


class Lpips:
  """LPIPS-Alex over uint8 frames; loads its weights once."""

  def __init__(self):
    self._params = perceptual.load_lpips("alex")

  def __call__(self, output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 each -> (N,) float64."""
    return np.asarray(_lpips(self._params, output, target), np.float64)


class Dists:
  """DISTS over uint8 frames; loads its weights once (needs the torch extra, like training with DISTS)."""

  def __init__(self):
    self._params = perceptual.load_dists()

  def __call__(self, output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 each -> (N,) float64."""
    return np.asarray(_dists(self._params, output, target), np.float64)


def horn_schunck_flow(first: np.ndarray, second: np.ndarray, alpha: float = 15.0,
                      iterations: int = 100) -> np.ndarray:
  """Dense optical flow (H, W, 2) as (dx, dy) in pixels from one luminance frame (H, W), 0..255, to the next."""
  first, second = first.astype(np.float64), second.astype(np.float64)
  # Derivatives averaged over the 2x2x2 cube between the two frames (Horn & Schunck 1981).
  pad = lambda f: np.pad(f, ((0, 1), (0, 1)), mode="edge")  # noqa: E731
  a, b = pad(first), pad(second)
  dx = lambda f: (f[:-1, 1:] - f[:-1, :-1] + f[1:, 1:] - f[1:, :-1]) / 2  # noqa: E731
  dy = lambda f: (f[1:, :-1] - f[:-1, :-1] + f[1:, 1:] - f[:-1, 1:]) / 2  # noqa: E731
  ix, iy = (dx(a) + dx(b)) / 2, (dy(a) + dy(b)) / 2
  it = np.mean([b[i:i + first.shape[0], j:j + first.shape[1]] - a[i:i + first.shape[0], j:j + first.shape[1]]
                for i in (0, 1) for j in (0, 1)], axis=0)
  u, v = np.zeros_like(first), np.zeros_like(first)
  denominator = alpha**2 + ix**2 + iy**2
  for _ in range(iterations):
    u_mean, v_mean = _neighbour_mean(u), _neighbour_mean(v)
    update = (ix * u_mean + iy * v_mean + it) / denominator
    u, v = u_mean - ix * update, v_mean - iy * update
  return np.stack([u, v], axis=-1)


def _neighbour_mean(f: np.ndarray) -> np.ndarray:
  """Horn & Schunck's weighted mean of the 8 neighbours (1/6 edge, 1/12 corner), edges replicated."""
  p = np.pad(f, 1, mode="edge")
  edges = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
  corners = p[:-2, :-2] + p[:-2, 2:] + p[2:, :-2] + p[2:, 2:]
  return edges / 6 + corners / 12


def _check_clips(name: str, output: np.ndarray, target: np.ndarray) -> None:
  if output.shape != target.shape or output.ndim != 4 or output.shape[-1] != 3 or len(output) < 2:
    raise ValueError(f"{name}: expected two RGB clips (T >= 2, H, W, 3) of one shape, got {output.shape} and "
                     f"{target.shape}")


def clip_flows(clip: np.ndarray) -> np.ndarray:
  """The Horn-Schunck flows (T - 1, H, W, 2) between consecutive frames of a clip (T, H, W, 3) uint8, as tOF takes
  them: a ground truth's can be computed once and scored against every method."""
  luma = clip.astype(np.float64) @ _LUMA
  return np.stack([horn_schunck_flow(luma[t], luma[t + 1]) for t in range(len(luma) - 1)])


def tof(output: np.ndarray, target: np.ndarray, target_flows: np.ndarray | None = None) -> float:
  """tOF of a clip (T, H, W, 3) uint8 against its ground truth; 0 when the motion is the ground truth's.
  `target_flows`: `clip_flows(target)`, when already computed."""
  _check_clips("tof", output, target)
  target_flows = clip_flows(target) if target_flows is None else target_flows
  return float(np.mean(np.abs(clip_flows(output) - target_flows)))


def tlp(output: np.ndarray, target: np.ndarray, lpips: Lpips) -> float:
  """tLP of a clip (T, H, W, 3) uint8 against its ground truth."""
  _check_clips("tlp", output, target)
  return float(np.mean(np.abs(lpips(output[:-1], output[1:]) - lpips(target[:-1], target[1:]))))
