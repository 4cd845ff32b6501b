"""The CFCA x VRG ablation of the tiny recipe (docs/experiments/training-log.md): four trials, each trained from the
stage-0 VAE and scored on the held-out clips, against the built-in baseline.

  python -m diffst_jax.sweep --sweep configs/sweeps/ablation_tiny.py --workdir runs/sweep_ablation_tiny
"""


def get_sweep():
  return dict(
      config="configs/tiny.py",
      base={"data.videos": "tiny_data/train", "init.vae": "runs/tiny_vae/model"},
      grid={"model.cfca.enabled": [True, False], "model.vrg.enabled": [True, False]},
      evaluate={"gt": "tiny_data/heldout", "protocol": "bicubic", "no_ablations": True},
  )
