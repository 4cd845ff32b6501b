"""Loss curves of training runs: their metrics.jsonl read back (the last record of each step) and plotted, one
panel per run, into a PNG; train.py writes WORKDIR/loss.png at the end of a run, tools/plot_metrics.py several
runs side by side."""

import io
import json
from collections.abc import Sequence

from diffst_jax.io import paths


def read_metrics(workdir: paths.Path) -> dict[int, dict]:
  """The last record of each step (a resumed run may log a step again)."""
  records = (json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines())
  return {record["step"]: record for record in records}


def plot_loss_curves(workdirs: Sequence[paths.Path], out: paths.Path) -> paths.Path:
  """Every loss term of each run over its steps, log scale, one panel per run."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

  figure, axes = pyplot.subplots(1, len(workdirs), figsize=(6 * len(workdirs), 4), squeeze=False)
  for axis, workdir in zip(axes[0], workdirs):
    metrics = read_metrics(workdir)
    steps = sorted(metrics)
    for name in sorted({key for record in metrics.values() for key in record if key.startswith("loss")}):
      points = [(step, metrics[step][name]) for step in steps if name in metrics[step]]
      axis.plot(*zip(*points), label=name)
    axis.set(title=workdir.name, xlabel="step", yscale="log")
    axis.legend()
    axis.grid(alpha=0.3)
  figure.tight_layout()
  picture = io.BytesIO()
  figure.savefig(picture, format="png", dpi=100)
  pyplot.close(figure)
  out.write_bytes(picture.getvalue())
  return out
