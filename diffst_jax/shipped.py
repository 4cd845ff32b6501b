"""What the project ships beside its code: the default weights (weights/tiny) and the experiment configs (configs/).

In a checkout they are the repository's weights/ and configs/ folders, beside the package; an installed package
holds them inside it (pyproject.toml maps both folders into the wheel as diffst_jax/weights and diffst_jax/configs).
"""

import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent


def folder(name: str) -> pathlib.Path:
  """The shipped folder `name` ("weights" or "configs"): inside an installed package, else in the checkout."""
  for candidate in (PACKAGE / name, PACKAGE.parent / name):
    if candidate.is_dir():
      return candidate
  raise FileNotFoundError(f"{name}/: shipped with diffst-jax, but neither in {PACKAGE} nor beside it; reinstall it")


def default_checkpoint() -> pathlib.Path:
  """weights/tiny, the model infer.py runs without --checkpoint."""
  return folder("weights") / "tiny"


def config_path(text: str) -> str:
  """A `--config FILE[:ARG]` value with FILE resolved: as given when it exists, else the shipped config it names
  ("tiny", "tiny.py" or "configs/tiny.py"), so that an installed package's configs need no path."""
  file, colon, arg = text.partition(":")
  given = pathlib.Path(file)
  if not file or given.exists():
    return text
  subfolder = "" if given.parent.name == "configs" else given.parent.name  # "sweeps/..." keeps its folder
  candidate = folder("configs") / subfolder / given.with_suffix(".py").name
  return f"{candidate}{colon}{arg}" if candidate.is_file() else text
