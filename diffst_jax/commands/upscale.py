"""Upscales a low-resolution, low-frame-rate video with DiffST: x s_x larger and x s_t faster, in one step.

  python infer.py --input clip.mp4 --output clip_x4.mp4
  python infer.py --input frames/ --output out_frames/ --checkpoint checkpoints/diffst --chunk-frames 9
  python infer.py --input videos/ --output upscaled/            # every video of a folder (or a .txt list)
  diffst-upscale --input clip.mp4 --output clip_x4.mp4          # the same, installed (pip install .)

IN: a video PyAV reads (mp4, mkv, avi, mov, ...) or a folder of PNG frames. OUT: an .mp4 (H.264; --crf 0 is
lossless) or a folder (PNG frames). A set of videos, --input a folder of videos and/or PNG-frame folders or a .txt
file listing them (one path per line), goes to an --output folder: NAME.mp4 per video, a PNG folder per PNG folder.
Its videos are spread over the processes of a multi-host run and over the data axis of --mesh on each; outputs
already complete are skipped, so a killed job resumes by running the same command. N input frames give
s_t (N - 1) + 1 output frames at s_t times the fps.
Without --checkpoint (or --config) the default weights are used: weights/tiny, the tiny DiffST trained on CPU on
two real clips (how, and its held-out scores: weights/README.md, docs/RESULTS.md). It is a small demonstration
model; for real footage pass --checkpoint with a converted or trained full-size DiffST.
"""

import argparse
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import pathlib
import sys
import traceback

from diffst_jax import cli, shipped

LARGE_OUTPUT_PIXELS = 7680 * 4320  # 8K UHD: larger output frames need --large-output


@dataclasses.dataclass(frozen=True)
class Options:
  """The command line's choices (`parse_args`; --help says what each does), checked by `checked_flags` before any
  work."""

  input: str
  output: str
  checkpoint: str | None = None
  config: str | None = None
  time_scale: int | None = None
  space_scale: int | None = None
  chunk_frames: int | None = None
  overlap_frames: int | None = None
  tile: tuple[int, int] | None = None
  tile_overlap: int | None = None
  tile_batch: int | None = None
  precision: str = "auto"
  color_fix: str = "auto"
  mesh: str | None = None
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  multihost: str = "auto"
  crf: int = 18
  pix_fmt: str | None = None
  fps: str | None = None
  no_audio: bool = False
  large_output: bool = False
  overwrite: bool = False
  debug: bool = False


def parse_args(argv) -> Options:
  from diffst_jax import chunking  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True, help="video file or folder of PNG frames; or a set of videos: a folder "
                      "of them, or a .txt file listing them")
  parser.add_argument("--output", required=True, help=".mp4 file or folder for PNG frames; for a set, a folder")
  parser.add_argument("--checkpoint", help="our DiffST checkpoint directory (default: see above)")
  parser.add_argument("--config", help="FILE[:PRESET], a config file with get_config(PRESET): its model at "
                      "initialization (untrained)")
  parser.add_argument("--time-scale", type=int, choices=(2, 4), help="s_t (default: the model's)")
  parser.add_argument("--space-scale", type=int, choices=(1, 2, 4), help="s_x (default: the model's)")
  chunking.add_plan_flags(parser)
  parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                      help="compute dtype of the VAE and DiT, which hold their weights in it; auto: bf16 on GPU and "
                      "TPU, fp32 on CPU")
  parser.add_argument("--color-fix", choices=("auto", "none", "wavelet", "adain"), default="auto",
                      help="correct each output frame's colour towards the bicubic-upscaled, time-blended input's "
                      "(StableSR's wavelet or AdaIN colour fix); auto: what the checkpoint's model.json records, "
                      "else none")
  parser.add_argument("--mesh", help="spread the model and each clip over devices, e.g. context=8 or "
                      "fsdp=2,context=4 (default: one device); for a set of videos, the devices of each process, whose "
                      "data axis runs that many videos side by side (default: data = the process's device count)")
  parser.add_argument("--coordinator-address", help="multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)")
  parser.add_argument("--num-processes", type=int, help="multi-host: number of processes (or JAX_NUM_PROCESSES)")
  parser.add_argument("--process-id", type=int, help="multi-host: this process's index (or JAX_PROCESS_ID)")
  parser.add_argument("--multihost", choices=("auto", "off"), default="auto", help="auto: join the processes of a "
                      "detected cluster (TPU VM, SLURM or Open MPI job of several tasks) as JAX finds them; off: one "
                      "process")
  parser.add_argument("--crf", type=int, default=18, help="H.264 quality for .mp4 output (0 = lossless)")
  parser.add_argument("--pix-fmt", choices=("yuv420p", "yuv444p"), help="pixel format of .mp4 output (default: "
                      "yuv420p, which every player opens; yuv444p at --crf 0, the lossless one many players cannot)")
  parser.add_argument("--fps", help="frame rate of PNG-folder input, e.g. 25, 29.97 or 30000/1001 (default 30); a "
                      "video's own rate is kept")
  parser.add_argument("--no-audio", action="store_true", help="leave the input's audio out of the output (kept by "
                      "default: copied unchanged into .mp4 output)")
  parser.add_argument("--large-output", action="store_true", help="run even when the output frames are larger than "
                      "8K (7680x4320 pixels' worth)")
  parser.add_argument("--overwrite", action="store_true", help="replace a previous output of infer.py (a folder "
                      "holding anything else, or a video it did not write, is kept)")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  namespace = vars(parser.parse_args(argv))
  return Options(**namespace | {"tile": tuple(namespace["tile"]) if namespace["tile"] else None})


