"""Chooses a checkpoint's default colour fix (infer.py and evaluate.py's `--color-fix auto`) from evaluations of it
on held-out scenes, and with --record writes the choice into its model.json (`inference.color_fix`).

  python evaluate.py --gt heldout/ --out results/clean --checkpoint CKPT --color-fix none wavelet adain
  python evaluate.py --gt heldout/ --out results/degraded --checkpoint CKPT --color-fix none wavelet adain \\
      --protocol realistic
  python tools/choose_color_fix.py --checkpoint CKPT results/clean/scores.json results/degraded/scores.json --record

The choice: the fix with the highest PSNR, averaged over the evaluations, among those whose worst clip's mean colour
is within --colour-levels of the ground truth's in every evaluation (all fixes, if none is).
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli  # noqa: E402
from diffst_jax.io import checkpoint as checkpoints  # noqa: E402
from diffst_jax.models import diffst  # noqa: E402


def read_evaluation(path: pathlib.Path, checkpoint: pathlib.Path) -> dict[str, dict]:
  """{colour fix: that DiffST row's results} of one evaluate.py scores.json of `checkpoint`."""
  try:
    report = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"{path}: not a readable scores.json of evaluate.py ({error})") from error
  rows = report.get("color_fix") if isinstance(report, dict) else None
  if not rows:
    raise ValueError(f"{path}: records no colour fix per row; evaluate it again with --color-fix none wavelet adain")
  if pathlib.Path(report.get("checkpoint", "")).resolve() != checkpoint.resolve():
    raise ValueError(f"{path}: scores checkpoint {report.get('checkpoint')}, not --checkpoint {checkpoint}")
  return {kind: report["results"][name] for name, kind in rows.items()}


def choose(evaluations: list[dict[str, dict]], colour_levels: float) -> tuple[str, dict[str, tuple[float, float]]]:
  """The chosen fix and, per fix measured in every evaluation, (mean PSNR, worst clip's colour offset)."""
  kinds = [kind for kind in evaluations[0] if all(kind in evaluation for evaluation in evaluations)]
  if not kinds:
    raise ValueError("no colour fix is scored in every evaluation given")
  summary = {}
  for kind in kinds:
    psnr = sum(evaluation[kind]["mean"]["psnr"] for evaluation in evaluations) / len(evaluations)
    colour = max(clip["colour"] for evaluation in evaluations for clip in evaluation[kind]["clips"].values())
    summary[kind] = (psnr, colour)
  faithful = [kind for kind in kinds if summary[kind][1] <= colour_levels] or kinds
  return max(faithful, key=lambda kind: summary[kind][0]), summary


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="our DiffST checkpoint directory the scores are of")
  parser.add_argument("scores", nargs="+", help="scores.json files of evaluate.py runs with several --color-fix")
  parser.add_argument("--colour-levels", type=float, default=3.0, help="largest acceptable mean colour offset")
  parser.add_argument("--record", action="store_true", help="write the choice into the checkpoint's model.json")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)

  def work() -> None:
    checkpoint = pathlib.Path(args.checkpoint)
    if not diffst.is_diffst(checkpoint):
      raise ValueError(f"--checkpoint {checkpoint}: not a DiffST checkpoint of ours (no model.json of a DiffST)")
    chosen, summary = choose([read_evaluation(pathlib.Path(p), checkpoint) for p in args.scores], args.colour_levels)
    for kind, (psnr, colour) in summary.items():
      print(f"{kind}\tPSNR {psnr:.2f} dB\tworst clip's colour off by {colour:.2f}{'  <- chosen' * (kind == chosen)}")
    if args.record:
      checkpoints.record_inference(checkpoint, color_fix=chosen)
      print(f"recorded color_fix={chosen} in {checkpoint / checkpoints.METADATA_FILE}")

  return cli.run("choose_color_fix.py", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
