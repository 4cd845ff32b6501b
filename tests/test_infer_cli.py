"""infer.py, the main job, as a user runs it: a real clip in, a x4 / x2 clip out; every bad input is one line."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from diffst_jax.io import video
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames of carphone (distorted), 64x48


def _infer(*args, env=None):
  return subprocess.run([sys.executable, str(ROOT / "infer.py"), *map(str, args)], capture_output=True, text=True,
                        cwd=ROOT, check=False, env=env)


def test_upscales_a_real_clip(tmp_path):
  out = tmp_path / "out.mp4"
  result = _infer("--input", CLIP, "--output", out,
                  env={**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")})
  assert result.returncode == 0, result.stderr
  assert list((tmp_path / "xla").iterdir())  # the persistent compilation cache serves the next start
  assert "default weights" in result.stderr
  source, upscaled = video.probe(CLIP), video.probe(out)
  assert upscaled.frames == 2 * 9 - 1
  assert (upscaled.height, upscaled.width) == (4 * source.height, 4 * source.width)
  assert upscaled.fps == pytest.approx(2 * source.fps, rel=1e-3)
  assert not list(tmp_path.glob(".*partial*"))


def test_png_folder_in_and_out_in_bfloat16(tmp_path):
  frames, _ = video.read_video(CLIP)
  video.write_video(tmp_path / "in", frames[:3], 30)
  result = _infer("--input", tmp_path / "in", "--output", tmp_path / "out", "--space-scale", "1", "--precision",
                  "bf16")
  assert result.returncode == 0, result.stderr
  outputs = sorted((tmp_path / "out").glob("*.png"))
  assert len(outputs) == 5
  assert video.probe(tmp_path / "out")[2:] == (48, 64)



def test_mesh_spreads_the_clip_with_the_same_output(tmp_path):
  """`--mesh data=-1,context=2`: the clip split over two devices (the execution plan made active), PNG frames equal
  to the one-device run's up to one level of 8-bit rounding."""
  frames, _ = video.read_video(CLIP)
  video.write_video(tmp_path / "in", frames[:3], 30)
  for name, extra in (("one", []), ("two", ["--mesh", "data=-1,context=2"])):
    result = _infer("--input", tmp_path / "in", "--output", tmp_path / name, "--space-scale", "1", *extra)
    assert result.returncode == 0, result.stderr
  one, _ = video.read_video(tmp_path / "one")
  two, _ = video.read_video(tmp_path / "two")
  assert one.shape == two.shape
  assert np.abs(one.astype(int) - two.astype(int)).max() <= 1

def _bad_inputs(tmp_path):
  data = CLIP.read_bytes()
  (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
  (tmp_path / "empty.mp4").write_bytes(b"")
  shutil.copy(CLIP, tmp_path / "clip.txt")
  frames, fps = video.read_video(CLIP)
  video.write_video(tmp_path / "one_frame.mp4", frames[:1], fps)
  (tmp_path / "not_diffst").mkdir()
  (tmp_path / "not_diffst" / "model.json").write_text(json.dumps({"format": "diffst-jax/1", "model": "wan21_vae"}))
  (tmp_path / "exists.mp4").write_bytes(b"mine")
  return {
      "unreadable": (["--input", tmp_path / "noise.mp4"], "not a readable video"),
      "truncated": (["--input", tmp_path / "truncated.mp4"], "not a readable video"),
      "empty": (["--input", tmp_path / "empty.mp4"], "not a readable video"),
      "missing": (["--input", tmp_path / "nothing.mp4"], "no such file"),
      "unknown extension": (["--input", tmp_path / "clip.txt"], "unknown extension"),
      "one frame": (["--input", tmp_path / "one_frame.mp4"], "at least 2"),
      "missing checkpoint": (["--input", CLIP, "--checkpoint", tmp_path / "nowhere"], "not a DiffST checkpoint"),
      "incompatible checkpoint": (["--input", CLIP, "--checkpoint", tmp_path / "not_diffst"], "model 'diffst'"),
      "tile too small": (["--input", CLIP, "--tile", "8", "8"], "smaller than the model allows"),
      "output exists": (["--input", CLIP, "--output", tmp_path / "exists.mp4"], "--overwrite"),
      "output is input": (["--input", CLIP, "--output", CLIP, "--overwrite"], "overwrite the input"),
      "bad output extension": (["--input", CLIP, "--output", tmp_path / "out.avi"], "unknown output extension"),
  }


CASES = ["unreadable", "truncated", "empty", "missing", "unknown extension", "one frame", "missing checkpoint",
         "incompatible checkpoint", "tile too small", "output exists", "output is input", "bad output extension"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(tmp_path, case):
  args, message = _bad_inputs(tmp_path)[case]
  if "--output" not in args:
    args = [*args, "--output", tmp_path / "out.mp4"]
  clip_before = CLIP.read_bytes()
  result = _infer(*args)
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
  assert (tmp_path / "exists.mp4").read_bytes() == b"mine"  # nothing the user gave is touched
  assert CLIP.read_bytes() == clip_before
  assert not (tmp_path / "out.mp4").exists()


def test_help_answers_without_starting_jax():
  probe = ("import runpy, sys\nsys.argv = ['infer.py', '--help']\ntry:\n"
           "  runpy.run_path('infer.py', run_name='__main__')\nexcept SystemExit:\n  pass\n"
           "print(sorted({name.split('.')[0] for name in sys.modules} & {'jax', 'flax', 'torch'}))")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr
  assert "--chunk-frames" in result.stdout and result.stdout.strip().endswith("[]")
