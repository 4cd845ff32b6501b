"""Scores DiffST and the trivial baseline on ground-truth clips with the space-time SR protocol (SPEC §9).

  python evaluate.py --gt heldout/ --out results/heldout --checkpoint runs/tiny/model
  python evaluate.py --gt heldout/ --out results/heldout_real --checkpoint runs/tiny/model --protocol realistic

--gt is a folder of clips (videos PyAV reads, or folders of PNG frames). Each clip's odd frames (1st, 3rd, ...),
degraded by the protocol, are the input; all frames are scored (PSNR, LPIPS-Alex; RGB, no border crop). Writes
scores.json and scores.md into --out (a new or empty folder).
"""

import argparse
import json
import pathlib
import sys


def parse_args(argv):
  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.eval import run  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gt", required=True, help="folder of ground-truth clips")
  parser.add_argument("--out", required=True, help="new or empty folder for scores.json and scores.md")
  parser.add_argument("--checkpoint", required=True, help="our DiffST checkpoint directory (e.g. WORKDIR/model)")
  parser.add_argument("--protocol", choices=run.PROTOCOLS, default="bicubic")
  parser.add_argument("--seed", type=int, default=0, help="seed of the realistic protocol's first clip")
  parser.add_argument("--chunk-frames", type=int, default=inference.DEFAULT_PLAN.chunk_frames)
  parser.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"), default=inference.DEFAULT_PLAN.tile)
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  return parser.parse_args(argv)


def evaluate(args) -> dict:
  import dataclasses  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.convert import loader  # pylint: disable=import-outside-toplevel
  from diffst_jax.data import builder  # pylint: disable=import-outside-toplevel
  from diffst_jax.eval import run  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import video  # pylint: disable=import-outside-toplevel
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel

  out = loader.check_new_directory(args.out)
  checkpoint = pathlib.Path(args.checkpoint)
  model = diffst.load(checkpoint)
  s_x, s_t = model.config.space_scale, model.config.time_scale
  plan = dataclasses.replace(inference.DEFAULT_PLAN, chunk_frames=args.chunk_frames, tile=tuple(args.tile))
  clips = {path.stem if path.is_file() else path.name: video.read_video(path)[0]
           for path in builder.find_videos(args.gt)}
  methods = {
      f"DiffST ({checkpoint.name})": lambda lr: np.stack(list(inference.upscale_video(model, lr, len(lr), plan))),
      f"bicubic x{s_x} + linear blend x{s_t}": lambda lr: run.bicubic_blend(lr, s_x, s_t),
  }
  results = run.evaluate(methods, clips, args.protocol, s_x, s_t, args.seed)
  out.mkdir(parents=True, exist_ok=True)
  (out / "scores.json").write_text(json.dumps({"protocol": args.protocol, "checkpoint": str(checkpoint),
                                               "results": results}, indent=2) + "\n")
  table = run.markdown_table(results)
  (out / "scores.md").write_text(f"Protocol: {args.protocol} (x{s_x} space, x{s_t} time); PSNR and LPIPS-Alex on "
                                 f"RGB, no border crop, all frames.\n\n{table}")
  print(table)
  return results


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    evaluate(args)
  except (ValueError, OSError) as error:
    if args.debug:
      raise
    print(f"evaluate.py: error: {str(error).splitlines()[0]}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
