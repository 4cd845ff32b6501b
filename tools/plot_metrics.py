"""Plots the loss curves of training runs (their metrics.jsonl) into one PNG, one panel per run.

  python tools/plot_metrics.py --workdir runs/tiny_vae runs/tiny --out docs/tiny_loss.png
"""

import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(workdir: pathlib.Path) -> dict[int, dict]:
  """The last record of each step (a resumed run may log a step again)."""
  records = (json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines())
  return {record["step"]: record for record in records}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", nargs="+", required=True, type=pathlib.Path)
  parser.add_argument("--out", required=True, type=pathlib.Path)
  args = parser.parse_args()
  figure, axes = plt.subplots(1, len(args.workdir), figsize=(6 * len(args.workdir), 4), squeeze=False)
  for axis, workdir in zip(axes[0], args.workdir):
    metrics = read_metrics(workdir)
    steps = sorted(metrics)
    for name in sorted({k for record in metrics.values() for k in record if k.startswith("loss")}):
      points = [(step, metrics[step][name]) for step in steps if name in metrics[step]]
      axis.plot(*zip(*points), label=name)
    axis.set(title=workdir.name, xlabel="step", yscale="log")
    axis.legend()
    axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(args.out, dpi=100)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
