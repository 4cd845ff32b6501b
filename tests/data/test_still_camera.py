"""The synthetic camera over still photos (diffst_jax/data/still_camera.py) and tools/images_to_clips.py."""

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from diffst_jax.data import still_camera

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def texture(height: int, width: int, seed: int = 0) -> Image.Image:
  """A smooth random photo: noise blurred by a box filter, so bicubic resampling stays faithful."""
  noise = np.random.default_rng(seed).uniform(0, 255, (height // 4, width // 4, 3)).astype(np.uint8)
  return Image.fromarray(noise).resize((width, height), Image.BICUBIC)


def test_the_same_name_and_seed_give_the_same_clip_and_others_differ():
  photo = texture(480, 640)
  clip = lambda name, seed: still_camera.render(  # noqa: E731
      photo, still_camera.motion_for(name, seed), 5, (32, 48), name, seed)
  np.testing.assert_array_equal(clip("a", 0), clip("a", 0))
  assert np.abs(clip("a", 0).astype(int) - clip("a", 1)).mean() > 5
  assert np.abs(clip("a", 0).astype(int) - clip("b", 0)).mean() > 5


def test_a_pan_moves_the_content_by_its_speed():
  """Without zoom or turn, frame t + 1 is frame t moved 3 pixels left and 1 up (the camera goes right and down)."""
  clip = still_camera.render(texture(480, 640), still_camera.CameraMotion((3.0, 1.0), 1.0, 0.0), 4, (40, 64), "p")
  for t in range(3):
    moved = clip[t + 1, :-1, :-3].astype(int) - clip[t, 1:, 3:]
    assert np.abs(moved).mean() < 0.5
  assert np.abs(clip[1].astype(int) - clip[0]).mean() > 5


def test_motions_stay_in_the_ranges_of_real_footage():
  motions = [still_camera.motion_for(f"photo_{i}", 0) for i in range(200)]
  speeds = [math.hypot(*m.pan) for m in motions]
  assert still_camera.PAN_PIXELS[0] <= min(speeds) and max(speeds) <= still_camera.PAN_PIXELS[1]
  assert all(abs(math.log(m.zoom)) <= still_camera.ZOOM_PER_FRAME for m in motions)
  assert all(abs(m.turn) <= still_camera.TURN_DEGREES for m in motions)
  assert 60 < sum(m.zoom != 1 for m in motions) < 140 and 60 < sum(m.turn != 0 for m in motions) < 140


def test_a_zoom_and_turn_keep_the_camera_inside_the_photo():
  """A border colour the photo does not have would show where the camera left it."""
  photo = Image.new("RGB", (300, 200), (200, 30, 90))
  motion = still_camera.CameraMotion((4.0, -4.0), math.exp(-0.006), 0.15)
  clip = still_camera.render(photo, motion, 33, (64, 96), "z")
  assert np.all(np.abs(clip.astype(int) - (200, 30, 90)) <= 1)


def test_a_photo_too_small_for_the_frame_is_named():
  with pytest.raises(ValueError, match="too small for 384x256 frames"):
    still_camera.render(texture(200, 300), still_camera.CameraMotion((1.0, 0.0), 1.0, 0.0), 3, (256, 384), "s")


def run_tool(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "images_to_clips.py"), *args], capture_output=True,
                        text=True, check=False)


def test_the_tool_writes_clips_resumes_and_skips_small_photos_and_blank_clips(tmp_path):
  photos = tmp_path / "photos"
  (photos / "city").mkdir(parents=True)
  texture(240, 320, 1).save(photos / "city" / "night.png")
  texture(200, 260, 2).save(photos / "lake.jpg")
  texture(20, 20, 3).save(photos / "tiny.png")
  Image.new("RGBA", (200, 260), (30, 200, 90, 0)).convert("RGB").save(photos / "transparent.png")
  out = tmp_path / "clips"
  first = run_tool("--images", str(photos), "--output", str(out), "--frames", "5", "--size", "48x64",
                   "--clips-per-image", "2")
  assert first.returncode == 0, first.stderr
  assert sorted(p.name for p in out.iterdir()) == ["city_night_0", "city_night_1", "lake_0", "lake_1"]
  assert len(list((out / "lake_1").glob("*.png"))) == 5
  assert "4 clips written" in first.stdout and "skipped tiny.png" in first.stdout
  assert "skipped transparent.png: clip transparent_0 shows a single colour" in first.stdout
  frame = (out / "lake_0" / "000000.png").stat().st_mtime_ns
  again = run_tool("--images", str(photos), "--output", str(out), "--frames", "5", "--size", "48x64",
                   "--clips-per-image", "2")
  assert "0 clips written, 4 kept" in again.stdout
  assert (out / "lake_0" / "000000.png").stat().st_mtime_ns == frame


@pytest.mark.parametrize("args, message", [
    (["--images", "missing"], "--images missing: not a folder"),
    (["--size", "64"], "--size '64': expected HEIGHTxWIDTH"),
])
def test_the_tool_names_bad_input_in_one_line(tmp_path, args, message):
  (tmp_path / "p").mkdir()
  texture(100, 100).save(tmp_path / "p" / "a.png")
  base = {"--images": str(tmp_path / "p"), "--output": str(tmp_path / "o")}
  base.update(dict(zip(args[::2], args[1::2])))
  result = run_tool(*[x for pair in base.items() for x in pair])
  assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and message in result.stderr
