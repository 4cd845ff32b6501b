"""tools/debian_wallpapers.py: licenses read from a DEP-5 copyright file, one photo per scene, a held-out split by
scene that every machine computes alike."""

import importlib.util
import pathlib

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("debian_wallpapers", ROOT / "tools" / "debian_wallpapers.py")
wallpapers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wallpapers)

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: example

Files: *
Copyright: 2020, Someone
License: GPL-2+

Files: nature/Dune.jpg
       nature/Aqua.jpg
Copyright: 2008, Someone Else
License: CC-BY-SA-4.0

Files: 16.04/Bridge_by_Someone.jpg
Copyright: 2018, A Photographer
License: CC-BY-4.0

License: GPL-2+
 The full text.
"""


def test_the_last_matching_stanza_gives_the_license():
  stanzas = wallpapers.copyright_stanzas(COPYRIGHT)
  assert [license_name for _, license_name in stanzas] == ["GPL-2+", "CC-BY-SA-4.0", "CC-BY-4.0"]
  assert wallpapers.license_of("usr/share/backgrounds/mate/nature/Aqua.jpg", stanzas) == "CC-BY-SA-4.0"
  assert wallpapers.license_of("usr/share/backgrounds/mate/abstract/Silk.png", stanzas) == "GPL-2+"
  # installed without the source folder: matched by file name
  assert wallpapers.license_of("usr/share/backgrounds/Bridge_by_Someone.jpg", stanzas) == "CC-BY-4.0"
  assert wallpapers.license_of("x/Other.jpg", wallpapers.copyright_stanzas(COPYRIGHT.split("Files: *")[0])) == \
      "unknown"


def test_one_photo_per_scene_the_largest_landscape_one(tmp_path):
  def image(relative, size):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)

  image("usr/share/wallpapers/Autumn/contents/images/1920x1080.png", (1920, 1080))
  image("usr/share/wallpapers/Autumn/contents/images/3840x2160.png", (3840, 2160))
  image("usr/share/wallpapers/Autumn/contents/images/1080x1920.png", (1080, 1920))  # portrait
  image("usr/share/wallpapers/Autumn/contents/images_dark/5120x2880.png", (5120, 2880))  # dark variant
  image("usr/share/wallpapers/Autumn/contents/screenshot.png", (400, 250))  # a preview
  image("usr/share/backgrounds/mate/abstract/Elephants.jpg", (1920, 1080))
  image("usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg", (3840, 2160))
  image("usr/share/doc/pkg/logo.png", (2000, 1000))  # documentation is not a scene
  scenes = wallpapers.scenes_in("pkg", tmp_path)
  assert {name: str(path.relative_to(tmp_path)) for name, path in scenes.items()} == {
      "pkg-Autumn": "usr/share/wallpapers/Autumn/contents/images/3840x2160.png",
      "pkg-Elephants": "usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg"}


def test_held_out_scenes_are_fixed_by_name():
  """The split of the shipped data (weights/README.md): the same scenes held out on every machine."""
  for name in ("mate-backgrounds-Dune", "plasma-workspace-wallpapers-ColdRipple", "ukui-wallpapers-goldfish"):
    assert wallpapers.held_out(name), name
  for name in ("mate-backgrounds-Aqua", "plasma-workspace-wallpapers-Autumn", "ukui-wallpapers-city"):
    assert not wallpapers.held_out(name), name
  assert 25 <= sum(wallpapers.held_out(f"scene-{i}") for i in range(200)) <= 55  # about one in five
