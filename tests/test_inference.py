"""Chunked and tiled inference: exact when one chunk/tile covers the clip, seamless blending otherwise."""

import argparse

import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax import chunking, inference
from diffst_jax.models import diffst
from diffst_jax.parallel import plan as plan_lib
from tests.conftest import ROOT


# What is tested is chunking and tiling: XLA's convolutions compile faster than the CPU default's.
XLA_CONVOLUTIONS = plan_lib.ExecutionPlan(conv_implementation="xla")

# Compiling the model for one more input shape costs far more than running it, so the tests share four programs
# (each compiled once per test process, and once per run through the persistent compilation cache), all on chunks
# of 5 frames: whole 20x32 frames (one chunk, chunks with overlap, colour fix, a plan without a tile), 20x16 tiles
# (stitching, a tile halved to fit memory) and 16x16 tiles one and two per call (batching, the smallest tile).


@pytest.fixture(scope="module")
def model():
  """The shipped tiny DiffST (weights/tiny): read from disk, with no initializers to compile."""
  return diffst.load(ROOT / "weights" / "tiny")


@pytest.fixture(scope="module")
def clip():
  return np.random.default_rng(0).integers(0, 256, (9, 20, 32, 3), dtype=np.uint8)


def _run(model, clip, plan, run_tiles=None):
  return np.stack(list(inference.upscale_video(model, iter(clip), len(clip), plan, run_tiles=run_tiles,
                                               execution_plan=XLA_CONVOLUTIONS)))


def test_spans_and_ramps():
  assert chunking.spans(9, 5, 2) == [(0, 5), (3, 8), (4, 9)]
  assert chunking.spans(9, 20, 2) == [(0, 9)]
  first, second = chunking.ramp(7, 0, 3), chunking.ramp(6, 3, 0)  # two windows sharing 3 entries
  np.testing.assert_allclose(first[-3:] + second[:3], 1.0)
  np.testing.assert_array_equal(first[:-3], 1.0)
  np.testing.assert_array_equal(second[3:], 1.0)


def _plan(flags: list[str], trained: dict[str, int]) -> chunking.ChunkPlan:
  parser = argparse.ArgumentParser()
  chunking.add_plan_flags(parser)
  return chunking.plan_from_flags(parser.parse_args(flags), trained)


def test_plans_default_to_the_trained_clip_and_the_recorded_tile():
  trained = {"chunk_frames": 5, "tile": 16}
  whole_frames = chunking.ChunkPlan(17, 4, None, None, tile_batch=1)
  assert _plan([], {}) == chunking.DEFAULT_CHUNK_PLAN == whole_frames
  assert _plan([], {"chunk_frames": 5}) == chunking.ChunkPlan(5, 1, None, None, tile_batch=1)
  # overlaps: a quarter; tiles batched up to one 128x128 tile's area
  assert _plan([], trained) == chunking.ChunkPlan(5, 1, (16, 16), 4, tile_batch=64)
  assert _plan(["--chunk-frames", "9", "--tile", "32", "48"], trained) == chunking.ChunkPlan(9, 2, (32, 48), 8, 10)
  assert _plan(["--overlap-frames", "0", "--tile-overlap", "0", "--tile-batch", "3"], trained) == chunking.ChunkPlan(
      5, 0, (16, 16), 0, 3)
  assert _plan([], {"tile": 8}).tile == (chunking.MIN_TILE,) * 2  # a crop under the smallest tile the model takes
  with pytest.raises(ValueError, match="tile-overlap"):
    _plan(["--tile-overlap", "8"], trained)


def test_one_chunk_one_tile_equals_whole_clip(model, clip):
  clip = clip[:5]
  got = _run(model, clip, chunking.ChunkPlan(5, 0, (64, 64), 0))
  whole = np.asarray(diffst.upscale(model, jnp.asarray(clip[None].astype(np.float32) / 127.5 - 1), XLA_CONVOLUTIONS))[0]
  np.testing.assert_array_equal(got, np.clip(np.round((whole + 1) * 127.5), 0, 255).astype(np.uint8))


def test_chunks_with_overlap_give_every_frame(model, clip):
  got = _run(model, clip, chunking.ChunkPlan(5, 2, (64, 64), 0))  # chunks (0, 5), (3, 8), (4, 9)
  assert got.shape == (17, 80, 128, 3)


def _offset_tile(frames):
  """A stand-in model whose tiles disagree: x4 nearest upscaling plus an offset that depends on the tile."""
  up = np.repeat(np.repeat(np.repeat(frames, 2, axis=0)[:-1], 4, axis=1), 4, axis=2)
  return np.clip(up + 0.2 * np.tanh(frames.mean()), -1, 1)


