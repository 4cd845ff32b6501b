"""infer.py, the main job, as a user runs it: a real clip in, a x4 / x2 clip out; every bad input is one line.

A real clip, --help and a bad input go through infer.py in a process of its own, as a user starts it; the other
runs call what infer.py runs (`upscale.main`, the same program name in its messages) in the test process, which
spares the interpreter's start and imports and compiles each of the model's programs once for all of them."""

import fractions
import json
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest

from diffst_jax.commands import upscale
from diffst_jax.io import video
from tests.conftest import ROOT, error_line, in_process

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames of carphone (distorted), 64x48


def _infer(*args, env=None):
  return subprocess.run([sys.executable, str(ROOT / "infer.py"), *map(str, args)], capture_output=True, text=True,
                        cwd=ROOT, check=False, env=env)


def _upscale(*args) -> int:
  """`python infer.py ARGS`'s exit code, run in this process (infer.py's `main`)."""
  try:
    return upscale.main([str(arg) for arg in args])
  except SystemExit as exit_:  # argparse's usage errors
    return exit_.code


@pytest.fixture(scope="module")
def png_runs(tmp_path_factory):
  """`infer.py --input FOLDER --output OUT --space-scale 1 FLAGS` on a folder of 3 PNG frames of the clip: OUT for
  FLAGS (and OUT's `suffix`), each run once per test process."""
  root = tmp_path_factory.mktemp("png_runs")
  frames, _ = video.read_video(CLIP)
  video.write_video(root / "in", frames[:3], 30)
  done = {}

  def run(*flags, suffix=""):
    if (flags, suffix) not in done:
      out = root / f"out{len(done)}{suffix}"
      assert _upscale("--input", root / "in", "--output", out, "--space-scale", "1", *flags) == 0
      done[flags, suffix] = out
    return done[flags, suffix]

  run.frames = frames[:3]
  return run


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


def test_png_folder_in_and_out_in_bfloat16(png_runs):
  out = png_runs("--precision", "bf16")
  outputs = sorted(out.glob("*.png"))
  assert len(outputs) == 5
  assert video.probe(out)[2:4] == (48, 64)


