"""How much a trained DiffST's DiT restores, against what a linear filter on the latent restores.

For a held-out clip (a folder of HR frames, 2N-1 of them) degraded by evaluate.py's realistic protocol, prints the
mean squared error to the HR latent and the PSNR of the decoded frames for: the LR latent left as it is (the DiT's
output zeroed), a least-squares 3x3 linear filter from the LR latent to the residual fitted on realistically degraded
9-frame windows of the training clips, the checkpoint's DiT, and the HR latent itself (the VAE's ceiling). All four
go through the checkpoint's own frozen VAE.

  python tools/latent_probe.py --checkpoint weights/tiny --train tiny_data/train \
      --clip tests/assets/carphone_heldout_9
"""

import argparse
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from diffst_jax import cli
from diffst_jax.eval import metrics, run
from diffst_jax.io import video
from diffst_jax.models import diffst
from diffst_jax.ops import resize
from diffst_jax.parallel.plan import ExecutionPlan

WINDOW = 9


def read_frames(folder: pathlib.Path) -> np.ndarray:
  paths = video.png_files(folder)
  if not paths:
    raise SystemExit(f"latent_probe: no PNG frames in {folder}")
  return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])


def to_unit(frames: np.ndarray) -> jax.Array:
  """uint8 (N, H, W, 3) -> a batch of one in [-1, 1]."""
  return jnp.asarray(frames[None].astype(np.float32) / 127.5 - 1)


def latent_pair(lr_latent, encode, hr: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(the latent the DiT denoises, of the LR clip; the HR latent)."""
  return np.asarray(lr_latent(to_unit(lr))[0]), np.asarray(encode(to_unit(hr))[0])


def neighbourhoods(z: np.ndarray) -> np.ndarray:
  """(T, H, W, C) -> (T H W, 9 C + 1): each latent pixel's 3x3 neighbourhood (edge-padded) and a constant."""
  t, h, w, _ = z.shape
  padded = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  shifted = [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
  return np.concatenate(shifted + [np.ones((t, h, w, 1), z.dtype)], axis=-1).reshape(t * h * w, -1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--train", required=True, type=pathlib.Path, help="folder of training clips (frame folders)")
  parser.add_argument("--clip", required=True, type=pathlib.Path, help="held-out HR frames, an odd count")
  parser.add_argument("--windows", type=int, default=10, help="9-frame windows per training clip for the fit")
  args = parser.parse_args()
  model = diffst.load(args.checkpoint)
  one_device = ExecutionPlan()
  lr_latent, encode, decode = (jax.jit(functools.partial(fn, one_device))
                               for fn in (model.lr_latent, model.vae.encode, model.vae.decode))
  s_x, s_t = model.config.space_scale, model.config.time_scale

  def degrade(hr: np.ndarray, seed: int) -> np.ndarray:
    return run.low_quality(hr, "realistic", s_x, s_t, seed=seed)

  features, residuals = [], []
  for index, clip_dir in enumerate(sorted(p for p in args.train.iterdir() if p.is_dir())):
    frames = read_frames(clip_dir)
    for window, start in enumerate(range(0, len(frames) - WINDOW + 1, WINDOW)[:args.windows]):
      hr = frames[start:start + WINDOW]
      z_lr, z_hr = latent_pair(lr_latent, encode, hr, degrade(hr, seed=1000 * index + window))
      features.append(neighbourhoods(z_lr))
      residuals.append((z_hr - z_lr).reshape(-1, z_lr.shape[-1]))
  x, y = np.concatenate(features).astype(np.float64), np.concatenate(residuals).astype(np.float64)
  weights = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)

  hr = run.ground_truth(read_frames(args.clip), s_x, s_t)
  lr = degrade(hr, seed=0)
  z_lr, z_hr = latent_pair(lr_latent, encode, hr, lr)
  z_dit = np.asarray(model.denoised_latent(one_device, to_unit(lr))[0])
  z_linear = z_lr + (neighbourhoods(z_lr) @ weights).reshape(z_lr.shape).astype(np.float32)
  print("| latent | MSE to the HR latent | decoded PSNR dB |\n|---|---:|---:|")
  for name, z in (("LR latent (DiT output zeroed)", z_lr), ("3x3 linear filter, least squares", z_linear),
                  (f"the DiT of {args.checkpoint}", z_dit), ("HR latent (the VAE's ceiling)", z_hr)):
    frames = np.clip(np.round((np.asarray(decode(jnp.asarray(z)[None])[0]) + 1) * 127.5), 0, 255).astype(np.uint8)
    psnr = np.mean([metrics.psnr(out, gt) for out, gt in zip(frames, hr)])
    print(f"| {name} | {np.mean((z - z_hr) ** 2):.5f} | {psnr:.2f} |")
  print(f"| bicubic x4 + linear blending (pixels) | | "
        f"{np.mean([metrics.psnr(o, g) for o, g in zip(resize.bicubic_blend(lr, s_x, s_t), hr)]):.2f} |")


if __name__ == "__main__":
  cli.script(main)
