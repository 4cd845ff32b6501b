"""Turns a folder of still photographs into training clips (folders of PNG frames) that the TFDS builder ingests: a
deterministic synthetic camera pans, zooms and turns over each photo (diffst_jax/data/still_camera.py).

  python tools/images_to_clips.py --images photos/ --output data/train_stills --frames 33 --size 256x384

Each photo gives --clips-per-image clips, named after the photo's path (`city/night.jpg` -> `city_night_0`). The same
photos, --seed and sizes always give the same clips. A killed run resumes: clips already written are kept, a
partial one is rewritten. Photos too small for the frame are listed and skipped, and so are clips that show a single
colour (a transparent or blank wallpaper read as white or black): nothing to learn from or score there.
"""

import argparse
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from diffst_jax import cli  # noqa: E402
from diffst_jax.data import still_camera  # noqa: E402
from diffst_jax.io import outputs, video  # noqa: E402

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FLAT_LEVELS = 1.0  # a clip whose every frame's colours vary by less than this (standard deviation) shows no picture


def parse_size(text: str) -> tuple[int, int]:
  match = re.fullmatch(r"(\d+)x(\d+)", text)
  if not match or min(map(int, match.groups())) < 8:
    raise ValueError(f"--size {text!r}: expected HEIGHTxWIDTH, each at least 8 (e.g. 256x384)")
  return int(match.group(1)), int(match.group(2))


def photos_in(folder: pathlib.Path) -> list[pathlib.Path]:
  if not folder.is_dir():
    raise ValueError(f"--images {folder}: not a folder")
  found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
  if not found:
    raise ValueError(f"--images {folder}: no photos ({', '.join(PHOTO_SUFFIXES)}) in it or its subfolders")
  return found


def clip_name(relative: pathlib.Path, index: int) -> str:
  return re.sub(r"[^A-Za-z0-9_-]+", "_", str(relative.with_suffix(""))) + f"_{index}"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--images", required=True, help="folder of photos (searched recursively)")
  parser.add_argument("--output", required=True, help="folder for the clips (created; a previous run's is resumed)")
  parser.add_argument("--frames", type=int, default=33, help="frames per clip")
  parser.add_argument("--size", default="256x384", help="frame size HEIGHTxWIDTH")
  parser.add_argument("--clips-per-image", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)

  def work() -> None:
    size = parse_size(args.size)
    if args.frames < 1 or args.clips_per_image < 1:
      raise ValueError("--frames and --clips-per-image must be at least 1")
    images = pathlib.Path(args.images)
    photos = photos_in(images)
    output = outputs.check_destination(args.output, [images], folder=True)
    output.mkdir(parents=True, exist_ok=True)
    written = kept = 0
    skipped = []
    for photo in photos:
      relative = photo.relative_to(images)
      for index in range(args.clips_per_image):
        name = clip_name(relative, index)
        if (output / name).is_dir():
          kept += 1
          continue
        try:
          with Image.open(photo) as image:
            clip = still_camera.render(image, still_camera.motion_for(name, args.seed), args.frames, size, name,
                                       args.seed)
        except (ValueError, OSError) as e:
          skipped.append(f"{relative}: {e}")
          break
        if clip.reshape(len(clip), -1, 3).std(axis=1).max() < FLAT_LEVELS:
          skipped.append(f"{relative}: clip {name} shows a single colour")
          continue
        video.write_video(output / name, clip, fps=30)
        written += 1
    print(f"{written} clips written, {kept} kept from an earlier run, {len(skipped)} skipped; in {output}")
    for line in skipped:
      print(f"  skipped {line}")

  return cli.run("images_to_clips.py", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
