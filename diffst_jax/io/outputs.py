"""Where the tools write: an output appears whole under its final name or not at all, and nothing this project did not
write is ever replaced or deleted.

* A destination is refused when it is an input, holds one, lies inside an input folder, or is the working directory
  or a folder above it.
* An output folder is written with a marker file (`MARKER`) and holds only the entries its `FolderKind` names;
  replacing or removing one deletes exactly those entries and the marker, then the empty folder, never anything else.
  A folder holding anything more is not ours. An .mp4 is ours when its container metadata carries `VIDEO_COMMENT`.
* An output may record the settings it was made with (a fingerprint: `settings:` in the marker, `; settings ` after
  the .mp4's comment), so that a rerun tells an output of the same settings from one of others.
* Outputs are written under a temporary sibling `.NAME.partial-XXXXXXXX` and renamed into place when complete; the
  next run on the same destination removes the partial outputs a killed run left (ours by name and content). An
  output that appeared while a run went on is never replaced unless that run was told to replace outputs.
* A run holds a lock beside its output (`.NAME.lock`, `claimed`) from its checks to its end: a second run on the same
  output is refused in one line; the lock goes with the run that holds it, however it ends.
"""

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import re
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping

from diffst_jax.io import paths

MARKER = ".diffst-jax"
VIDEO_COMMENT = "written by diffst-jax"


class OutputError(ValueError):
  """A destination the tools will not write to, with the reason and what to do instead."""


@dataclasses.dataclass(frozen=True)
class FolderKind:
  """An output folder's contents: `files` matches the names of the files directly in it, `folders` maps a pattern of
  its subfolders' names to the pattern of their files' names (None: anything, a subtree only our own writer fills)."""

  what: str
  files: str
  folders: Mapping[str, str | None] = dataclasses.field(default_factory=dict)


FRAMES = FolderKind("PNG frames of infer.py", r"\d{6}\.png")
EVALUATION = FolderKind("scores of evaluate.py", r"scores\.(json|md)|report\.html",
                        {"strips": r"[^/]+\.png", "report": None})
DIFFUSERS = FolderKind("diffusers export", r"config\.json|diffusion_pytorch_model\.safetensors")


def absolute(path: str | os.PathLike) -> pathlib.Path:
  """The absolute path, with symbolic links resolved above the last component (which is kept as named)."""
  path = pathlib.Path(path).expanduser()
  if path.name in ("", ".", ".."):
    return path.resolve()
  return path.absolute().parent.resolve() / path.name


def check_destination(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                      folder: bool = False) -> pathlib.Path:
  """The absolute destination, after refusing one that is an input, holds one, lies in an input folder, is the
  working directory or above it, is a symbolic link, exists as the other kind (file vs folder), or lies where
  nothing can be written (under a file, in a read-only folder): all before a run that may take hours."""
  target = absolute(path)
  for source in inputs:
    source = pathlib.Path(source).resolve()
    if target == source or (target.exists() and source.exists() and os.path.samefile(target, source)):
      raise OutputError(f"{path}: is the input, and nothing may overwrite the input; choose another output")
    if target in source.parents:
      raise OutputError(f"{path}: holds the input {source}; choose an output outside it")
    if source.is_dir() and source in target.parents:
      raise OutputError(f"{path}: lies inside the input folder {source}, which is never written; choose an output "
                        "outside it")
  cwd = pathlib.Path.cwd().resolve()
  if target == cwd or target in cwd.parents:
    raise OutputError(f"{path}: is the working directory or a folder above it; name a new folder or file for the "
                      "output")
  if target.is_symlink():
    raise OutputError(f"{path}: is a symbolic link; name the output's real location")
  if target.exists() and folder and not target.is_dir():
    raise OutputError(f"{path}: exists and is a file, but this output is a folder; choose a new folder name")
  if target.exists() and not folder and target.is_dir():
    raise OutputError(f"{path}: exists and is a folder, but this output is a file; choose a new file name")
  above = next(parent for parent in target.parents if parent.exists())
  if not above.is_dir():
    raise OutputError(f"{path}: {above} is a file, not a folder; choose another output")
  try:
    with tempfile.TemporaryFile(dir=above):  # unnamed where the system allows: nothing is left either way
      pass
  except OSError as e:
    raise OutputError(f"{path}: nothing can be written in {above} ({e.strerror}); choose another output") from e
  return target