def _phone_clip(path, frames: np.ndarray, rate: fractions.Fraction, rotation: int, seconds_of_audio: float):
  """An .mp4 as phones write them: landscape frames with a display rotation, an AAC track (a 440 Hz tone)."""
  with av.open(str(path), "w") as container:
    picture = container.add_stream("libx264", rate=rate)
    picture.height, picture.width = frames.shape[1:3]
    picture.pix_fmt = "yuv420p"
    picture.set_display_rotation(rotation)
    sound = container.add_stream("aac", rate=48000)
    sound.layout = "stereo"
    for frame in frames:
      container.mux(picture.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(picture.encode())
    samples = np.sin(2 * np.pi * 440 * np.arange(int(48000 * seconds_of_audio)) / 48000).astype(np.float32)
    for start in range(0, samples.size, 1024):
      chunk = av.AudioFrame.from_ndarray(np.stack([samples[start:start + 1024]] * 2), format="fltp", layout="stereo")
      chunk.sample_rate = 48000
      container.mux(sound.encode(chunk))
    container.mux(sound.encode())


def _audio_track(path):
  with av.open(str(path)) as container:
    track = container.streams.audio[0]
    return track.codec_context.name, float(track.duration * track.time_base)


def test_a_phone_clip_comes_out_upright_with_its_audio_and_exact_rate(tmp_path):
  """Stored landscape with a 90-degree display rotation (counterclockwise, the display matrix's sense), shown
  portrait: the output is the portrait picture; its AAC track is copied; 30000/1001 fps becomes 60000/1001."""
  frames, _ = video.read_video(CLIP)  # 48x64 landscape
  frames = frames[:3].copy()  # the tiles (20 of 16x16 either way up) and frames of png_runs: the same program
  frames[:, :8, :8] = (255, 0, 0)  # a red corner, top left as stored
  rate = fractions.Fraction(30000, 1001)
  source = tmp_path / "phone.mp4"
  _phone_clip(source, frames, rate, rotation=90, seconds_of_audio=3 / float(rate))
  shown = video.read_video(source)[0]
  assert shown.shape[1:3] == (64, 48)
  assert np.abs(shown[0, -8:, :8].astype(int) - (255, 0, 0)).mean() < 40  # turned counterclockwise: bottom left
  out = tmp_path / "out.mp4"
  assert _upscale("--input", source, "--output", out, "--space-scale", "1") == 0
  written = video.probe(out)
  assert (written.height, written.width, written.rotation) == (64, 48, 0)
  assert written.rate == 2 * rate
  upscaled = video.read_video(out)[0][0].astype(float)
  upright, turned_the_other_way = shown[0].astype(float), np.rot90(shown[0], 2).astype(float)
  assert np.abs(upscaled - upright).mean() < 0.6 * np.abs(upscaled - turned_the_other_way).mean()
  codec, seconds = _audio_track(out)
  assert codec == "aac"
  assert abs(seconds - _audio_track(source)[1]) < 1 / float(rate)
  assert abs(seconds - written.frames / float(written.rate)) < 1 / float(rate) + 1024 / 48000  # one frame, one packet
  with av.open(str(out)) as container:
    context = container.streams.video[0].codec_context
    assert (context.color_primaries, context.color_trc, context.colorspace) == (1, 1, 1)  # BT.709, tagged
  assert _upscale("--input", source, "--output", tmp_path / "silent.mp4", "--space-scale", "1", "--no-audio") == 0
  assert not video.probe(tmp_path / "silent.mp4").audio


def test_fps_sets_the_rate_of_png_frames(tmp_path, png_runs, capfd):
  assert video.probe(png_runs("--fps", "29.97", suffix=".mp4")).rate == fractions.Fraction(60000, 1001)
  assert error_line(in_process(capfd, "infer.py", "--input", CLIP, "--output", tmp_path / "x.mp4", "--fps",
                               "25")).startswith(
      "infer.py: error: --fps 25: for a folder of PNG frames only")


def test_mesh_spreads_the_clip_with_the_same_output(png_runs):
  """`--mesh data=-1,context=2`: the clip split over two devices (the execution plan made active), PNG frames equal
  to the one-device run's up to one level of 8-bit rounding."""
  one, _ = video.read_video(png_runs("--color-fix", "auto"))  # the default, spelled as the colour fix test runs it
  two, _ = video.read_video(png_runs("--color-fix", "auto", "--mesh", "data=-1,context=2"))
  assert one.shape == two.shape
  assert np.abs(one.astype(int) - two.astype(int)).max() <= 1

def _bad_inputs(tmp_path):
  data = CLIP.read_bytes()
  (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
  (tmp_path / "empty.mp4").write_bytes(b"")
  shutil.copy(CLIP, tmp_path / "clip.doc")
  shutil.copy(CLIP, tmp_path / "videos.txt")  # a .txt is a list of videos
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
      "unknown extension": (["--input", tmp_path / "clip.doc"], "unknown extension"),
      "binary list": (["--input", tmp_path / "videos.txt"], "not a text file listing videos"),
      "one frame": (["--input", tmp_path / "one_frame.mp4"], "at least 2"),
      "missing checkpoint": (["--input", CLIP, "--checkpoint", tmp_path / "nowhere"], "not a DiffST checkpoint"),
      "incompatible checkpoint": (["--input", CLIP, "--checkpoint", tmp_path / "not_diffst"], "model 'diffst'"),
      "tile too small": (["--input", CLIP, "--tile", "8", "8"], "--tile 8 8: must be at least 16"),
      "output exists": (["--input", CLIP, "--output", tmp_path / "exists.mp4"], "--overwrite"),
      "output is input": (["--input", CLIP, "--output", CLIP, "--overwrite"], "overwrite the input"),
      "bad output extension": (["--input", CLIP, "--output", tmp_path / "out.avi"], "unknown output extension"),
  }


CASES = ["unreadable", "truncated", "empty", "missing", "unknown extension", "binary list", "one frame",
         "missing checkpoint", "incompatible checkpoint", "tile too small", "output exists", "output is input",
         "bad output extension"]


def _check_bad_input(tmp_path, case, infer):
  """`infer(ARGS)` -> (exit code, stderr) of infer.py on the bad input `case`: one line on stderr, nothing touched."""
  args, message = _bad_inputs(tmp_path)[case]
  if "--output" not in args:
    args = [*args, "--output", tmp_path / "out.mp4"]
  clip_before = CLIP.read_bytes()
  returncode, stderr = infer(*args)
  assert returncode != 0
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("infer.py: error: ") and message in lines[0], stderr
  assert (tmp_path / "exists.mp4").read_bytes() == b"mine"  # nothing the user gave is touched
  assert CLIP.read_bytes() == clip_before
  assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(tmp_path, capfd, case):
  """In this process (`in_process`: what FFmpeg or XLA print and Python's warnings count too)."""

  def infer(*args):
    result = in_process(capfd, "infer.py", *args)
    return result.returncode, result.stderr

  _check_bad_input(tmp_path, case, infer)


def test_bad_input_to_infer_py_is_one_clear_line(tmp_path):
  """The same in a process of its own, as a user starts infer.py: JAX started (the video is probed after that) and
  FFmpeg failing on a cut-off file print nothing more."""

  def infer(*args):
    result = _infer(*args)
    return result.returncode, result.stderr

  _check_bad_input(tmp_path, "truncated", infer)


def test_help_answers_without_starting_jax():
  probe = ("import runpy, sys\nsys.argv = ['infer.py', '--help']\ntry:\n"
           "  runpy.run_path('infer.py', run_name='__main__')\nexcept SystemExit:\n  pass\n"
           "print(sorted({name.split('.')[0] for name in sys.modules} & {'jax', 'flax', 'torch'}))")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr
  assert "--chunk-frames" in result.stdout and result.stdout.strip().endswith("[]")


def test_color_fix_flag_corrects_towards_the_blended_input(png_runs):
  """--color-fix adain moves each output frame's mean colour onto the bicubic-blended input's; auto reads the
  checkpoint's record (weights/tiny records wavelet, so auto equals wavelet)."""
  from diffst_jax.ops import resize  # pylint: disable=import-outside-toplevel

  outputs = {kind: video.read_video(png_runs("--color-fix", kind))[0].astype(np.float64)
             for kind in ("adain", "auto", "none", "wavelet")}
  reference = resize.bicubic_blend(png_runs.frames, 1, 2).astype(np.float64)
  offset = lambda out: np.abs(out.mean(axis=(1, 2)) - reference.mean(axis=(1, 2))).max()  # noqa: E731
  assert offset(outputs["adain"]) < 1.0 < offset(outputs["none"])
  np.testing.assert_array_equal(outputs["auto"], outputs["wavelet"])
  assert np.abs(outputs["auto"] - outputs["none"]).max() > 0
