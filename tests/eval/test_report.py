"""evaluate.py's report.html, opened from disk in headless Chromium (Debian's package) as a person would: every video
loads and plays, in step, the page shows the pictures, and every link is relative (the folder moved elsewhere
still works)."""

import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from diffst_jax.eval import report
from diffst_jax.io import video
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames of 64x48
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What a headless Chromium needs on a machine without network or screen (none of it changes how the page runs).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000"]


def _chromium(page: pathlib.Path, profile: pathlib.Path, *args: str) -> str:
  assert CHROMIUM, "the report test needs Debian's chromium package (apt-get install chromium; README)"
  result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  hr, rate = video.read_video(CLIP)
  noisy = np.clip(hr.astype(int) + np.random.default_rng(0).integers(-24, 25, hr.shape), 0, 255).astype(np.uint8)
  blurred = np.asarray([np.asarray(Image.fromarray(f).resize((16, 12)).resize((64, 48))) for f in hr])
  results = {"DiffST (model)": {"mean": {"psnr": 30.5, "lpips": 0.11}},
             "bicubic x4 + linear blend x2": {"mean": {"psnr": 29.0, "lpips": 0.2}}}
  folder = tmp_path_factory.mktemp("evaluation")
  page = report.write(folder, "model on gt: bicubic protocol", results,
                      {"carphone": (hr, {"DiffST (model)": noisy, "bicubic x4 + linear blend x2": blurred})},
                      {"carphone": rate}, 2)
  moved = tmp_path_factory.mktemp("moved") / "evaluation"
  shutil.copytree(folder, moved)  # opened from elsewhere: nothing may point back at where it was written
  shutil.rmtree(folder)
  return moved / page.name


def test_the_report_links_only_files_inside_its_folder(written):
  text = written.read_text()
  links = re.findall(r'(?:src|href|value)="([^"]+\.(?:mp4|png))"', text)
  assert len(links) >= 3 + 1 + 2  # three videos, the plot, the two compared
  for link in links:
    assert not link.startswith("/") and "://" not in link and ".." not in link, link
    assert (written.parent / link).is_file(), link
  assert "<td>30.5</td>" in text and "DiffST (model)" in text


def test_the_videos_load_and_play_in_chromium(written, tmp_path):
  dom = _chromium(written, tmp_path / "profile", "--dump-dom")
  section = re.search(r"<section[^>]*>", dom).group(0)
  videos = dom.count("<video")
  assert videos == 3 + 2  # ground truth, the two methods; the comparison's two
  assert f'data-ready="{videos}"' in section, section  # each has a decoded picture of its size
  frame = int(re.search(r'data-frame="(\d+)"', section).group(1))
  assert frame > 1, section  # playing: the clock has moved past the first frame
  assert re.search(rf"frame {frame} / 9", dom)


def test_the_screenshot_shows_the_pictures(written, tmp_path):
  _chromium(written, tmp_path / "profile", "--window-size=1280,1400", f"--screenshot={tmp_path / 'shot.png'}")
  shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(int)
  # below the table and the plot: the three videos side by side (each at least 256 pixels wide), then the comparison
  rows = shot[520:760]
  coloured = np.abs(rows - rows.mean(axis=2, keepdims=True)).sum(axis=2) > 12  # not white, grey or black text
  assert coloured.mean() > 0.25, coloured.mean()
  assert len(np.unique(rows.reshape(-1, 3), axis=0)) > 500  # pictures, not flat boxes
