"""The TFDS clip builder: exact frames, clip counts per layout, reuse of a finished build, one-line errors."""

import shutil

import numpy as np
import pytest

from diffst_jax.data import builder
from diffst_jax.io import video
from tests.conftest import ROOT

CARPHONE = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames, 64x48


def _frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory):
  """carphone (9 frames), a 12-frame .mkv in a subfolder, a 7-frame PNG folder, a 3-frame video and a text file."""
  root = tmp_path_factory.mktemp("videos")
  shutil.copy(CARPHONE, root / "carphone.mp4")
  (root / "sub").mkdir()
  video.write_video(root / "sub" / "noise.mp4", _frames(12, 40, 56, seed=0), 25)
  (root / "sub" / "noise.mp4").rename(root / "sub" / "noise.mkv")
  video.write_video(root / "frames", _frames(7, 32, 48, seed=1), 25)
  video.write_video(root / "short.mp4", _frames(3, 32, 32, seed=2), 25)
  (root / "notes.txt").write_text("not a video")
  return root


def _clips_by_origin(data_dir, clip_frames, clip_stride=None) -> dict[tuple[str, int], np.ndarray]:
  source = builder.load(data_dir, clip_frames, clip_stride=clip_stride).as_data_source("train")
  return {(example["video"].decode(), int(example["first_frame"])): example["clip"] for example in source}


@pytest.mark.parametrize("clip_stride, starts", [
    (None, {"carphone.mp4": [0], "sub/noise.mkv": [0, 5], "frames": [0]}),
    (2, {"carphone.mp4": [0, 2, 4], "sub/noise.mkv": [0, 2, 4, 6], "frames": [0, 2]}),
])
def test_clips_are_exact_frames_of_every_long_enough_video(tmp_path, videos_dir, clip_stride, starts):
  data_dir = builder.prepare(videos_dir, tmp_path / "data", 5, clip_stride=clip_stride)
  clips = _clips_by_origin(data_dir, 5, clip_stride)
  assert sorted(clips) == sorted((name, first) for name, firsts in starts.items() for first in firsts)
  for name in starts:
    frames, _ = video.read_video(videos_dir / name)
    for first in starts[name]:
      assert clips[name, first].dtype == np.uint8
      np.testing.assert_array_equal(clips[name, first], frames[first:first + 5])


def test_a_finished_build_is_reused_and_clip_lengths_do_not_collide(tmp_path, videos_dir, monkeypatch):
  data_dir = builder.prepare(videos_dir, tmp_path / "data", 5)
  files = {path: path.stat().st_mtime_ns for path in data_dir.rglob("*") if path.is_file()}
  with monkeypatch.context() as patch:
    patch.setattr(video, "probe", lambda path: pytest.fail(f"{path} decoded again"))
    assert builder.prepare(videos_dir, data_dir, 5) == data_dir
  assert {path: path.stat().st_mtime_ns for path in data_dir.rglob("*") if path.is_file()} == files

  builder.prepare(videos_dir, data_dir, 9)
  assert sorted(_clips_by_origin(data_dir, 9)) == [("carphone.mp4", 0), ("sub/noise.mkv", 0)]
  assert len(_clips_by_origin(data_dir, 5)) == 4
  metadata = builder.load(data_dir, 9).info.metadata
  assert (metadata["min_height"], metadata["min_width"]) == (40, 56)


def _one_line_error(function, *args, **kwargs) -> str:
  with pytest.raises(ValueError) as error:
    function(*args, **kwargs)
  message = str(error.value)
  assert "\n" not in message
  return message


def test_one_line_errors(tmp_path, videos_dir):
  data_dir = tmp_path / "data"
  assert "does not exist" in _one_line_error(builder.prepare, tmp_path / "missing", data_dir, 5)
  assert "is not a folder" in _one_line_error(builder.prepare, CARPHONE, data_dir, 5)
  (tmp_path / "empty").mkdir()
  assert "holds no readable video" in _one_line_error(builder.prepare, tmp_path / "empty", data_dir, 5)
  (tmp_path / "text").mkdir()
  (tmp_path / "text" / "readme.txt").write_text("hello")
  assert "holds no readable video" in _one_line_error(builder.prepare, tmp_path / "text", data_dir, 5)

  broken = tmp_path / "broken"
  shutil.copytree(videos_dir, broken)
  (broken / "sub" / "bad.mp4").write_bytes(b"\x00" * 1000)
  message = _one_line_error(builder.prepare, broken, data_dir, 5)
  assert "bad.mp4: not a readable video" in message and "re-encode" in message

  short = tmp_path / "short"
  short.mkdir()
  shutil.copy(videos_dir / "short.mp4", short / "a.mp4")
  message = _one_line_error(builder.prepare, short, data_dir, 5)
  assert "shorter than clip_frames=5" in message and "a.mp4, 3 frames" in message

  assert "clip_frames=0" in _one_line_error(builder.prepare, videos_dir, data_dir, 0)
  assert "no frames13_stride13 clips" in _one_line_error(builder.load, data_dir, 13)
  assert not any(data_dir.rglob("*.array_record*"))  # nothing was built by the failed calls


def test_a_data_dir_built_from_other_videos_is_refused(tmp_path, videos_dir):
  data_dir = builder.prepare(videos_dir, tmp_path / "data", 5)
  other = tmp_path / "other"
  other.mkdir()
  shutil.copy(CARPHONE, other / "carphone.mp4")
  assert "pass a new data_dir" in _one_line_error(builder.prepare, other, data_dir, 5)
  assert len(_clips_by_origin(data_dir, 5)) == 4
