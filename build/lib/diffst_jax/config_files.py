"""Experiment config files (Python files with `get_config(arg)`, e.g. configs/tiny.py) and sweep files, read where any
layer needs them. Standard library only: what the file builds is its own business."""

import importlib.util
import pathlib


def load(path: str | pathlib.Path, arg: str | None = None):
  """`get_config(arg)` of an experiment config file (a Python file, e.g. configs/tiny.py)."""
  return call_python_file(path, "config", "get_config", arg)


def call_python_file(path: str | pathlib.Path, kind: str, function: str, *args):
  """`function(*args)` of a Python file that defines a config or a sweep (`kind`); whatever goes wrong in the file is
  a ValueError naming it."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"{path}: no such {kind} file")
  spec = importlib.util.spec_from_file_location(f"diffst_{kind}_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    defined = getattr(module, function, None)
    if callable(defined):
      return defined(*args)
  except SyntaxError as e:
    raise ValueError(f"{path}:{e.lineno}: not valid Python ({e.msg}); fix the {kind} file") from e
  except Exception as e:  # pylint: disable=broad-except  # whatever the file's own code raises
    raise ValueError(f"{path}: the {kind} file failed ({type(e).__name__}: {e}); fix it (--debug shows where)") from e
  raise ValueError(f"{path}: a {kind} file must define {function}()")