def checkpoint_path(options: Options) -> pathlib.Path | None:
  """The checkpoint to run (None for --config's model at initialization)."""
  if options.config:
    return None
  path = pathlib.Path(options.checkpoint) if options.checkpoint else shipped.default_checkpoint()
  if not (path / "model.json").is_file():
    raise ValueError(f"{path}: not a DiffST checkpoint directory (no model.json); convert or train one first")
  return path


def build_model(options: Options, path: pathlib.Path | None):
  """The model to run (from the checkpoint at `path`, else --config's) at the scales asked for, and a sentence saying
  which weights it has."""
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel

  if path is None:
    config_file, _, preset = shipped.config_path(options.config).partition(":")
    model = diffst.init(diffst.config_from_file(config_file, preset or None))
    which = (f"{config_file}{':' + preset if preset else ''} at initialization (untrained: CFCA = linear blending, "
             "VRG gated off); pass --checkpoint for trained weights")
  else:
    model = diffst.load(path)
    which = (f"checkpoint {path}" if options.checkpoint else
             f"default weights: {path} (the tiny DiffST, weights/README.md)")
  changes = {}
  if options.time_scale:
    changes["cfca"] = dataclasses.replace(model.config.cfca, time_scale=options.time_scale)
  if options.space_scale:
    changes["space_scale"] = options.space_scale
  if changes:
    model = diffst.with_config(model, dataclasses.replace(model.config, **changes))
  return model, which


def run(options: Options) -> int:
  """Upscales --input (one video, or each video of a set); the exit code: 1 if a video of a set failed, else 0."""
  import jax  # pylint: disable=import-outside-toplevel

  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import outputs, video, video_sets  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import backend, distributed  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.mesh import make_mesh  # pylint: disable=import-outside-toplevel

  backend.enable_compilation_cache()

  distributed.initialize(options.coordinator_address, options.num_processes, options.process_id, options.multihost)

  source = pathlib.Path(options.input)
  if video_sets.is_video_set(source):
    videos = video_sets.list_videos(source)
    folder = video_sets.check_output_folder(options.output, [source, *videos])
    path, settings, upscale = checked_flags(options, source, one_video=False)
    model = inference.in_precision(loaded_model(options, path), options.precision, jax.default_backend())
    return upscale_set(options, model, videos, folder, upscale, settings)
  output = video.check_output(options.output, [source], options.overwrite)
  path, _, upscale = checked_flags(options, source, one_video=True)
  quiet = jax.process_index() != 0
  with outputs.claimed(output) if not quiet else contextlib.nullcontext():
    info = probe(options, source, quiet=quiet)
    model, activate = inference.runnable(loaded_model(options, path), options.precision,
                                         make_mesh(options.mesh) if options.mesh else None)
    with activate() as execution_plan:
      upscale(model, source, output, info, execution_plan=execution_plan, quiet=quiet)
  return 0


def checked_flags(options: Options, source: pathlib.Path, one_video: bool):
  """The checkpoint to run, the outputs' settings (`output_settings`) and `upscale_file` with the chunk plan, colour
  fix and settings bound, once every flag and the checkpoint's recorded sizes are checked (before any work)."""
  from diffst_jax import chunking  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import video  # pylint: disable=import-outside-toplevel
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel

  if not 0 <= options.crf <= 51:
    raise ValueError(f"--crf {options.crf}: H.264 quality must be in 0-51 (0 lossless, 18 default, 51 worst)")
  if options.fps is not None and one_video and not source.is_dir():
    raise ValueError(f"--fps {options.fps}: for a folder of PNG frames only; {source} keeps its own frame rate")
  if options.fps is not None:
    video.parse_rate(options.fps)
  path = checkpoint_path(options)
  plan = chunking.plan_from_flags(options, diffst.trained_sizes(path) if path else {})
  color_fix = (options.color_fix if options.color_fix != "auto" else
               diffst.recorded_color_fix(path) if path else "none")
  settings = output_settings(options, path, plan, color_fix)
  return path, settings, functools.partial(upscale_file, options=options, plan=plan, color_fix=color_fix,
                                           settings=settings)


