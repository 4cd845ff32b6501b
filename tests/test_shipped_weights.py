"""The default weights infer.py ships (weights/tiny) on real frames they never saw, against the trivial baseline.

tests/assets/carphone_heldout_9 is frames 100-108 of carphone_pristine (176x144), held out of the training clips
(weights/README.md). The evaluation protocol of evaluate.py: odd frames, realistically degraded, go in; all 9 frames
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


def test_shipped_weights_are_the_documented_model():
  model = diffst.load(WEIGHTS)
  config = model.config
  assert (config.space_scale, config.time_scale) == (4, 2)
  assert config.vae.spatial_compression == 4
  assert (config.dit.num_attention_heads, config.dit.attention_head_dim, config.dit.num_layers) == (2, 32, 2)
  assert config.cfca.enabled and config.vrg.enabled


def test_shipped_weights_against_bicubic_and_blending_on_held_out_frames():
  hr = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in sorted(HELD_OUT.glob("*.png"))])
  hr = run.ground_truth(hr, 4, 2)
  lr = run.low_quality(hr, "realistic", 4, 2, seed=0)
  model = diffst.load(WEIGHTS)
  plan = chunking.plan_for(diffst.trained_sizes(WEIGHTS))  # as infer.py runs it: 16x16 LR tiles
  ours = np.stack(list(inference.upscale_video(model, lr, len(lr), plan)))
  baseline = resize.bicubic_blend(lr, 4, 2)
  assert ours.shape == baseline.shape == hr.shape
  lpips = metrics.Lpips()
  psnr = {name: np.mean([metrics.psnr(o, g) for o, g in zip(out, hr)]) for name, out in (("ours", ours),
                                                                                       ("baseline", baseline))}
  perceptual = {name: float(np.mean(lpips(out, hr))) for name, out in (("ours", ours), ("baseline", baseline))}
  print(f"[shipped] PSNR {psnr}, LPIPS {perceptual}")
  assert perceptual["ours"] < perceptual["baseline"] - 0.1  # measured: 0.419 against 0.574
  # Measured: 23.35 against 22.72 dB (23.18 in one 128x128 tile, before the checkpoint recorded its 16x16 training
  # crop as infer.py's tile); this bound catches a regression.
  assert psnr["ours"] > psnr["baseline"] + 0.4
