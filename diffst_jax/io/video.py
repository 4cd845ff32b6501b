"""Reading and writing videos: any container PyAV reads, or a folder of PNG frames; frames are uint8 (N, H, W, 3).

Writers never leave a half-written output under the final name: they write to a temporary sibling and rename it
into place when done.
"""

import contextlib
import fractions
import itertools
import pathlib
import shutil
import uuid
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m")
DEFAULT_PNG_FPS = 30.0


class VideoError(ValueError):
  """A video that cannot be read or written as asked."""


class VideoInfo(NamedTuple):
  frames: int
  fps: float
  height: int
  width: int


def _check_source(path: pathlib.Path) -> None:
  if not path.exists():
    raise VideoError(f"{path}: no such file or folder")
  if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
    raise VideoError(f"{path}: unknown extension {path.suffix!r}; expected a video ({', '.join(VIDEO_SUFFIXES)}) "
                     "or a folder of PNG frames")


def _decoded(path: pathlib.Path, to_rgb: bool) -> Iterator:
  """Decoded frames of a video file; a truncated file ends early, an unreadable or frameless one raises."""
  count = 0
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise VideoError(f"{path}: the file has no video stream")
      for frame in container.decode(container.streams.video[0]):
        count += 1
        yield frame.to_ndarray(format="rgb24") if to_rgb else frame
  except av.FFmpegError as e:
    if not count:
      raise VideoError(f"{path}: not a readable video ({type(e).__name__}: {e})") from e
  if not count:
    raise VideoError(f"{path}: the video has no frames")


def probe(path: str | pathlib.Path) -> VideoInfo:
  """Frame count (of the frames that decode), fps and size of a video file or PNG folder."""
  path = pathlib.Path(path)
  _check_source(path)
  if path.is_dir():
    files = _png_files(path)
    with Image.open(files[0]) as image:
      return VideoInfo(len(files), DEFAULT_PNG_FPS, image.height, image.width)
  frames = 0
  for frame in _decoded(path, to_rgb=False):
    frames, height, width = frames + 1, frame.height, frame.width
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_PNG_FPS)
  return VideoInfo(frames, fps, height, width)


def iter_frames(path: str | pathlib.Path) -> Iterator[np.ndarray]:
  """The frames of a video file or PNG folder, one (H, W, 3) uint8 RGB array at a time."""
  path = pathlib.Path(path)
  _check_source(path)
  if path.is_dir():
    return (_read_png(file) for file in _png_files(path))
  return _decoded(path, to_rgb=True)


def read_video(path: str | pathlib.Path) -> tuple[np.ndarray, float]:
  """All frames (N, H, W, 3) uint8 RGB and the fps of a video file or PNG folder."""
  frames = np.stack(list(iter_frames(path)))
  return frames, probe(path).fps


def _png_files(path: pathlib.Path) -> list[pathlib.Path]:
  files = sorted(path.glob("*.png"))
  if not files:
    raise VideoError(f"{path}: the folder holds no .png frames")
  return files


def _read_png(file: pathlib.Path) -> np.ndarray:
  try:
    with Image.open(file) as image:
      return np.asarray(image.convert("RGB"))
  except OSError as e:
    raise VideoError(f"{file}: not a readable PNG ({e})") from e


@contextlib.contextmanager
def _atomic_output(path: pathlib.Path):
  """Yields a temporary sibling path; on success moves it to `path` (replacing it), on failure deletes it."""
  temporary = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
  try:
    yield temporary
    if path.is_dir():
      shutil.rmtree(path)
    temporary.replace(path)
  finally:
    if temporary.is_dir():
      shutil.rmtree(temporary)
    elif temporary.exists():
      temporary.unlink()


def check_output_path(path: str | pathlib.Path) -> pathlib.Path:
  """Raises unless `path` names an output we can write: an .mp4 file, or a folder (no suffix) for PNG frames."""
  path = pathlib.Path(path)
  if path.suffix and path.suffix.lower() != ".mp4":
    raise VideoError(f"{path}: unknown output extension {path.suffix!r}; use .mp4 or a folder name for PNG frames")
  return path


def write_video(path: str | pathlib.Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> pathlib.Path:
  """Writes uint8 frames (H, W, 3), streamed, as an H.264 .mp4 (crf 0 = lossless) or, for a path without a
  suffix, a folder of PNGs; the output appears under `path` only once complete."""
  path = check_output_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with _atomic_output(path) as temporary:
    if path.suffix:
      _write_mp4(temporary, iter(frames), fps, crf)
    else:
      temporary.mkdir()
      for i, frame in enumerate(frames):
        Image.fromarray(frame).save(temporary / f"{i:06d}.png")
  return path


def _write_mp4(path: pathlib.Path, frames: Iterator[np.ndarray], fps: float, crf: int) -> None:
  first = next(frames)
  height, width = first.shape[:2]
  with av.open(str(path), "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
    stream.pix_fmt = "yuv444p" if crf == 0 else "yuv420p"
    stream.options = {"crf": str(crf), "preset": "medium"}
    for frame in itertools.chain([first], frames):
      if frame.shape[:2] != (stream.height, stream.width):
        frame = np.pad(frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    container.mux(stream.encode())
