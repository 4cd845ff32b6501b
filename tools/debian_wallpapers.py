"""Still photographs for training clips from Debian's wallpaper packages (issue 26: colour and texture the two video
scenes lack), split by scene into a training and a held-out set, with each file's license.

  python tools/debian_wallpapers.py --output data/photos            # apt-get download, then extract
  python tools/debian_wallpapers.py --output data/photos --debs DIR # .deb files already at hand
  python tools/images_to_clips.py --images data/photos/train --output data/train_stills --frames 17 --size 256x384

Each wallpaper is one scene: of its variants (sizes, dark versions) the largest landscape image is kept. A scene is
held out when a hash of its name says so (about one in five, `HELD_OUT_EVERY`), the same on every machine, so that no
training clip comes from a scene the reported scores are measured on. OUTPUT/manifest.tsv lists every photo: split,
package, path in the package, license (from the package's machine-readable copyright file; the last stanza whose
`Files:` pattern matches, as DEP-5 says), size; an image the copyright file does not cover is skipped. Photos
already written are kept (the run resumes).
"""

import argparse
import fnmatch
import hashlib
import pathlib
import re
import subprocess
import sys
import tempfile

from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli  # noqa: E402

# Packages of Debian 12 (bookworm) with photographs or photographic art; gnome- and sway-backgrounds are patterns.
PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers", "lomiri-wallpapers",
            "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
HELD_OUT_EVERY = 5
MIN_SIDE = 720  # smaller images are icons or previews (plasma's screenshot.png)


def held_out(scene: str) -> bool:
  return int(hashlib.sha256(scene.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def copyright_stanzas(text: str) -> list[tuple[list[str], str]]:
  """(Files patterns, license) of each stanza of a DEP-5 copyright file that has both."""
  stanzas = []
  for block in re.split(r"\n\s*\n", text):
    files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.M)
    license_name = re.search(r"^License:[ \t]*(\S+)", block, re.M)
    if files and license_name:
      stanzas.append((files.group(1).split(), license_name.group(1)))
  return stanzas


def license_of(path: str, stanzas: list[tuple[list[str], str]]) -> str:
  """The license of an installed file: copyright patterns are source-tree paths, matched against the installed
  path's tail, or its file name where the package installs the file without the source folder."""
  found = "unknown"
  name = pathlib.PurePosixPath(path).name
  for patterns, license_name in stanzas:
    if any(pattern == "*" or fnmatch.fnmatch(path, f"*/{pattern}") or fnmatch.fnmatch(path, pattern)
           or ("*" not in pattern and pathlib.PurePosixPath(pattern).name == name) for pattern in patterns):
      found = license_name
  return found


def scene_name(package: str, path: pathlib.Path) -> str:
  """One name per wallpaper: plasma's `Name/contents/images/WxH.jpg` -> Name; `Elephants_3840x2160.jpg` -> Elephants."""
  if "contents" in path.parts:
    return f"{package}-{path.parts[path.parts.index('contents') - 1]}"
  stem = re.sub(r"_\d+x\d+$", "", path.stem)
  return f"{package}-{stem}"


def scenes_in(package: str, root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Scene name -> the largest landscape image of it (portrait and dark variants are skipped when others exist)."""
  best: dict[str, tuple[tuple, pathlib.Path]] = {}
  for path in sorted(root.rglob("*")):
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or "share/doc" in str(path):
      continue
    with Image.open(path) as image:
      width, height = image.size
    if min(width, height) < MIN_SIDE:
      continue
    rank = (width >= height, "dark" not in str(path.relative_to(root)), width * height)
    name = scene_name(package, path.relative_to(root))
    if name not in best or rank > best[name][0]:
      best[name] = (rank, path)
  return {name: path for name, (_, path) in best.items()}


def download(packages, folder: pathlib.Path) -> None:
  done = subprocess.run(["apt-get", "download", *packages], cwd=folder, check=False, capture_output=True, text=True)
  if done.returncode:
    raise OSError(f"apt-get download failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}; "
                       "download the packages elsewhere and pass --debs")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", required=True, help="folder for train/, heldout/ and manifest.tsv")
  parser.add_argument("--debs", help="a folder with the packages' .deb files (default: apt-get download them)")
  parser.add_argument("--max-side", type=int, default=1920, help="photos are scaled down to this longest side")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)

  def work() -> None:
    output = pathlib.Path(args.output)
    with tempfile.TemporaryDirectory() as scratch:
      debs = pathlib.Path(args.debs) if args.debs else pathlib.Path(scratch)
      if not args.debs:
        download(PACKAGES, debs)
      rows = []
      for package in PACKAGES:
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
          raise ValueError(f"--debs {debs}: no {package}_*.deb in it")
        root = pathlib.Path(scratch) / "extracted" / package
        root.mkdir(parents=True)
        if subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=False).returncode:
          raise ValueError(f"{found[-1]}: dpkg-deb cannot unpack it")
        (copyright_file,) = root.glob("usr/share/doc/*/copyright")
        stanzas = copyright_stanzas(copyright_file.read_text(errors="replace"))
        for name, path in scenes_in(package, root).items():
          relative = str(path.relative_to(root))
          license_name = license_of(relative, stanzas)
          if license_name == "unknown":  # not in the package's copyright file: nothing to record, so not used
            print(f"skipped {package}: {relative} (no license in its copyright file)", file=sys.stderr)
            continue
          split = "heldout" if held_out(name) else "train"
          target = output / split / f"{name}.png"
          if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
              photo = image.convert("RGB")
            photo.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
            partial = target.with_suffix(".partial.png")
            photo.save(partial)
            partial.replace(target)
          with Image.open(target) as image:
            size = "x".join(map(str, image.size))
          rows.append((split, name, package, relative, license_name, size))
    lines = ["split\tscene\tpackage\tpath\tlicense\tsize"] + ["\t".join(row) for row in sorted(rows)]
    (output / "manifest.tsv").write_text("\n".join(lines) + "\n")
    counts = {split: sum(row[0] == split for row in rows) for split in ("train", "heldout")}
    print(f"{output}: {counts['train']} training and {counts['heldout']} held-out scenes (manifest.tsv)")

  return cli.run("debian_wallpapers.py", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
