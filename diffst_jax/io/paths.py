"""Paths of work directories and data: local folders as `pathlib.Path`, object storage (gs://, s3://, az://) as
`etils.epath.Path`, which reads and writes them through fsspec where the credentials exist. Both answer the same
calls (`/`, exists, is_dir, iterdir, mkdir, read_text, write_text, open, replace); what differs (appending, sizes,
walking a tree) is done here.
"""

import hashlib
import os
import pathlib
import shutil
from typing import Union

from etils import epath

from diffst_jax.parallel import backend

Path = Union[pathlib.Path, epath.Path]
LOCAL_SCHEME = "file://"
REMOTE_SCHEMES = ("gs://", "s3://", "az://")


def resolve(path: str | os.PathLike) -> Path:
  """`path` as the object that reads it: a URI of object storage as an epath.Path, a local path (or a file:// URI)
  as an absolute pathlib.Path."""
  text = os.fspath(path)
  if text.startswith(LOCAL_SCHEME):
    return pathlib.Path(text[len(LOCAL_SCHEME):]).expanduser().absolute()
  if "://" in text:
    if not text.startswith(REMOTE_SCHEMES):
      raise ValueError(f"{text}: unknown storage; expected a local path, or a URI starting with {LOCAL_SCHEME}, "
                       f"{', '.join(REMOTE_SCHEMES)}")
    return epath.Path(text)
  return pathlib.Path(text).expanduser().absolute()


def is_local(path: Path) -> bool:
  return isinstance(path, pathlib.Path) and not isinstance(path, epath.Path)


def is_symlink(path: Path) -> bool:
  """Whether `path` is a symbolic link (object storage has none)."""
  return is_local(path) and path.is_symlink()


def inside(folder: Path, name: str, recorded_in: Path) -> Path:
  """`folder / name`, for a `name` that the file `recorded_in` lists (a checkpoint's file sizes, a shard index);
  raises, naming both, when it leads outside `folder` (absolute, `..`, a symbolic link out of it): such a file
  was damaged or crafted, and nothing outside the folder is read for it."""
  relative = pathlib.PurePosixPath(name)
  if not name or relative.is_absolute() or ".." in relative.parts or "\\" in name:
    raise ValueError(f"{recorded_in}: names {name!r}, which is not a file inside {folder}; only files inside it are "
                     "read (the file is damaged or was not written by this project)")
  path = folder / name
  if is_local(path) and path.exists() and not path.resolve().is_relative_to(pathlib.Path(folder).resolve()):
    raise ValueError(f"{recorded_in}: names {name!r}, a symbolic link to {path.resolve()} outside {folder}; only "
                     "files inside it are read")
  return path


def entries(folder: Path) -> list[Path]:
  """What `folder` holds, none if it does not exist: in a bucket a folder is only the common prefix of its objects,
  so a new one does not exist until something is written under it."""
  return list(folder.iterdir()) if folder.exists() else []


def append_text(path: Path, text: str) -> None:
  """Adds `text` at the end of the file `path` (made if missing). Objects in a bucket cannot be appended to: there
  the file is read and written again whole."""
  if is_local(path):
    with open(path, "a", encoding="utf-8") as file:
      file.write(text)
    return
  before = path.read_text() if path.exists() else ""
  path.write_text(before + text)


def size(path: Path) -> int:
  """The size of the file `path` in bytes."""
  return path.stat().st_size if is_local(path) else path.stat().length


def files_under(folder: Path) -> list[Path]:
  """Every file under `folder`, recursively, sorted."""
  if is_local(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())
  # a bucket's walk names its folders without the scheme (b/videos for gs://b/videos)
  without_scheme = lambda path: os.fspath(path).split("://", 1)[-1].strip("/")  # noqa: E731
  root = without_scheme(folder)
  return sorted(folder / without_scheme(directory)[len(root):].lstrip("/") / name
                for directory, _, names in folder.walk() for name in names)


def local_copy(folder: Path, destination: pathlib.Path) -> pathlib.Path:
  """`destination`, holding a copy of every file under the remote `folder` (a file already there whole is kept):
  what a reader of local files only (a video decoder) needs. A local `folder` is returned as it is."""
  if is_local(folder):
    return folder
  if not folder.is_dir():
    problem = "is not a folder" if folder.exists() else "does not exist"
    raise ValueError(f"{folder}: the folder {problem}")
  for source in files_under(folder):
    relative = os.fspath(source)[len(os.fspath(folder)):].lstrip("/")
    target = destination / relative
    if target.is_file() and target.stat().st_size == size(source):
      continue
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with source.open("rb") as reader, open(partial, "wb") as writer:
      shutil.copyfileobj(reader, writer)
    partial.replace(target)
  return destination


def private_cache(*keys: Path, process_index: int) -> pathlib.Path:
  """A local folder of this machine's cache that belongs to `keys` (e.g. a remote work directory) and one process."""
  digest = hashlib.sha256("\n".join(os.fspath(k) for k in keys).encode()).hexdigest()[:16]
  return backend.CACHE_DIR / "runs" / f"{digest}-process{process_index}"
