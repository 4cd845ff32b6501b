"""How well a checkpoint's VAE reconstructs clips (issue 26: 30 dB and the mean colour within 2 levels on scenes it
never saw): encodes and decodes the first --frames frames of each clip, centre-cropped to --size, and prints per
clip and over all the PSNR and the largest per-channel difference of the mean colour (0-255 levels). Beside them:
the PSNR of the bicubic baseline (clean protocol: the odd frames bicubic x4 down, then bicubic x4 up with linear
blending in time), and of the reconstruction with the wavelet colour fix against that baseline, the best a DiffST
with this VAE and that fix can do (its DiT returning the ground truth's latent).

  python tools/vae_reconstruction.py --checkpoint weights/tiny --clips data/heldout_stills --size 128x192 --frames 9

--clips: a folder of PNG frames (one clip) or a folder of such folders.
"""

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli  # noqa: E402
from diffst_jax.eval import metrics, run  # noqa: E402
from diffst_jax.io import video  # noqa: E402
from diffst_jax.ops import resize  # noqa: E402
from diffst_jax.parallel.plan import ExecutionPlan  # noqa: E402


def clip_folders(folder: pathlib.Path) -> list[pathlib.Path]:
  if not folder.is_dir():
    raise ValueError(f"--clips {folder}: not a folder")
  if video.png_files(folder):
    return [folder]
  clips = sorted(p for p in folder.iterdir() if p.is_dir() and video.png_files(p))
  if not clips:
    raise ValueError(f"--clips {folder}: no PNG frames in it or in its subfolders")
  return clips


def read_clip(folder: pathlib.Path, frames: int, size: tuple[int, int]) -> np.ndarray:
  """The first `frames` frames, centre-cropped to `size`, uint8 (T, H, W, 3)."""
  paths = video.png_files(folder)
  if len(paths) < frames:
    raise ValueError(f"{folder}: {len(paths)} frames, --frames {frames} asked for")
  clip = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[:frames]])
  height, width = size
  if clip.shape[1] < height or clip.shape[2] < width:
    raise ValueError(f"{folder}: frames of {clip.shape[2]}x{clip.shape[1]} are smaller than --size {height}x{width}")
  top, left = (clip.shape[1] - height) // 2, (clip.shape[2] - width) // 2
  return clip[:, top:top + height, left:left + width]


def reconstruct(vae, clip: np.ndarray) -> np.ndarray:
  x = clip[None].astype(np.float32) / 127.5 - 1.0
  one_device = ExecutionPlan()
  y = np.asarray(vae.decode(one_device, vae.encode(one_device, x)))[0]
  return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr(output: np.ndarray, clip: np.ndarray) -> float:
  """dB, RGB, the mean of the frames'."""
  return float(np.mean([metrics.psnr(o, c) for o, c in zip(output, clip)]))


def scores(clip: np.ndarray, output: np.ndarray) -> tuple[float, float, float, float]:
  """PSNR and the largest per-channel difference of the mean colour (levels) of `output`; the bicubic baseline's
  PSNR, and the PSNR of `output` after the wavelet colour fix against the baseline."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from diffst_jax.ops import color_fix  # pylint: disable=import-outside-toplevel

  baseline = resize.bicubic_blend(run.low_quality(clip, "bicubic", 4, 2, seed=0), 4, 2)
  fixed = np.asarray(color_fix.color_fix("wavelet", jnp.asarray(output, jnp.float32), jnp.asarray(baseline,
                                                                                                 jnp.float32)))
  fixed = np.clip(np.round(fixed), 0, 255).astype(np.uint8)
  return psnr(output, clip), metrics.colour_offset(output, clip), psnr(baseline, clip), psnr(fixed, clip)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="our checkpoint directory (a DiffST's or an autoencoder's)")
  parser.add_argument("--clips", required=True)
  parser.add_argument("--size", default="128x192", help="HEIGHTxWIDTH of the centre crop")
  parser.add_argument("--frames", type=int, default=9, help="4k+1 frames from the start of each clip")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)

  def work() -> None:
    height, width = (int(n) for n in args.size.lower().split("x"))
    if (args.frames - 1) % 4:
      raise ValueError(f"--frames {args.frames}: the VAE takes 4k+1 frames (5, 9, 13, ...)")
    clips = clip_folders(pathlib.Path(args.clips))
    from diffst_jax.convert.vae import load_vae  # pylint: disable=import-outside-toplevel  # JAX after the checks
    from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel

    vae = diffst.load(args.checkpoint, "vae") if diffst.is_diffst(args.checkpoint) else load_vae(args.checkpoint)
    rows = []
    for folder in clips:
      clip = read_clip(folder, args.frames, (height, width))
      rows.append((folder.name, *scores(clip, reconstruct(vae, clip))))
      print(f"{folder.name}\t{rows[-1][1]:.2f} dB\tmean colour off by {rows[-1][2]:.1f}\tbaseline "
            f"{rows[-1][3]:.2f} dB\twavelet-fixed against it {rows[-1][4]:.2f} dB", flush=True)
    psnrs, colours, baselines, fixed = (np.array([r[i] for r in rows]) for i in range(1, 5))
    print(f"{len(rows)} clips: PSNR mean {psnrs.mean():.2f} dB (min {psnrs.min():.2f}), mean colour off by "
          f"{colours.mean():.1f} on average (max {colours.max():.1f}) levels; bicubic baseline {baselines.mean():.2f} "
          f"dB, the reconstruction wavelet-fixed against it {fixed.mean():.2f} dB")

  return cli.run("vae_reconstruction.py", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
