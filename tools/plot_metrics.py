"""Plots the loss curves of training runs (their metrics.jsonl) into one PNG, one panel per run.

  python tools/plot_metrics.py --workdir runs/tiny_vae runs/tiny --out docs/tiny_loss.png
"""

import argparse

from diffst_jax import cli
from diffst_jax.io import paths
from diffst_jax.train import curves


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", nargs="+", required=True, type=paths.resolve)
  parser.add_argument("--out", required=True, type=paths.resolve)
  args = parser.parse_args()
  print(f"wrote {curves.plot_loss_curves(args.workdir, args.out)}")


if __name__ == "__main__":
  cli.script(main)
