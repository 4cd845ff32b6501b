"""The default weights infer.py ships (weights/tiny) on real frames they never saw, against the trivial baseline,
run as infer.py runs them (the checkpoint's tiles and recorded colour fix).

tests/assets/carphone_heldout_9 is frames 100-108 of carphone_pristine (176x144), held out of the training clips
(weights/README.md); tests/assets/heldout_dune_9 is a crop of a scene no training clip comes from (its README). The
evaluation protocol of evaluate.py: odd frames, bicubic-downscaled or realistically degraded, go in; all 9 frames
are scored.
"""

import numpy as np
from PIL import Image

from diffst_jax import chunking, inference
from diffst_jax.eval import metrics, run
from diffst_jax.models import diffst
from diffst_jax.ops import resize
from tests.conftest import ROOT

WEIGHTS = ROOT / "weights" / "tiny"
HELD_OUT = ROOT / "tests" / "assets" / "carphone_heldout_9"
UNSEEN_SCENE = ROOT / "tests" / "assets" / "heldout_dune_9"


def _frames(folder):
  return run.ground_truth(np.stack([np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob(
      "*.png"))]), 4, 2)


def _upscaled(lr, color_fix):
  model = diffst.load(WEIGHTS)
  plan = chunking.plan_for(diffst.trained_sizes(WEIGHTS))  # as infer.py runs it: 16x16 LR tiles
  return np.stack(list(inference.upscale_video(model, lr, len(lr), plan, color_fix=color_fix)))


def test_shipped_weights_are_the_documented_model():
  model = diffst.load(WEIGHTS)
  config = model.config
  assert (config.space_scale, config.time_scale) == (4, 2)
  assert config.vae.spatial_compression == 4
  assert (config.dit.num_attention_heads, config.dit.attention_head_dim, config.dit.num_layers) == (2, 32, 2)
  assert config.cfca.enabled and config.vrg.enabled


def test_shipped_weights_against_bicubic_and_blending_on_held_out_frames():
  hr = _frames(HELD_OUT)
  lr = run.low_quality(hr, "realistic", 4, 2, seed=0)
  ours = _upscaled(lr, diffst.recorded_color_fix(WEIGHTS))
  baseline = resize.bicubic_blend(lr, 4, 2)
  assert ours.shape == baseline.shape == hr.shape
  lpips = metrics.Lpips()
  psnr = {name: np.mean([metrics.psnr(o, g) for o, g in zip(out, hr)]) for name, out in (("ours", ours),
                                                                                       ("baseline", baseline))}
  perceptual = {name: float(np.mean(lpips(out, hr))) for name, out in (("ours", ours), ("baseline", baseline))}
  print(f"[shipped] PSNR {psnr}, LPIPS {perceptual}")
  assert perceptual["ours"] < perceptual["baseline"] - 0.1  # measured: 0.411 against 0.574
  # Measured: 23.25 against 22.72 dB with the wavelet colour fix (23.35 without, 23.18 in one 128x128 tile before
  # the checkpoint recorded its 16x16 training crop as infer.py's tile); this bound catches a regression.
  assert psnr["ours"] > psnr["baseline"] + 0.4


def test_shipped_weights_keep_the_colour_of_a_scene_they_never_saw():
  """The colour bound of issue 26 (the clip's mean colour within 3 levels of the ground truth) on clean bicubic x4
  input of an unseen scene (grass, sea and sky), with the colour fix the checkpoint records; without it the tiny
  model's colours drift by 27 levels. Its PSNR is still far under the baseline's (17.5 against 22.0 dB)."""
  hr = _frames(UNSEEN_SCENE)
  lr = run.low_quality(hr, "bicubic", 4, 2, seed=0)
  assert diffst.recorded_color_fix(WEIGHTS) == "wavelet"  # tools/choose_color_fix.py on 13 held-out scenes
  corrected, uncorrected = _upscaled(lr, "wavelet"), _upscaled(lr, "none")
  psnr = lambda out: np.mean([metrics.psnr(o, g) for o, g in zip(out, hr)])  # noqa: E731
  print(f"[unseen scene] colour offset {metrics.colour_offset(corrected, hr):.2f} (without the fix "
        f"{metrics.colour_offset(uncorrected, hr):.2f}), PSNR {psnr(corrected):.2f} (without {psnr(uncorrected):.2f}, "
        f"baseline {psnr(resize.bicubic_blend(lr, 4, 2)):.2f})")
  assert metrics.colour_offset(corrected, hr) <= 3.0 < 20.0 < metrics.colour_offset(uncorrected, hr)
  assert psnr(corrected) > psnr(uncorrected) + 2.0  # measured: 17.51 against 14.99 dB