def _offset_tiles(tiles):
  return np.stack([_offset_tile(tile) for tile in tiles])


def test_tiles_blend_without_seams(model, clip):
  clip = clip[:, :, :24]  # 2 x 2 tiles
  plan = chunking.ChunkPlan(9, 0, (16, 16), 4)
  got = _run(model, clip, plan, run_tiles=_offset_tiles).astype(np.float32)
  assert got.shape == (17, 80, 96, 3)
  # Where tiles overlap, the output steps from one tile's value to the other's in ramps of at most
  # offset difference / (overlap + 1), so the largest column-to-column jump stays that of the content.
  smooth = np.asarray(_offset_tile(clip.astype(np.float32) / 127.5 - 1))
  jumps = np.abs(np.diff(got, axis=2)).max(axis=(0, 1, 3))
  content = np.abs(np.diff((smooth + 1) * 127.5, axis=2)).max(axis=(0, 1, 3))
  assert float((jumps - content).max()) <= 0.4 * 127.5 / 17 + 1  # one ramp step (+ rounding)


def test_model_tiles_are_stitched_by_convex_blending(model, clip):
  """Two tiles side by side, sharing 8 LR columns: outside the shared band the output is each tile's own; inside it
  lies between the two tiles' predictions."""
  clip = clip[:5, :, :24]
  frames = clip.astype(np.float32) / 127.5 - 1
  got = _run(model, clip, chunking.ChunkPlan(5, 0, (32, 16), 7)).astype(np.float32)  # tiles (0, 16), (8, 24)
  run = inference.model_tiles(model, XLA_CONVOLUTIONS)
  to_uint8 = lambda a: np.clip(np.round((a + 1) * 127.5), 0, 255)  # noqa: E731
  left, right = to_uint8(run(frames[None, :, :, :16])[0]), to_uint8(run(frames[None, :, :, 8:24])[0])
  np.testing.assert_array_equal(got[:, :, :32], left[:, :, :32])
  np.testing.assert_array_equal(got[:, :, 64:], right[:, :, 32:])
  low, high = np.minimum(left[:, :, 32:], right[:, :, :32]), np.maximum(left[:, :, 32:], right[:, :, :32])
  assert bool(np.all((got[:, :, 32:64] >= low - 1) & (got[:, :, 32:64] <= high + 1)))
  print(f"[tiles] max difference of neighbouring tiles in their overlap: {np.abs(high - low).max() / 127.5:.3f}")


def test_batched_tiles_equal_tiles_one_by_one(model, clip):
  """Tiles batched in calls of equal size (the last padded) give the outputs of one call per tile."""
  clip = clip[:5, :, :24]
  calls = []
  run = inference.model_tiles(model, XLA_CONVOLUTIONS)

  def counted(tiles):
    calls.append(len(tiles))
    return run(tiles)

  one_by_one = _run(model, clip, chunking.ChunkPlan(5, 0, (16, 16), 4, tile_batch=1), run_tiles=counted)
  assert calls == [1] * 4  # 2 rows x 2 columns of tiles
  calls.clear()
  batched = _run(model, clip, chunking.ChunkPlan(5, 0, (16, 16), 4, tile_batch=3), run_tiles=counted)
  assert calls == [2, 2]  # 4 tiles in two calls of 2, not 3 + 1
  assert np.abs(batched.astype(int) - one_by_one).max() <= 1  # float summation order of the batched convolutions
  calls.clear()
  _run(model, clip, chunking.ChunkPlan(5, 0, (16, 16), 4, tile_batch=64),
       run_tiles=lambda tiles: calls.append(len(tiles)) or _offset_tiles(tiles))  # no third program to compile
  assert calls == [4]
  wide = np.random.default_rng(1).integers(0, 256, (5, 20, 64, 3), dtype=np.uint8)  # 2 x 5 tiles
  calls.clear()
  padded = _run(model, wide, chunking.ChunkPlan(5, 0, (16, 16), 4, tile_batch=4),
                run_tiles=lambda tiles: calls.append(len(tiles)) or _offset_tiles(tiles))
  assert calls == [4, 4, 4]  # 10 tiles and 2 copies of the last
  np.testing.assert_array_equal(padded, _run(model, wide, chunking.ChunkPlan(5, 0, (16, 16), 4),
                                             run_tiles=_offset_tiles))


