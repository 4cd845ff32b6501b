"""Put on PYTHONPATH, makes torch and the packages of the "torch" extra unimportable, as in the base install."""

import importlib.abc
import sys

HIDDEN = ("torch", "torchvision", "diffusers", "DISTS_pytorch", "accelerate", "transformers")


class _BaseInstall(importlib.abc.MetaPathFinder):

  def find_spec(self, name, path=None, target=None):  # pylint: disable=unused-argument
    if name.split(".")[0] in HIDDEN:
      raise ModuleNotFoundError(f"No module named {name!r} (the base install has no torch extra)", name=name)
    return None


sys.meta_path.insert(0, _BaseInstall())
