"""Copies frames [start, start + frames) of a video into a folder of PNG frames (lossless), e.g. to split a clip
into training and held-out parts:

  python tools/cut_clip.py --input bikes.mp4 --start 0 --frames 200 --output data/train/bikes
"""

import argparse
import itertools
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli  # noqa: E402
from diffst_jax.io import video  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True, help="new folder for the PNG frames")
  parser.add_argument("--start", type=int, default=0)
  parser.add_argument("--frames", type=int, required=True)
  parser.add_argument("--overwrite", action="store_true", help="replace a previous output of diffst-jax")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)

  def work() -> None:
    output = video.check_output(args.output, [args.input], args.overwrite)
    info = video.probe(args.input)
    if args.start < 0 or args.frames < 1 or args.start + args.frames > info.frames:
      raise ValueError(f"frames [{args.start}, {args.start + args.frames}) are not inside the {info.frames} frames of "
                       f"{args.input}")
    frames = itertools.islice(video.iter_frames(args.input), args.start, args.start + args.frames)
    video.write_video(output, frames, info.fps, overwrite=args.overwrite)

  return cli.run("cut_clip.py", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
