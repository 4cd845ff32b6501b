"""Safe destinations: what counts as an output of ours, replacing one whole, refusing everything else, and
checkpoints whose writing was cut short."""

import os
import shutil

import numpy as np
import pytest

from diffst_jax.io import checkpoint, outputs, video
from tests.conftest import ROOT, assert_kept, snapshot

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"
FRAMES = np.zeros((2, 8, 8, 3), np.uint8)


def test_our_videos_and_frame_folders_are_recognised(tmp_path):
  video.write_video(tmp_path / "out.mp4", FRAMES, 30)
  video.write_video(tmp_path / "frames", FRAMES, 30)
  assert outputs.is_ours(tmp_path / "out.mp4", None) and outputs.is_ours(tmp_path / "frames", outputs.FRAMES)
  shutil.copy(CLIP, tmp_path / "theirs.mp4")
  assert not outputs.is_ours(tmp_path / "theirs.mp4", None)
  (tmp_path / "frames" / "notes.txt").write_text("mine")
  assert not outputs.is_ours(tmp_path / "frames", outputs.FRAMES)
  (tmp_path / "frames" / "notes.txt").unlink()
  (tmp_path / "frames" / outputs.MARKER).unlink()
  assert not outputs.is_ours(tmp_path / "frames", outputs.FRAMES)  # frame names alone are not enough


def test_a_previous_output_is_replaced_whole_and_nothing_else(tmp_path):
  video.write_video(tmp_path / "frames", np.zeros((5, 8, 8, 3), np.uint8), 30)
  outputs.check_replaceable(tmp_path / "frames", True, outputs.FRAMES)
  video.write_video(tmp_path / "frames", FRAMES + 7, 30, overwrite=True)
  assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [outputs.MARKER, "000000.png", "000001.png"]
  assert video.read_video(tmp_path / "frames")[0].min() == 7
  assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no partial or replaced folder left

  (tmp_path / "frames" / "notes.txt").write_text("mine")
  before = snapshot(tmp_path)
  with pytest.raises(outputs.OutputError, match="notes.txt, which diffst-jax did not write"):
    outputs.check_replaceable(tmp_path / "frames", True, outputs.FRAMES)
  with pytest.raises(outputs.OutputError, match="not an output of diffst-jax alone"):  # made while a run went on
    video.write_video(tmp_path / "frames", FRAMES, 30)
  with pytest.raises(outputs.OutputError, match="did not write; it is kept"):
    outputs.remove(tmp_path / "frames", outputs.FRAMES)
  shutil.copy(CLIP, tmp_path / "theirs.mp4")
  before = snapshot(tmp_path)
  with pytest.raises(outputs.OutputError, match="not an output of diffst-jax alone"):
    video.write_video(tmp_path / "theirs.mp4", FRAMES, 30)
  assert_kept(before, tmp_path)
  assert set(snapshot(tmp_path)) == set(before)


def test_destinations_around_inputs_or_the_working_directory_are_refused(tmp_path, monkeypatch):
  (tmp_path / "a" / "b").mkdir(parents=True)
  shutil.copy(CLIP, tmp_path / "a" / "in.mp4")
  monkeypatch.chdir(tmp_path / "a" / "b")
  for output, message in [("..", "holds the input"), (tmp_path / "a" / "in.mp4", "is the input"),
                          (tmp_path, "holds the input"), (".", "working directory"), ("/", "holds the input")]:
    with pytest.raises(outputs.OutputError, match=message):
      outputs.check_destination(output, [tmp_path / "a" / "in.mp4"], folder=True)
  os.link(tmp_path / "a" / "in.mp4", tmp_path / "hard_link.mp4")
  with pytest.raises(outputs.OutputError, match="is the input"):
    outputs.check_destination(tmp_path / "hard_link.mp4", [tmp_path / "a" / "in.mp4"])
  (tmp_path / "link").symlink_to(tmp_path / "a")
  with pytest.raises(outputs.OutputError, match="symbolic link"):
    outputs.check_destination(tmp_path / "link", folder=True)
  with pytest.raises(outputs.OutputError, match="in.mp4 is a file, not a folder"):
    outputs.check_destination(tmp_path / "a" / "in.mp4" / "x" / "out.mp4")
  assert outputs.check_destination("new", [tmp_path / "a" / "in.mp4"]) == tmp_path / "a" / "b" / "new"


def test_a_checkpoint_cut_short_is_written_again_and_nothing_else_is(tmp_path):
  params = {"w": np.arange(6, dtype=np.float32)}
  checkpoint.save(tmp_path / "model", "m", {}, params)
  (tmp_path / "model" / "model.json").unlink()  # killed after the parameters, before model.json
  assert checkpoint.is_incomplete(tmp_path / "model")
  with pytest.raises(ValueError, match="model.json: missing"):
    checkpoint.read_metadata(tmp_path / "model", "m")
  checkpoint.save(tmp_path / "model", "m", {}, {"w": params["w"] + 1})
  assert checkpoint.is_checkpoint(tmp_path / "model")
  np.testing.assert_array_equal(checkpoint.restore(tmp_path / "model", params)["w"], params["w"] + 1)

  (tmp_path / "model" / "model.json").unlink()
  (tmp_path / "model" / "notes.txt").write_text("mine")
  assert not checkpoint.is_incomplete(tmp_path / "model")
  with pytest.raises(outputs.OutputError, match="not empty"):
    checkpoint.save(tmp_path / "model", "m", {}, params)
  assert (tmp_path / "model" / "notes.txt").read_text() == "mine"


def test_an_output_that_appears_while_a_run_writes_is_kept_unless_the_run_may_replace_it(tmp_path):
  with pytest.raises(outputs.OutputError, match="written by another run while this one went on, and is kept"):
    with outputs.writing(tmp_path / "out.mp4", None) as partial:
      partial.write_bytes(b"this run's")
      video.write_video(tmp_path / "out.mp4", FRAMES, 30)  # another run finished first
  kept = snapshot(tmp_path)
  assert sorted(kept) == ["out.mp4"]
  with outputs.writing(tmp_path / "out.mp4", None, overwrite=True) as partial:
    video.write_video(partial, FRAMES + 1, 30)
  assert video.read_video(tmp_path / "out.mp4")[0].min() == 1


def test_a_claimed_output_is_refused_to_a_second_claim_and_free_once_released(tmp_path):
  target = tmp_path / "new" / "out.mp4"
  with outputs.claimed(target):
    assert (tmp_path / "new" / ".out.mp4.lock").read_text().startswith(f"pid {os.getpid()} on ")
    with pytest.raises(outputs.OutputError, match=f"out.mp4: another run \\(pid {os.getpid()} on .*\\) is writing"):
      with outputs.claimed(target):
        pass
  assert not (tmp_path / "new").exists()  # the folder it made for the lock, left empty, is removed
  with outputs.claimed(target):
    pass