def foreign_entries(folder: pathlib.Path, kind: FolderKind) -> list[pathlib.Path]:
  """What `folder` holds beyond the marker and `kind`'s entries: what makes it not ours to replace or remove."""
  stray = []
  for entry in sorted(folder.iterdir()):
    if entry.name == MARKER and entry.is_file() and not paths.is_symlink(entry):
      continue
    folder_pattern = next((key for key in kind.folders if re.fullmatch(key, entry.name)), None)
    if folder_pattern is not None and entry.is_dir() and not paths.is_symlink(entry):
      pattern = kind.folders[folder_pattern]
      if pattern is not None:
        stray += [inner for inner in sorted(entry.iterdir())
                  if paths.is_symlink(inner) or not inner.is_file() or not re.fullmatch(pattern, inner.name)]
      continue
    if paths.is_symlink(entry) or not entry.is_file() or not re.fullmatch(kind.files, entry.name):
      stray.append(entry)
  return stray


def is_ours(path: pathlib.Path, kind: FolderKind | None) -> bool:
  """Whether `path` is an output this project wrote: a folder of `kind` with the marker, or (kind None) a video
  file tagged with VIDEO_COMMENT."""
  if kind is not None:
    return path.is_dir() and (path / MARKER).is_file() and not foreign_entries(path, kind)
  comment = _video_comment(path) if path.is_file() else None
  return comment is not None and comment.partition(_SETTINGS_SEPARATOR)[0] == VIDEO_COMMENT


_SETTINGS_SEPARATOR = "; settings "


def video_comment(settings: str | None) -> str:
  """The comment an .mp4 of ours carries: VIDEO_COMMENT, and the settings it was made with."""
  return VIDEO_COMMENT + (f"{_SETTINGS_SEPARATOR}{settings}" if settings else "")


def recorded_settings(path: pathlib.Path, kind: FolderKind | None) -> str | None:
  """The settings an output of ours records (None: it records none, as outputs written before they were recorded)."""
  if kind is None:
    return (_video_comment(path) or "").partition(_SETTINGS_SEPARATOR)[2] or None
  lines = (path / MARKER).read_text(errors="replace").splitlines() if (path / MARKER).is_file() else []
  return next((line.removeprefix("settings: ") for line in lines if line.startswith("settings: ")), None)


def _video_comment(path: pathlib.Path) -> str | None:
  import av  # pylint: disable=import-outside-toplevel

  try:
    with av.open(str(path)) as container:
      return container.metadata.get("comment")
  except (av.FFmpegError, OSError, UnicodeDecodeError):
    return None


def check_replaceable(path: pathlib.Path, overwrite: bool, kind: FolderKind | None) -> None:
  """Raises unless the output may go to `path`: it is missing, an empty folder (for a folder kind), or, with
  `overwrite`, an output of `kind` this project wrote."""
  if not path.exists() or (kind is not None and path.is_dir() and not any(path.iterdir())):
    return
  if not overwrite:
    raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
  if is_ours(path, kind):
    return
  if kind is None:
    raise OutputError(f"{path}: was not written by diffst-jax, so --overwrite keeps it; choose another output or "
                      "remove it yourself")
  stray = foreign_entries(path, kind)
  if not stray:
    raise OutputError(f"{path}: has no {MARKER} marker, so diffst-jax did not write it and --overwrite keeps it; "
                      "choose another output")
  more = f" and {len(stray) - 1} more" if len(stray) > 1 else ""
  raise OutputError(f"{path}: holds {stray[0].name}{more}, which diffst-jax did not write; --overwrite only replaces a "
                    f"folder of {kind.what} (marked by {MARKER}): choose another output")


def check_new_folder(path: str | os.PathLike, what: str) -> paths.Path:
  """Raises unless `path` is missing or an empty folder (`what` names the flag or the output in the message)."""
  path = paths.resolve(path)
  if path.exists() and not path.is_dir():
    raise OutputError(f"{path}: {what} exists and is a file; name a new folder")
  if path.exists() and any(path.iterdir()):
    raise OutputError(f"{path}: {what} is not empty; choose a new folder (nothing was written)")
  return path


