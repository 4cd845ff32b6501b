"""tools/vae_reconstruction.py: a checkpoint's VAE on clips it did not train on (issue 26's 30 dB / 2 levels)."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "assets" / "carphone_heldout_9"


def _run(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "vae_reconstruction.py"), *args], capture_output=True,
                        text=True, check=False, cwd=ROOT)


def test_scores_equal_a_direct_encode_decode_of_the_centre_crop():
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.plan import ExecutionPlan  # pylint: disable=import-outside-toplevel

  done = _run("--checkpoint", "weights/tiny", "--clips", str(CLIP), "--size", "64x96", "--frames", "5")
  assert done.returncode == 0, done.stderr
  printed = done.stdout.splitlines()[0].split("\t")
  frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(CLIP.glob("*.png"))[:5]])
  top, left = (frames.shape[1] - 64) // 2, (frames.shape[2] - 96) // 2
  clip = frames[:, top:top + 64, left:left + 96]
  vae = diffst.load(ROOT / "weights" / "tiny", "vae")
  one_device = ExecutionPlan()
  x = clip[None].astype(np.float32) / 127.5 - 1.0
  decoded = np.asarray(vae.decode(one_device, vae.encode(one_device, x)))[0]
  output = np.clip(np.round((decoded + 1.0) * 127.5), 0, 255)
  mse = np.mean(np.square(output - clip.astype(np.float64)), axis=(1, 2, 3))
  expected_psnr = np.mean(10 * np.log10(255.0**2 / mse))
  expected_colour = np.abs(output.mean(axis=(0, 1, 2)) - clip.mean(axis=(0, 1, 2))).max()
  assert printed[0] == CLIP.name
  assert abs(float(printed[1].removesuffix(" dB")) - expected_psnr) < 0.01
  assert abs(float(printed[2].removeprefix("mean colour off by ")) - expected_colour) < 0.06
  # The clean protocol's baseline: odd frames bicubic-downscaled x4 by PIL, bicubic up, in-between frames blended.
  lr = [Image.fromarray(frame).resize((24, 16), Image.Resampling.BICUBIC) for frame in clip[::2]]
  up = np.stack([np.asarray(frame.resize((96, 64), Image.Resampling.BICUBIC)) for frame in lr]).astype(np.float64)
  baseline = np.round(np.stack([up[0], (up[0] + up[1]) / 2, up[1], (up[1] + up[2]) / 2, up[2]]))
  baseline_mse = np.mean(np.square(baseline - clip.astype(np.float64)), axis=(1, 2, 3))
  assert abs(float(printed[3].removeprefix("baseline ").removesuffix(" dB"))
             - np.mean(10 * np.log10(255.0**2 / baseline_mse))) < 0.01
  assert printed[4].startswith("wavelet-fixed against it ")
  assert done.stdout.splitlines()[-1].startswith("1 clips: PSNR mean ")


def test_bad_input_is_named_in_one_line(tmp_path):
  for args, message in [(("--clips", str(tmp_path)), f"--clips {tmp_path}: no PNG frames"),
                        (("--clips", str(CLIP), "--frames", "8"), "--frames 8: the VAE takes 4k+1 frames"),
                        (("--clips", str(CLIP), "--size", "512x512"), "are smaller than --size 512x512")]:
    done = _run("--checkpoint", "weights/tiny", *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
