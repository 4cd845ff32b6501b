"""The Grain training pipeline: batch shapes, crops of stored clips, LR keyframes, exact reproducibility across
seeds, worker counts and a saved/restored iterator state."""

import itertools
import json
import re
import shutil
import threading

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from diffst_jax.data import builder, degrade, pipeline
from diffst_jax.io import video
from tests.conftest import ROOT


def _frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
  """Smooth random frames (compress well, change from frame to frame)."""
  coarse = np.random.default_rng(seed).integers(0, 256, (count, height // 8, width // 8, 3), dtype=np.uint8)
  return coarse.repeat(8, axis=1).repeat(8, axis=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Three 5-frame clips: two from a 10-frame 48x64 video, one from a 5-frame 64x48 video."""
  videos = tmp_path_factory.mktemp("videos")
  video.write_video(videos / "a.mp4", _frames(10, 48, 64, seed=0), 25)
  video.write_video(videos / "b.mp4", _frames(5, 64, 48, seed=1), 25)
  return builder.prepare(videos, tmp_path_factory.mktemp("data"), 5)


def _dataset(data_dir, **overrides):
  arguments = {"clip_frames": 5, "crop_size": 32, "space_scale": 4, "time_scale": 2, "batch_size": 2, "seed": 0}
  return pipeline.make_dataset(data_dir, **{**arguments, **overrides})


def _take(dataset, count, state=None):
  """`count` batches (as plain arrays) and the iterator state after them; starts from `state` if given."""
  iterator = iter(dataset)
  try:
    if state is not None:
      iterator.set_state(state)
    batches = [{name: np.array(array) for name, array in next(iterator).items()} for _ in range(count)]
    return batches, iterator.get_state()
  finally:
    iterator.close()


def _assert_same(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a["hr"], b["hr"])
    np.testing.assert_array_equal(a["lr"], b["lr"])


def test_batches_are_degraded_crops_of_stored_clips(data_dir):
  stored = [example["clip"] for example in builder.load(data_dir, 5).as_data_source("train")]
  batches, _ = _take(_dataset(data_dir), 3)  # 6 examples: past the end of the first epoch
  for batch in batches:
    assert batch["hr"].shape == (2, 5, 32, 32, 3) and batch["hr"].dtype == np.uint8
    assert batch["lr"].shape == (2, 3, 8, 8, 3) and batch["lr"].dtype == np.uint8
    assert float(batch["lr"].std()) > 5
    for hr in batch["hr"]:
      assert any(_is_window_of(hr, clip) for clip in stored)


def test_without_lr_the_same_crops_come_alone(data_dir):
  with_lr, _ = _take(_dataset(data_dir), 2)
  hr_only, _ = _take(_dataset(data_dir, with_lr=False), 2)
  for full, alone in zip(with_lr, hr_only):
    assert set(alone) == {"hr"}
    np.testing.assert_array_equal(full["hr"], alone["hr"])


def _is_window_of(crop: np.ndarray, clip: np.ndarray) -> bool:
  (_, height, width, _), (_, crop_height, crop_width, _) = clip.shape, crop.shape
  return any(np.array_equal(crop, clip[:, top:top + crop_height, left:left + crop_width])
             for top in range(height - crop_height + 1) for left in range(width - crop_width + 1))


def test_every_epoch_reads_every_clip_once(data_dir):
  stored = [example["clip"] for example in builder.load(data_dir, 5).as_data_source("train")]
  epochs, _ = _take(_dataset(data_dir, batch_size=len(stored), crop_size=16), 2)
  for epoch in epochs:
    sources = [next(i for i, clip in enumerate(stored) if _is_window_of(hr, clip)) for hr in epoch["hr"]]
    assert sorted(sources) == list(range(len(stored)))


@pytest.mark.parametrize("time_scale, degradation_window, augment", [(2, 0, False), (4, 0, False), (2, 40, False),
                                                                     (2, 0, True), (2, 40, True)])
def test_lr_frame_t_is_hr_frame_t_times_s_t(data_dir, monkeypatch, time_scale, degradation_window, augment):
  """With the space degradation replaced by plain subsampling, LR frames are exactly HR frames 0, s_t, 2 s_t, ...,
  also when the LR crop is cut from a degraded larger window, and when the clips are flipped."""
  monkeypatch.setattr(degrade, "degrade_space", lambda clip, rng, scale, recipe: clip[:, ::scale, ::scale])
  batches, _ = _take(_dataset(data_dir, time_scale=time_scale, batch_size=3,
                              degradation_window=degradation_window, augment=augment), 2)
  for batch in batches:
    np.testing.assert_array_equal(batch["lr"], batch["hr"][:, ::time_scale, ::4, ::4])


@pytest.mark.parametrize("degradation_window, degraded_size", [(0, (32, 32)), (32, (32, 32)), (42, (40, 40)),
                                                                (500, (48, 64))])
def test_the_degradation_sees_the_window_clipped_to_the_frame(monkeypatch, degradation_window, degraded_size):
  calls = []  # (thread, clip): an earlier test's prefetch thread may still be degrading after its iterator closed
  monkeypatch.setattr(degrade, "degrade_space",
                      lambda clip, rng, scale, recipe: calls.append((threading.get_ident(), clip)) or clip[:, ::4, ::4])
  clip = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
  training_pair = pipeline.TrainingPair(32, 4, 2, seed=0, degradation_window=degradation_window)
  pair = training_pair.map_with_index(0, {"clip": clip})
  degraded = [window for thread, window in calls if thread == threading.get_ident()]
  assert [window.shape[1:3] for window in degraded] == [degraded_size]
  assert _is_window_of(degraded[0], clip) and _is_window_of(pair["hr"], degraded[0])


@pytest.mark.parametrize("degradation_window", [0, 48])
def test_augmented_crops_are_flipped_windows_of_stored_clips(data_dir, degradation_window):
  stored = [example["clip"] for example in builder.load(data_dir, 5).as_data_source("train")]
  flipped_axes = [axes for count in range(4) for axes in itertools.combinations((0, 1, 2), count)]
  symmetries = [lambda c, a=axes, t=transpose: np.flip(c, a).transpose(0, 2, 1, 3) if t else np.flip(c, a)
                for axes in flipped_axes for transpose in (False, True)]
  batches, _ = _take(_dataset(data_dir, batch_size=4, crop_size=16, augment=True,
                              degradation_window=degradation_window), 4)
  hr = [crop for batch in batches for crop in batch["hr"]]
  assert all(any(_is_window_of(crop, symmetry(clip)) for symmetry in symmetries for clip in stored) for crop in hr)
  assert any(not any(_is_window_of(crop, clip) for clip in stored) for crop in hr)  # some are flipped
  plain, _ = _take(_dataset(data_dir, batch_size=4, crop_size=16, degradation_window=degradation_window), 4)
  assert all(any(_is_window_of(crop, clip) for clip in stored) for batch in plain for crop in batch["hr"])


def test_a_degradation_window_keeps_the_crops_and_draws_other_degradations(data_dir):
  plain, _ = _take(_dataset(data_dir), 2)
  windowed, _ = _take(_dataset(data_dir, degradation_window=48), 2)
  stored = [example["clip"] for example in builder.load(data_dir, 5).as_data_source("train")]
  for a, b in zip(plain, windowed):
    assert b["hr"].shape == a["hr"].shape and b["lr"].shape == a["lr"].shape
    assert all(any(_is_window_of(hr, clip) for clip in stored) for hr in b["hr"])
  assert any(not np.array_equal(a["lr"], b["lr"]) for a, b in zip(plain, windowed))


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
  first, _ = _take(_dataset(data_dir, seed=5), 2)
  _assert_same(first, _take(_dataset(data_dir, seed=5), 2)[0])
  other, _ = _take(_dataset(data_dir, seed=6), 2)
  assert not np.array_equal(first[0]["lr"], other[0]["lr"])


def test_workers_and_restored_state_reproduce_the_batches_exactly(data_dir):
  reference, _ = _take(_dataset(data_dir), 5)
  head, state = _take(_dataset(data_dir, num_workers=2), 2)
  _assert_same(head, reference[:2])
  state = json.loads(json.dumps(state))
  _assert_same(_take(_dataset(data_dir, num_workers=2), 3, state)[0], reference[2:])
  _assert_same(_take(_dataset(data_dir), 3, state)[0], reference[2:])  # the state does not depend on the workers


def test_iterator_state_round_trips_through_orbax(data_dir, tmp_path):
  reference, _ = _take(_dataset(data_dir), 3)
  iterator, restored = iter(_dataset(data_dir)), iter(_dataset(data_dir))
  try:
    next(iterator)
    with ocp.CheckpointManager(tmp_path / "checkpoints", item_names=("data",)) as manager:
      manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
      manager.wait_until_finished()
      manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    _assert_same([next(restored), next(restored)], reference[1:])
  finally:
    iterator.close()
    restored.close()


@pytest.mark.parametrize("overrides, problem", [
    ({"clip_frames": 6}, "4k+1 frames"),
    ({"clip_frames": 9, "time_scale": 3}, "multiple of time_scale"),
    ({"crop_size": 24}, "multiple of 16"),
    ({"crop_size": 64}, "at most 48"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 2**32}, "seed=4294967296"),
    ({"num_workers": -1}, "num_workers=-1"),
    ({"degradation_window": -1}, "degradation_window=-1"),
    ({"split": "validation"}, "split='validation': Unknown split"),
    ({"split": "train[:1%]"}, "split='train[:1%]'"),
    ({"clip_frames": 9}, "no frames9_stride9 clips"),
])
def test_bad_arguments_are_one_line_errors(data_dir, overrides, problem):
  with pytest.raises(ValueError, match=re.escape(problem)) as error:
    _dataset(data_dir, **overrides)
  assert "\n" not in str(error.value)


def test_a_split_slice_reads_only_its_clips(data_dir):
  (first_clip,) = [example["clip"] for example in builder.load(data_dir, 5).as_data_source("train[:1]")]
  batches, _ = _take(_dataset(data_dir, split="train[:1]"), 2)
  assert all(_is_window_of(hr, first_clip) for batch in batches for hr in batch["hr"])


def test_a_missing_build_names_the_fix(tmp_path):
  with pytest.raises(ValueError, match="build them with diffst_jax.data.builder.prepare"):
    _dataset(tmp_path)


def test_random_crop_takes_one_window_for_all_frames():
  clip = np.arange(3 * 6 * 7 * 1, dtype=np.int64).reshape(3, 6, 7, 1)
  crop = pipeline.random_crop(clip, 4, 4, np.random.default_rng(0))
  top, left = np.argwhere(clip[0, :, :, 0] == crop[0, 0, 0, 0])[0]
  np.testing.assert_array_equal(crop, clip[:, top:top + 4, left:left + 4])


def test_carphone_clip_through_the_pipeline(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  shutil.copy(ROOT / "tests" / "assets" / "carphone_distorted_9.mp4", videos)
  data_dir = builder.prepare(videos, tmp_path / "data", 9)
  (batch,), _ = _take(_dataset(data_dir, clip_frames=9, crop_size=48, batch_size=1), 1)
  assert batch["hr"].shape == (1, 9, 48, 48, 3) and batch["lr"].shape == (1, 5, 12, 12, 3)
  assert float(batch["lr"].std()) > 5


def test_a_mixture_of_recipes_gives_each_example_one_of_them(data_dir):
  """"dove+bicubic": each example's LR is either its HR bicubic-downscaled (the clean protocol) or DOVE-degraded;
  both occur. A single recipe keeps the examples of a run from before mixtures: "dove" alone is the default."""
  batches, _ = _take(_dataset(data_dir, crop_size=16, degradation="dove+bicubic"), 6)
  clean = [np.array_equal(lr, degrade.degrade_space_by("bicubic", hr, None, 4)[::2])
           for batch in batches for hr, lr in zip(batch["hr"], batch["lr"])]
  assert 0 < sum(clean) < len(clean), clean
  single, _ = _take(_dataset(data_dir, crop_size=16, degradation="dove"), 2)
  default, _ = _take(_dataset(data_dir, crop_size=16), 2)
  for a, b in zip(single, default):
    np.testing.assert_array_equal(a["lr"], b["lr"])