def remove(path: pathlib.Path, kind: FolderKind | None) -> None:
  """Removes an output of ours: a file, or a folder's marker and `kind` entries and then the folder (refused when it
  holds anything else)."""
  if kind is None or not path.is_dir():
    path.unlink()
    return
  stray = foreign_entries(path, kind)
  if stray:
    raise OutputError(f"{path}: holds {stray[0].name}, which diffst-jax did not write; it is kept")
  for entry in path.iterdir():
    if entry.is_dir():
      _remove_tree(entry)
    else:
      entry.unlink()
  path.rmdir()


def _remove_tree(folder: pathlib.Path) -> None:
  for entry in folder.iterdir():
    if entry.is_dir() and not paths.is_symlink(entry):
      _remove_tree(entry)
    else:
      entry.unlink()
  folder.rmdir()


def _partial_name(path: pathlib.Path) -> re.Pattern:
  return re.compile(rf"\.{re.escape(path.name)}\.partial-[0-9a-f]{{8}}{re.escape(path.suffix)}")


def remove_partials(path: pathlib.Path, kind: FolderKind | None) -> None:
  """Removes what killed runs left while writing to `path`: its temporary siblings, when they are ours."""
  if not path.parent.is_dir():
    return
  pattern = _partial_name(path)
  for entry in path.parent.iterdir():
    if not pattern.fullmatch(entry.name):
      continue
    if entry.is_dir() if kind is not None else entry.is_file():
      if kind is None or (entry / MARKER).is_file() and not foreign_entries(entry, kind):
        remove(entry, kind)
        continue
    print(f"warning: {entry}: left in place: named like a partial output of diffst-jax, but it holds other files",
          file=sys.stderr)


@contextlib.contextmanager
def claimed(path: pathlib.Path) -> Iterator[None]:
  """Holds `path`'s lock (`.NAME.lock` beside it, created with the folders above it, which are removed again if the
  run leaves them empty) while the caller checks and writes `path`; raises OutputError, naming the holder, when
  another live run holds it. The operating system releases the lock when its process ends, however it ends."""
  missing = [parent for parent in path.parents if not parent.exists()]
  path.parent.mkdir(parents=True, exist_ok=True)
  lock = path.with_name(f".{path.name}.lock")
  try:
    while True:
      descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.read(descriptor, 200).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise OutputError(f"{path}: another run ({holder}) is writing it now; wait until it ends, or choose "
                          "another output") from None
      try:
        if os.path.samestat(os.fstat(descriptor), os.stat(lock)):
          break
      except FileNotFoundError:
        pass
      os.close(descriptor)  # the lock file was removed by the run that held it: lock the new one
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    try:
      yield
    finally:
      os.unlink(lock)
      os.close(descriptor)
  finally:
    for folder in missing:
      with contextlib.suppress(OSError):
        folder.rmdir()


@contextlib.contextmanager
def writing(path: pathlib.Path, kind: FolderKind | None, overwrite: bool = False,
            settings: str | None = None) -> Iterator[pathlib.Path]:
  """Yields a temporary sibling of `path` (a new folder with the marker, recording `settings`, for a folder kind) to
  write the output into; on success it takes `path`'s place: a missing path or an empty folder, or with `overwrite`
  an output of ours (`check_replaceable`); on failure it is removed."""
  path.parent.mkdir(parents=True, exist_ok=True)
  remove_partials(path, kind)
  temporary = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
  if kind is not None:
    temporary.mkdir()
    (temporary / MARKER).write_text(f"{kind.what}: a folder written by diffst-jax; --overwrite may replace it\n"
                                    + (f"settings: {settings}\n" if settings else ""))
  try:
    yield temporary
    _move_into_place(temporary, path, kind, overwrite)
  finally:
    if temporary.exists():
      remove(temporary, kind)


def _move_into_place(temporary: pathlib.Path, path: pathlib.Path, kind: FolderKind | None, overwrite: bool) -> None:
  empty_folder = kind is not None and path.is_dir() and not any(path.iterdir())
  if path.exists() and not empty_folder and not is_ours(path, kind):  # made or changed since the run began
    raise OutputError(f"{path}: exists and is not an output of diffst-jax alone; the new output is not written")
  if path.exists() and not empty_folder and not overwrite:
    raise OutputError(f"{path}: was written by another run while this one went on, and is kept; the new output is "
                      "not written (--overwrite replaces it)")
  if kind is None or not path.exists() or empty_folder:
    temporary.replace(path)  # atomic; a folder replaces only an empty one
    return
  previous = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
  path.rename(previous)
  temporary.rename(path)
  remove(previous, kind)