def output_settings(options: Options, path: pathlib.Path | None, plan, color_fix: str) -> str:
  """A fingerprint of what makes an output's frames: the model (its checkpoint's files, or --config), the scales,
  precision, colour fix, chunks and tiles, and the encoding. It is recorded with each output, so that a rerun on a
  set counts as done only the outputs made the same way."""
  import jax  # pylint: disable=import-outside-toplevel

  from diffst_jax.io import checkpoint  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import backend  # pylint: disable=import-outside-toplevel

  if path is None:
    model = {"config": options.config}
  else:
    files = [path / "model.json", *sorted((path / checkpoint.PARAMS_DIR).rglob("*"))]
    model = {"checkpoint": str(path.resolve()), "model.json": (path / "model.json").read_text(errors="replace"),
             "files": [[str(file.relative_to(path)), file.stat().st_size, file.stat().st_mtime_ns] for file in files
                       if file.is_file()]}
  fields = {"model": model, "time_scale": options.time_scale, "space_scale": options.space_scale,
            "precision": backend.compute_precision(options.precision, jax.default_backend()), "color_fix": color_fix,
            "plan": [plan.chunk_frames, plan.overlap_frames, plan.tile, plan.tile_overlap], "crf": options.crf,
            "pix_fmt": options.pix_fmt, "fps": options.fps}
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def loaded_model(options: Options, path: pathlib.Path | None):
  from diffst_jax.parallel import distributed  # pylint: disable=import-outside-toplevel

  model, which = build_model(options, path)
  distributed.say(f"diffst: {which}", file=sys.stderr)
  return model


def probe(options: Options, source: pathlib.Path, quiet: bool):
  """The input's frame count, size, rate and audio (video.probe), refused when it has fewer than 2 frames."""
  from diffst_jax.io import video  # pylint: disable=import-outside-toplevel

  info = video.probe(source, **({"png_rate": video.parse_rate(options.fps)} if options.fps else {}), quiet=quiet)
  if info.frames < 2:
    raise ValueError(f"{source}: has {info.frames} frame(s); at least 2 are needed to interpolate between")
  return info


def upscale_file(model, source: pathlib.Path, output: pathlib.Path, info, options: Options, plan, color_fix: str,
                 settings: str, quiet: bool, execution_plan=None, across_processes: bool = True) -> None:
  """Upscales the video `source` (`info`: its probe) into `output`, the model under `execution_plan` (default: one
  device). `across_processes`: the model is spread over every process's devices, every process runs each step and
  process 0 writes; else this process runs it alone."""
  import jax  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import video  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import plan as plan_lib  # pylint: disable=import-outside-toplevel

  say = (lambda *_: None) if quiet else functools.partial(print, file=sys.stderr)
  keep_audio = info.audio and not options.no_audio and output.suffix
  if info.audio and not options.no_audio and not output.suffix:
    say(f"note: {source}'s audio is not written to a folder of PNG frames; write an .mp4 to keep it")
  if output.suffix and (options.pix_fmt == "yuv444p" or (options.pix_fmt is None and options.crf == 0)):
    say(f"note: {output} is yuv444p H.264 (lossless at --crf 0), which many players and browsers cannot open; "
        "--pix-fmt yuv420p writes one they can")
  s_t, s_x = model.config.time_scale, model.config.space_scale
  height, width = video.encoded_size(s_x * info.height, s_x * info.width, output)
  if (height, width) != (s_x * info.height, s_x * info.width):
    say(f"warning: {output}: H.264 needs even frame sizes, so the {s_x * info.width}x{s_x * info.height} "
        f"output is written at {width}x{height}, its last column or row repeated; write PNG frames (an --output "
        "without suffix) for the exact size")
  if s_x * s_x * info.height * info.width > LARGE_OUTPUT_PIXELS and not options.large_output:
    raise ValueError(f"{source}: its {info.width}x{info.height} frames would give {s_x * info.width}x"
                     f"{s_x * info.height} output frames ({s_x * s_x * info.height * info.width / 1e6:.0f} "
                     "megapixels), "
                     f"above 8K ({LARGE_OUTPUT_PIXELS / 1e6:.0f} megapixels); pass --large-output to run it anyway, "
                     "or --space-scale 2 or 1")

  def progress(tiled, chunks: int, calls: int):
    tiles = inference.tiles_and_calls(tiled, info.height, info.width)[0]
    say(f"diffst: {source.name}: {info.frames} frames of {info.width}x{info.height} -> {s_t * (info.frames - 1) + 1} "
        f"of {width}x{height}, in {chunks} chunk{'s' * (chunks > 1)} of up to {tiled.chunk_frames} frames x {tiles} "
        f"tile{'s' * (tiles > 1)} of {tiled.tile[1]}x{tiled.tile[0]} LR pixels: {calls} model calls (the bar's "
        "estimate of the time left starts after the first)")
    bars.append(tqdm(total=calls, desc="model calls", unit="call", disable=quiet))
    return bars[-1].update

  bars = []
  execution_plan = execution_plan or plan_lib.ExecutionPlan()
  frames = inference.upscale_video(model, video.iter_frames(source), info.frames, plan, color_fix=color_fix,
                                   execution_plan=execution_plan,
                                   run_tiles=inference.model_tiles(model, execution_plan, across_processes),
                                   progress=progress)
  try:
    if not across_processes or jax.process_index() == 0:
      video.write_video(output, frames, info.rate * s_t, crf=options.crf, pix_fmt=options.pix_fmt,
                        audio_from=source if keep_audio else None, overwrite=options.overwrite, settings=settings)
    else:
      collections.deque(frames, maxlen=0)  # every process runs every step of the sharded model
  finally:
    for bar in bars:  # ends its line, so that what follows (an error, the summary) starts a new one
      bar.close()
  say(f"diffst: wrote {output}: {s_t * (info.frames - 1) + 1} frames, {width}x{height}, "
      f"{float(info.rate * s_t):g} fps{', audio copied' if keep_audio else ''}")


