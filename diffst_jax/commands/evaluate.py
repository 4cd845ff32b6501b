"""Scores DiffST, its ablations and the trivial baseline on ground-truth clips (space-time SR protocol, DESIGN §9).

  python evaluate.py --gt heldout/ --out results/heldout --checkpoint runs/tiny/model
  python evaluate.py --gt heldout/ --out results/heldout_real --checkpoint runs/tiny/model --protocol realistic
  python evaluate.py --gt RealVSR/GT --lq RealVSR/LQ --protocol paired --out results/realvsr --checkpoint ...

--gt is a folder of clips (videos PyAV reads, or folders of PNG frames). Each clip's odd frames (1st, 3rd, ...),
degraded by the protocol (or taken from the same-named clip of --lq with --protocol paired), are the input; all
frames are scored: PSNR (RGB and Y), SSIM (Y), LPIPS-Alex, DISTS, tOF, tLP (conventions: diffst_jax/eval/metrics.py).
Methods: the checkpoint, the checkpoint with CFCA switched off (linear frame blending) and with VRG switched off,
and bicubic + linear blending. Writes --out (a new or empty folder, filled only once all is scored): scores.json (per
clip and mean), scores.md (the tables), strips/CLIP.png (for a few synthesized frames: input upscaled by the
baseline, DiffST, ground truth, side by side), and report.html (open it from disk: the scores, PSNR per frame, and
every method's output beside the ground truth as videos that play in sync, in report/; diffst_jax/eval/report.py).
The no-reference metrics of the paper (CLIP-IQA, MUSIQ, MANIQA, DOVER) are not computed.
"""

import argparse
import json
import pathlib
import sys


def parse_args(argv):
  from diffst_jax import chunking  # pylint: disable=import-outside-toplevel
  from diffst_jax.eval import run  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gt", required=True, help="folder of ground-truth clips")
  parser.add_argument("--lq", help="folder of captured low-quality clips named like --gt's (--protocol paired)")
  parser.add_argument("--out", required=True,
                      help="new or empty folder for scores.json, scores.md, strips/ and report.html")
  parser.add_argument("--checkpoint", required=True, help="our DiffST checkpoint directory (e.g. WORKDIR/model)")
  parser.add_argument("--protocol", choices=run.PROTOCOLS, default="bicubic")
  parser.add_argument("--seed", type=int, default=0, help="seed of the realistic protocol's first clip")
  parser.add_argument("--draws", type=int, default=1, help="realistic protocol: degradations drawn per clip, scores "
                      "averaged over them (one draw's scores move by a dB or more with its codec and bitrate)")
  parser.add_argument("--crop-border", type=int, default=0, help="pixels left out on each side for PSNR and SSIM")
  parser.add_argument("--no-dists", action="store_true", help="skip DISTS (it needs the torch extra's weights)")
  parser.add_argument("--no-ablations", action="store_true", help="skip the CFCA-off and VRG-off runs")
  parser.add_argument("--color-fix", choices=("auto", "none", "wavelet", "adain"), nargs="+", default=["auto"],
                      help="the DiffST runs' colour fix, as infer.py's; auto: what the checkpoint records, else none. "
                      "Several: a DiffST row for each, side by side (the ablations take the first)")
  parser.add_argument("--strip-frames", type=int, default=3, help="synthesized frames per comparison strip")
  parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                      help="as infer.py's: the compute dtype of the VAE and DiT, which hold their weights in it; auto: "
                      "bf16 on GPU and TPU, fp32 on CPU")
  chunking.add_plan_flags(parser)
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  if (args.protocol == "paired") != (args.lq is not None):
    parser.error("--lq goes with --protocol paired, and --protocol paired needs --lq")
  return args


def _read_clips(folder: str, s_x: int, s_t: int) -> tuple[dict, dict]:
  """{clip name: frames} of every clip in `folder`, each checked against the protocol's minimum size, and {clip
  name: frames per second}."""
  from diffst_jax.data import builder  # pylint: disable=import-outside-toplevel
  from diffst_jax.eval import run  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import video  # pylint: disable=import-outside-toplevel

  clips, rates = {}, {}
  for path in builder.find_videos(folder):
    name = path.stem if path.is_file() else path.name
    frames, rates[name] = video.read_video(path)
    clips[name] = run.ground_truth(frames, s_x, s_t, path)
  return clips, rates


