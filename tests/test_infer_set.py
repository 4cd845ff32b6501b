"""infer.py over a set of videos (a folder or a .txt list): every output written once, a bad video reported without
stopping the others, complete outputs skipped on a rerun; two processes write what one does."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from diffst_jax.commands import upscale
from diffst_jax.io import outputs, video
from tests.conftest import coordinator_address

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _clip_folder(folder: pathlib.Path, seed: int, frames: int = 3) -> pathlib.Path:
  folder.mkdir(parents=True)
  base = np.random.default_rng(seed).integers(0, 256, (16, 20, 3), dtype=np.uint8)
  for t in range(frames):
    Image.fromarray(np.roll(base, t, axis=1)).save(folder / f"{t:06d}.png")
  return folder


def _video_set(root: pathlib.Path) -> pathlib.Path:
  """Two clips and, listed last (the set's order is by name), a file that is no video. Job i of a set runs on device
  i of this process's 8, each device its own compiled program: "first" and "second" take devices 0 and 1 in every
  run of both tests below, which so share two programs."""
  videos = root / "videos"
  _clip_folder(videos / "first", 0)
  _clip_folder(videos / "second", 1)
  (videos / "unreadable.mp4").write_bytes(b"not a video")
  (videos / "notes.md").write_text("not a video, not listed")
  return videos


def _frames(folder: pathlib.Path) -> np.ndarray:
  return np.stack(list(video.iter_frames(folder)))


def test_a_folder_of_videos_is_upscaled_video_by_video_and_a_rerun_skips_what_is_complete(tmp_path, capsys):
  videos = _video_set(tmp_path)
  out = tmp_path / "out"
  assert upscale.main(["--input", str(videos), "--output", str(out), "--tile", "16", "16"]) == 1  # one video failed
  summary = capsys.readouterr().err
  assert "3 videos" in summary and "2 done, 0 skipped (complete), 1 failed" in summary
  assert "failed: " in summary and "unreadable.mp4" in summary
  assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, "first", "second"]
  one = tmp_path / "second_alone"
  assert upscale.main(["--input", str(videos / "second"), "--output", str(one), "--tile", "16", "16"]) == 0
  np.testing.assert_array_equal(_frames(out / "second"), _frames(one))
  assert _frames(one).shape == (5, 64, 80, 3)
  assert not np.array_equal(_frames(out / "first"), _frames(one))

  (videos / "unreadable.mp4").unlink()
  before = {p: p.stat().st_mtime_ns for p in (out / "first").iterdir()}
  leftover = out / ".second.partial-0123abcd"  # what a killed run leaves while writing "second"
  shutil.copytree(out / "second", leftover)
  shutil.rmtree(out / "second")
  assert upscale.main(["--input", str(videos), "--output", str(out), "--tile", "16", "16"]) == 0
  assert "2 videos" in capsys.readouterr().err
  assert {p: p.stat().st_mtime_ns for p in (out / "first").iterdir()} == before  # complete: skipped, not rewritten
  assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, "first", "second"]


def test_a_list_of_videos_and_the_outputs_it_refuses(tmp_path, capsys):
  videos = _video_set(tmp_path)
  listing = tmp_path / "list.txt"
  listing.write_text("# clips to upscale\nvideos/second\n\n")
  assert upscale.main(["--input", str(listing), "--output", str(tmp_path / "out"), "--tile", "16", "16"]) == 0
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [outputs.MARKER, "second"]

  listing.write_text("videos/second\nvideos/missing.mp4\n")
  assert upscale.main(["--input", str(listing), "--output", str(tmp_path / "out2")]) == 2  # bad input: exit code 2
  assert "missing.mp4, which does not exist" in capsys.readouterr().err
  assert not (tmp_path / "out2").exists()
  theirs = tmp_path / "theirs"
  theirs.mkdir()
  (theirs / "keep.txt").write_text("the user's")
  listing.write_text("videos/second\n")
  assert upscale.main(["--input", str(listing), "--output", str(theirs)]) == 2
  assert "holds files diffst-jax did not write" in capsys.readouterr().err
  assert sorted(p.name for p in theirs.iterdir()) == ["keep.txt"]


@pytest.mark.slow  # two infer.py processes of 2 CPU devices each and one of 1 (about 1 min on 2 cores)
def test_two_processes_write_every_output_once_as_one_process_does(tmp_path):
  videos = tmp_path / "videos"
  for index in range(5):
    _clip_folder(videos / f"clip{index}", index)
  flags = ["--tile", "16", "16"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  coordinator = coordinator_address()
  processes = [subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "--input", str(videos), "--output",
                                 str(tmp_path / "two"), *flags, "--mesh", "data=2", "--coordinator-address",
                                 coordinator, "--num-processes", "2", "--process-id", str(index)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for index in range(2)]
  logs = [process.communicate(timeout=600)[0] for process in processes]
  assert [process.returncode for process in processes] == [0, 0], logs
  assert "5 videos" in logs[0] and "by 4 workers: 5 done, 0 skipped (complete), 0 failed" in logs[0]
  assert "diffst:" not in logs[1]  # only process 0 talks
  wrote = [line for log in logs for line in log.splitlines() if line.startswith("diffst: wrote")]
  assert len(wrote) <= 5  # process 0 reports its own; each output is written by one worker

  single = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--input", str(videos), "--output",
                           str(tmp_path / "one"), *flags], env=dict(env, XLA_FLAGS=""), capture_output=True,
                          text=True, check=False)
  assert single.returncode == 0, single.stderr[-3000:]
  for index in range(5):
    np.testing.assert_array_equal(_frames(tmp_path / "two" / f"clip{index}"),
                                  _frames(tmp_path / "one" / f"clip{index}"))
  assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
