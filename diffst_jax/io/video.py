"""Reading and writing videos: any container PyAV reads, or a folder of PNG frames; frames are uint8 (N, H, W, 3).

Writers never leave a half-written output under the final name, and replace only outputs of ours (io/outputs.py).
"""

import fractions
import itertools
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

from diffst_jax.io import outputs

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


def _decoded(path: pathlib.Path, to_rgb: bool, errors: list | None = None) -> Iterator:
  """Decoded frames of a video file; a truncated file ends early (the decoder's error appended to `errors`), an
  unreadable or frameless one raises."""
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
    if errors is not None:
      errors.append(e)
  if not count:
    raise VideoError(f"{path}: the video has no frames")


def probe(path: str | pathlib.Path) -> VideoInfo:
  """Frame count (of the frames that decode), fps and size of a video file or PNG folder. Raises for frames of
  different sizes; warns (on stderr) when fewer frames decode than the file declares, as in a file cut short."""
  path = pathlib.Path(path)
  _check_source(path)
  if path.is_dir():
    files = _png_files(path)
    sizes = map(_png_size, files)
    first = next(sizes)
    for file, size in zip(files[1:], sizes):
      if size != first:
        raise VideoError(f"{file}: is {size[1]}x{size[0]} pixels, but {files[0].name}, the first frame, is "
                         f"{first[1]}x{first[0]}; all frames of a folder must have one size")
    return VideoInfo(len(files), DEFAULT_PNG_FPS, *first)
  frames, errors = 0, []
  for frame in _decoded(path, to_rgb=False, errors=errors):
    if frames and (frame.height, frame.width) != (height, width):
      raise VideoError(f"{path}: frame {frames} is {frame.width}x{frame.height} pixels, the frames before it "
                       f"{width}x{height}; videos whose size changes are not supported")
    frames, height, width = frames + 1, frame.height, frame.width
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_PNG_FPS)
    declared = stream.frames  # containers without a count (Matroska, WebM) give a duration
    timed = round(container.duration / av.time_base * fps) if container.duration and not declared else 0
  short = declared > frames or timed > frames + 1  # one frame more or less is the duration's rounding
  if short or errors:
    why = (f"the file declares {declared or f'about {timed}'} frames but only {frames} decode" if short else
           f"decoding stopped with an error after {frames} frames ({errors[0]})")
    print(f"warning: {path}: {why}; it is cut short or damaged, and only those {frames} frames are used",
          file=sys.stderr)
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


def _png_size(file: pathlib.Path) -> tuple[int, int]:
  try:
    with Image.open(file) as image:
      return image.height, image.width
  except OSError as e:
    raise VideoError(f"{file}: not a readable PNG ({e})") from e


def _read_png(file: pathlib.Path) -> np.ndarray:
  try:
    with Image.open(file) as image:
      return np.asarray(image.convert("RGB"))
  except OSError as e:
    raise VideoError(f"{file}: not a readable PNG ({e})") from e


def check_output_path(path: str | pathlib.Path) -> pathlib.Path:
  """Raises unless `path` names an output we can write: an .mp4 file, or a folder (no suffix) for PNG frames."""
  path = pathlib.Path(path)
  if path.suffix and path.suffix.lower() != ".mp4":
    raise VideoError(f"{path}: unknown output extension {path.suffix!r}; use .mp4 or a folder name for PNG frames")
  return path


def output_kind(path: pathlib.Path) -> outputs.FolderKind | None:
  """What `write_video` writes at `path`: a folder of PNG frames, or (None) an .mp4 file."""
  return None if path.suffix else outputs.FRAMES


def check_output(path: str | pathlib.Path, inputs: Iterable[str | pathlib.Path], overwrite: bool) -> pathlib.Path:
  """The absolute output path, before anything runs: a known kind (check_output_path), away from the `inputs`
  (outputs.check_destination), and new or, with `overwrite`, a previous output of ours (outputs.check_replaceable)."""
  kind = output_kind(check_output_path(path))
  output = outputs.check_destination(path, inputs, folder=kind is not None)
  outputs.check_replaceable(output, overwrite, kind)
  return output


def encoded_size(height: int, width: int, path: pathlib.Path) -> tuple[int, int]:
  """The frame size `write_video` writes for frames of height x width: .mp4 (yuv420p) needs even sizes, so an odd
  size gains a row or column (repeating the edge); PNG frames keep it."""
  return (height + height % 2, width + width % 2) if path.suffix else (height, width)


def write_video(path: str | pathlib.Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> pathlib.Path:
  """Writes uint8 frames (H, W, 3), streamed, as an H.264 .mp4 (crf 0 = lossless; sizes as `encoded_size` says)
  or, for a path without a suffix, a folder of PNGs; the output appears under `path` only once complete, and
  replaces only a previous output of ours (outputs.check_replaceable)."""
  path = check_output_path(path)
  if not 0 <= crf <= 51:
    raise VideoError(f"crf {crf}: H.264 quality must be in 0-51 (0 lossless, 18 default, 51 worst)")
  with outputs.writing(path, output_kind(path)) as temporary:
    if path.suffix:
      _write_mp4(temporary, iter(frames), fps, crf)
    else:
      for i, frame in enumerate(frames):
        Image.fromarray(frame).save(temporary / f"{i:06d}.png")
  return path


def _write_mp4(path: pathlib.Path, frames: Iterator[np.ndarray], fps: float, crf: int) -> None:
  first = next(frames)
  height, width = first.shape[:2]
  with av.open(str(path), "w", format="mp4") as container:
    container.metadata["comment"] = outputs.VIDEO_COMMENT
    stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = encoded_size(height, width, path)
    stream.pix_fmt = "yuv444p" if crf == 0 else "yuv420p"
    stream.options = {"crf": str(crf), "preset": "medium"}
    for frame in itertools.chain([first], frames):
      if frame.shape[:2] != (stream.height, stream.width):
        frame = np.pad(frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    container.mux(stream.encode())