@pytest.mark.parametrize("plan, message", [
    (chunking.ChunkPlan(1, 0, (64, 64), 0), "chunk-frames"),
    (chunking.ChunkPlan(5, 5, (64, 64), 0), "overlap-frames"),
    (chunking.ChunkPlan(5, 1, (8, 64), 0), "smaller than the model allows"),
    (chunking.ChunkPlan(5, 1, (32, 32), 16), "tile-overlap"),
    (chunking.ChunkPlan(5, 1, (32, 32), 8, tile_batch=0), "tile-batch must be at least 1"),
])
def test_bad_plans(plan, message):
  with pytest.raises(ValueError, match=message):
    plan.check()


def test_a_stream_shorter_than_announced_is_a_clear_error(model, clip):
  with pytest.raises(ValueError, match="ended after 9 frames, 12 were expected"):
    list(inference.upscale_video(model, iter(clip), 12, chunking.ChunkPlan(12, 0, (64, 64), 0),
                                 execution_plan=XLA_CONVOLUTIONS))


def test_color_fix_takes_the_colour_of_the_bicubic_blended_input(model):
  """AdaIN: each output frame's channel means and deviations become the reference's (the input upscaled bicubic and
  blended in time, ops/resize.py); wavelet: the output keeps its high frequencies over the reference's low ones. A
  made-up colour cast in the model's output is gone either way; "none" keeps it."""
  from diffst_jax.ops import resize  # pylint: disable=import-outside-toplevel

  smooth = np.linspace(40, 200, 20 * 32 * 3).reshape(20, 32, 3)
  clip = np.stack([np.roll(smooth, shift, axis=1) for shift in range(5)]).astype(np.uint8)
  reference = resize.bicubic_blend(clip, 4, 2).astype(np.float64)
  cast = lambda frames: np.stack([frames[:, 0] * 0.5 + 0.3, frames[:, 1], frames[:, 2] - 0.2], axis=1)  # noqa: E731
  run_tiles = lambda tiles: np.stack([cast(tile.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)  # noqa: E731
                                      for tile in np.asarray(diffst.upscale(model, jnp.asarray(tiles),
                                                                            XLA_CONVOLUTIONS))])
  plan = chunking.ChunkPlan(5, 0, (64, 64), 0)

  def upscaled(kind):
    return np.stack(list(inference.upscale_video(model, iter(clip), len(clip), plan, run_tiles=run_tiles,
                                                 execution_plan=XLA_CONVOLUTIONS,
                                                 color_fix=kind))).astype(np.float64)

  means = lambda frames: frames.mean(axis=(1, 2))  # noqa: E731  (frames, channels)
  assert np.abs(means(upscaled("none")) - means(reference)).max() > 20  # the cast
  adain = upscaled("adain")
  np.testing.assert_allclose(means(adain), means(reference), atol=1.0)  # uint8 rounding and clipping
  np.testing.assert_allclose(adain.std(axis=(1, 2)), reference.std(axis=(1, 2)), rtol=0.06)  # clipping
  np.testing.assert_allclose(means(upscaled("wavelet")), means(reference), atol=4.0)
  assert inference.upscale_video.__defaults__[-1] == "none"
  with pytest.raises(ValueError, match="colour fix 'gray' is unknown"):
    next(inference.upscale_video(model, iter(clip), len(clip), plan, execution_plan=XLA_CONVOLUTIONS,
                                 color_fix="gray"))


def test_a_plan_without_a_tile_runs_whole_frames_as_far_as_memory_allows(model, clip):
  plan = chunking.ChunkPlan(5, 1, None, None)
  whole = inference.program_bytes(model, XLA_CONVOLUTIONS, 5, (20, 32), 1)
  halved = inference.fit_to_memory(model, XLA_CONVOLUTIONS, plan, 9, (20, 32), budget=whole - 1)  # (20, 16) needs less
  assert halved.tile == (20, 16) and halved.tile_overlap == 4  # the longer side halved, overlap a quarter
  with pytest.raises(ValueError, match=r"needs .* GiB per device even in 16x16 tiles"):
    inference.fit_to_memory(model, XLA_CONVOLUTIONS, plan, 9, (16, 16), budget=1)
  frames = clip[:5]
  whole_frames = inference.upscale_video(model, iter(frames), 5, plan, execution_plan=XLA_CONVOLUTIONS)
  got = np.stack(list(whole_frames))  # whole frames on this machine
  tiled = inference.upscale_video(model, iter(frames), 5, plan.with_tile((20, 32)), execution_plan=XLA_CONVOLUTIONS)
  want = np.stack(list(tiled))
  np.testing.assert_array_equal(got, want)