def upscale_set(options: Options, model, videos: list[pathlib.Path], folder: pathlib.Path, upscale,
                settings: str) -> int:
  """Upscales each video of a set into `folder`, spread over processes and the data axis of each process's --mesh
  (parallel/shares.py), skipping outputs complete with these `settings`; prints a summary. A video that fails does
  not stop the others."""
  import jax  # pylint: disable=import-outside-toplevel

  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.io import outputs, video, video_sets  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import distributed, shares  # pylint: disable=import-outside-toplevel

  meshes = shares.local_meshes(options.mesh)
  placed = [inference.on_mesh(model, mesh) for mesh in meshes]
  targets = video_sets.output_names(videos, folder)
  distributed.first_process_does(lambda: video_sets.make_output_folder(folder), f"creating {folder}")

  def upscale_one(job, group: int) -> list:
    source, target = job
    try:
      with outputs.claimed(target):
        outputs.remove_partials(target, video.output_kind(target))
        if not options.overwrite and video_sets.is_complete(target, settings):
          return ["skipped", str(source), ""]
        if not options.overwrite and outputs.is_ours(target, video.output_kind(target)):
          raise outputs.OutputError(f"{target}: was made with other settings (model, scales, precision, colour fix, "
                                    "chunks, tiles or encoding); pass --overwrite to replace it")
        outputs.check_replaceable(target, options.overwrite, video.output_kind(target))
        group_model, activate = placed[group]
        with activate() as execution_plan:
          upscale(group_model, source, target, probe(options, source, quiet=True), quiet=True,
                  execution_plan=execution_plan, across_processes=False)
      distributed.say(f"diffst: wrote {target}", file=sys.stderr)
      return ["done", str(source), ""]
    except Exception as error:  # pylint: disable=broad-except  # one bad video never stops the others
      if options.debug:
        traceback.print_exc()
      return ["failed", str(source), cli.first_line(error)]

  results = [result for _, result in shares.run_share(list(zip(videos, targets)), meshes, upscale_one)]
  results = distributed.all_processes(results)
  counts = collections.Counter(status for status, _, _ in results)
  workers = jax.process_count() * len(meshes)
  distributed.say(f"diffst: {len(videos)} videos into {folder} by {workers} worker{'s' * (workers > 1)}: "
                  f"{counts['done']} done, {counts['skipped']} skipped (complete), {counts['failed']} failed",
                  file=sys.stderr)
  for status, source, error in results:
    if status == "failed":
      distributed.say(f"  failed: {error if error.startswith(source) else f'{source}: {error}'}", file=sys.stderr)
  return 1 if counts["failed"] else 0


def main(argv=None) -> int:
  options = parse_args(argv)
  return cli.run(cli.program_name("infer.py", "diffst-upscale"), lambda: run(options), options.debug,
                 interrupted="interrupted; the partial output was removed")


if __name__ == "__main__":
  sys.exit(main())
