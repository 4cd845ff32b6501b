"""Full-reference frame metrics, on uint8 RGB frames (H, W, 3) with no border crop.

* PSNR: 10 log10(255² / MSE), the MSE over all pixels and the three channels of one frame.
* LPIPS: v0.1 with AlexNet features (pyiqa's `lpips`, what the papers report), frames mapped to [-1, 1]. Frames
  must be at least 32x32.
Scores are per frame; a clip's score is the mean over its frames, a dataset's the mean over its clips (SPEC §9).
"""


import jax
import jax.numpy as jnp
import numpy as np

from diffst_jax.train import perceptual


def psnr(output: np.ndarray, target: np.ndarray) -> float:
  if output.shape != target.shape:
    raise ValueError(f"psnr: frames of different shapes {output.shape} and {target.shape}")
  mse = np.mean(np.square(output.astype(np.float64) - target.astype(np.float64)))
  return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@jax.jit
def _lpips(params: perceptual.LpipsParams, output: jax.Array, target: jax.Array) -> jax.Array:
  unit = lambda frames: frames.astype(jnp.float32) / 127.5 - 1.0  # noqa: E731
  return perceptual.lpips(params, unit(output), unit(target))


class Lpips:
  """LPIPS-Alex over uint8 frames; loads its weights once."""

  def __init__(self):
    self._params = perceptual.load_lpips("alex")

  def __call__(self, output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 each -> (N,) float64."""
    return np.asarray(_lpips(self._params, output, target), np.float64)