def evaluate(args) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from diffst_jax import chunking, inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.eval import report, run  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import outputs, strips  # pylint: disable=import-outside-toplevel
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel
  from diffst_jax.ops import resize  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import backend  # pylint: disable=import-outside-toplevel

  for flag, value, least in (("--strip-frames", args.strip_frames, 1), ("--crop-border", args.crop_border, 0),
                             ("--draws", args.draws, 1)):
    if value < least:
      raise ValueError(f"{flag} {value}: must be at least {least}")
  backend.enable_compilation_cache()
  out = outputs.check_destination(args.out, [args.gt, args.checkpoint, *([args.lq] if args.lq else [])], folder=True)
  outputs.check_new_folder(out, "--out")
  checkpoint = pathlib.Path(args.checkpoint)
  model, _ = inference.runnable(diffst.load(checkpoint), args.precision)
  s_x, s_t = model.config.space_scale, model.config.time_scale
  plan = chunking.plan_from_flags(args, diffst.trained_sizes(checkpoint))
  clips, rates = _read_clips(args.gt, s_x, s_t)
  smallest = min((min(hr.shape[1:3]), name) for name, hr in clips.items())
  if 2 * args.crop_border >= smallest[0]:
    raise ValueError(f"--crop-border {args.crop_border}: leaves nothing of {smallest[1]}, whose smaller side is "
                     f"{smallest[0]} pixels; it must be under half of that")
  paired = _read_clips(args.lq, 1, s_t)[0] if args.lq else None
  if paired is not None and sorted(paired) != sorted(clips):
    raise ValueError(f"--lq must hold the clips of --gt by name: {sorted(clips)} vs {sorted(paired)}")
  color_fixes = list(dict.fromkeys(kind if kind != "auto" else diffst.recorded_color_fix(checkpoint)
                                    for kind in args.color_fix))
  upscaler = lambda m, kind: lambda lr: np.stack(list(  # noqa: E731
      inference.upscale_video(m, lr, len(lr), plan, color_fix=kind)))
  if len(color_fixes) == 1:
    methods = {f"DiffST ({checkpoint.name})": upscaler(model, color_fixes[0])}
  else:
    methods = {f"DiffST ({checkpoint.name}, colour fix {kind})": upscaler(model, kind) for kind in color_fixes}
  if not args.no_ablations:
    methods |= {f"DiffST without {part.upper()}": upscaler(diffst.without(model, part), color_fixes[0])
                for part in diffst.ABLATIONS if getattr(model.config, part).enabled}
  baseline = f"bicubic x{s_x} + linear blend x{s_t}"
  methods[baseline] = lambda lr: resize.bicubic_blend(lr, s_x, s_t)
  scorer = run.Scorer(dists=not args.no_dists, crop_border=args.crop_border)
  results = run.evaluate(methods, clips, args.protocol, s_x, s_t, args.seed, scorer, paired, keep_outputs=True,
                         draws=args.draws, progress=lambda runs: tqdm(runs, desc="clips x methods", unit="run"))
  outputs_by_clip = results.pop("outputs")
  table = run.markdown_table(results)
  draws = f", {args.draws} degradation draws per clip (scores: their means)" if args.draws > 1 else ""
  with outputs.writing(out, outputs.EVALUATION) as folder:
    (folder / "scores.json").write_text(json.dumps({"protocol": args.protocol, "draws": args.draws,
                                                    "checkpoint": str(checkpoint), "precision": args.precision,
                                                    "crop_border": args.crop_border,
                                                    "color_fix": dict(zip(methods, color_fixes)),
                                                    "results": results}, indent=2) + "\n")
    (folder / "scores.md").write_text(f"Protocol: {args.protocol} (x{s_x} space, x{s_t} time{draws}); all frames, "
                                      f"RGB PSNR / Y PSNR / Y SSIM with a {args.crop_border}-pixel border crop "
                                      f"(conventions: diffst_jax/eval/metrics.py).\n\n{table}")
    (folder / "strips").mkdir()
    for clip_name, (hr, by_method) in outputs_by_clip.items():
      synthesized = list(range(1, len(hr), s_t)) or [0]  # frames no input shows: what the model had to make
      picks = [synthesized[i] for i in np.linspace(0, len(synthesized) - 1, min(
          args.strip_frames, len(synthesized))).round().astype(int)]
      shown = [baseline, next(iter(methods))]
      labels = [(name.split(" (")[0], f"{results[name]['clips'][clip_name]['psnr']:.2f} dB") for name in shown]
      strip = strips.comparison_strip([by_method[name] for name in shown] + [hr], picks, labels + [("ground truth",)])
      Image.fromarray(strip).save(folder / "strips" / f"{clip_name}.png")
    report.write(folder, f"{checkpoint.name} on {pathlib.Path(args.gt).name}: {args.protocol} protocol", results,
                 outputs_by_clip, rates, s_t, args.crop_border)
  print(table)
  return results


def main(argv=None) -> int:
  from diffst_jax import cli  # pylint: disable=import-outside-toplevel

  args = parse_args(argv)

  def work() -> None:
    evaluate(args)  # its scores are printed and written; the exit code does not carry them

  return cli.run(cli.program_name("evaluate.py", "diffst-evaluate"), work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
