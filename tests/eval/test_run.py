"""The evaluation protocol, the baseline and the frame metrics."""

import numpy as np
import pytest
from PIL import Image

from diffst_jax.eval import metrics, run
from diffst_jax.ops import resize


def _clip(frames=9, height=36, width=44, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_psnr_of_a_unit_error_is_48_13_db():
  target = _clip(1)[0]
  output = target.astype(np.int16) + np.where(target < 255, 1, -1)
  assert metrics.psnr(output.astype(np.uint8), target) == pytest.approx(10 * np.log10(255**2), abs=1e-9)
  assert metrics.psnr(target, target) == float("inf")


def test_lpips_is_zero_for_identical_frames_and_positive_otherwise():
  lpips = metrics.Lpips()
  a, b = _clip(2, 48, 48, seed=1), _clip(2, 48, 48, seed=2)
  np.testing.assert_allclose(lpips(a, a), 0.0, atol=1e-6)
  assert np.all(lpips(a, b) > 0.05)


def test_ground_truth_crops_to_what_the_protocol_reproduces():
  assert run.ground_truth(_clip(10, 37, 45), 4, 2).shape == (9, 36, 44, 3)
  with pytest.raises(ValueError, match="too small"):
    run.ground_truth(_clip(2), 4, 2)


@pytest.mark.parametrize("protocol", ["bicubic", "realistic"])
def test_low_quality_keeps_every_second_frame_at_quarter_size(protocol):
  hr = _clip()
  lr = run.low_quality(hr, protocol, 4, 2, seed=3)
  assert lr.shape == (5, 9, 11, 3) and lr.dtype == np.uint8
  np.testing.assert_array_equal(lr, run.low_quality(hr, protocol, 4, 2, seed=3))
  if protocol == "bicubic":
    expected = Image.fromarray(hr[4]).resize((11, 9), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(lr[2], np.asarray(expected))


def test_bicubic_blend_interpolates_between_upscaled_neighbours():
  lr = _clip(3, 9, 11)
  out = resize.bicubic_blend(lr, 4, 2)
  assert out.shape == (5, 36, 44, 3)
  up = [np.asarray(Image.fromarray(f).resize((44, 36), Image.Resampling.BICUBIC)).astype(np.float64) for f in lr]
  np.testing.assert_array_equal(out[2], up[1])
  np.testing.assert_array_equal(out[3], np.round((up[1] + up[2]) / 2).astype(np.uint8))


def test_evaluate_scores_the_perfect_method_best():
  clips = {"a": _clip(5, 64, 64, seed=4), "b": _clip(5, 64, 48, seed=5)}
  answers = {run.low_quality(c, "bicubic", 4, 2, seed=0).tobytes(): c for c in clips.values()}
  methods = {"perfect": lambda lr: answers[lr.tobytes()], "baseline": lambda lr: resize.bicubic_blend(lr, 4, 2)}
  results = run.evaluate(methods, clips, "bicubic", 4, 2, scorer=run.Scorer(dists=False), keep_outputs=True)
  perfect, baseline = results["perfect"]["mean"], results["baseline"]["mean"]
  assert perfect["psnr"] == perfect["psnr_y"] == float("inf") and perfect["ssim"] == pytest.approx(1.0)
  assert perfect["lpips"] < 1e-6 and perfect["tof"] == 0.0 and perfect["tlp"] < 1e-6
  assert 0 < baseline["psnr"] < 40 and baseline["ssim"] < 1 and baseline["tof"] > 0
  assert results["baseline"]["clips"]["b"]["frames"] == 5 and "dists" not in baseline
  for clip in results["baseline"]["clips"].values():  # 3 kept frames and 2 made in between
    assert clip["psnr"] == pytest.approx((3 * clip["psnr_key"] + 2 * clip["psnr_between"]) / 5)
    assert clip["psnr_key"] != clip["psnr_between"]
  hr, outputs = results.pop("outputs")["b"]
  np.testing.assert_array_equal(outputs["perfect"], hr)
  assert list(results["baseline"]["clips"]) == ["a", "b"]
  table = run.markdown_table(results)
  assert "| perfect | inf | inf | 1.0000 |" in table and "| baseline |" in table and "b PSNR / SSIM / LPIPS" in table


def test_several_draws_average_the_scores_of_single_draw_evaluations():
  clips = {"a": _clip(5, 64, 64, seed=4), "b": _clip(5, 64, 48, seed=5)}
  methods = {"baseline": lambda lr: resize.bicubic_blend(lr, 4, 2)}
  scorer = run.Scorer(dists=False)
  results = run.evaluate(methods, clips, "realistic", 4, 2, seed=10, scorer=scorer, draws=2)["baseline"]
  # Draw d of clip i has seed 10 + i + 2 d: draw 0 is the single-draw protocol, draw 1 that protocol at seed 12.
  single = [run.evaluate(methods, clips, "realistic", 4, 2, seed=seed, scorer=scorer)["baseline"] for seed in (10, 12)]
  for clip in clips:
    assert [draw["psnr"] for draw in results["draws"][clip]] == [s["clips"][clip]["psnr"] for s in single]
    assert results["clips"][clip]["lpips"] == pytest.approx(np.mean([s["clips"][clip]["lpips"] for s in single]))
    assert results["clips"][clip]["frames"] == 5
  assert results["mean"]["psnr"] == pytest.approx(np.mean([s["mean"]["psnr"] for s in single]))
  assert single[0]["mean"]["psnr"] != single[1]["mean"]["psnr"]
  assert "b PSNR of each draw" in run.markdown_table({"baseline": results})
  with pytest.raises(ValueError, match="draws must be 1, or more with the realistic protocol"):
    run.evaluate(methods, clips, "bicubic", 4, 2, scorer=scorer, draws=2)


def test_paired_protocol_takes_the_captured_low_quality_frames():
  hr, lq = _clip(9, 36, 44, seed=6), _clip(9, 9, 11, seed=7)
  np.testing.assert_array_equal(run.low_quality(hr, "paired", 4, 2, seed=0, paired=lq), lq[::2])
  with pytest.raises(ValueError, match=r"must have the ground truth's 9 frames at 9x11, got \(9, 36, 44, 3\)"):
    run.low_quality(hr, "paired", 4, 2, seed=0, paired=hr)


def test_the_ground_truths_motion_is_computed_once_per_clip(monkeypatch):
  clips = {"a": _clip(5, 32, 32, seed=4), "b": _clip(5, 32, 48, seed=5)}
  methods = {"one": lambda lr: resize.bicubic_blend(lr, 4, 2), "two": lambda lr: resize.bicubic_blend(lr, 4, 2)}
  flows, seen = metrics.clip_flows, []
  monkeypatch.setattr(metrics, "clip_flows", lambda clip: seen.append(clip.shape) or flows(clip))
  runs = []
  results = run.evaluate(methods, clips, "realistic", 4, 2, scorer=run.Scorer(dists=False), draws=2,
                         progress=lambda items: runs.extend(items) or items)
  assert len(runs) == 2 * 2 * 2  # clips x draws x methods, each once through the progress bar
  assert len(seen) == 2 + 2 * 2 * 2  # each ground truth once, each output once
  hr = run.ground_truth(clips["b"], 4, 2)
  output = resize.bicubic_blend(run.low_quality(hr, "bicubic", 4, 2, seed=0), 4, 2)
  assert metrics.tof(output, hr, flows(hr)) == metrics.tof(output, hr) > 0
  assert results["one"]["mean"]["tof"] == results["two"]["mean"]["tof"]
