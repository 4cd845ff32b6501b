"""Reading and writing videos: any container PyAV reads, or a folder of PNG frames; frames are uint8 (N, H, W, 3).

Writers never leave a half-written output under the final name: they write to a temporary sibling and rename it
into place when done.
"""

import contextlib
import fractions
import pathlib
import shutil
import uuid

import av
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m")
DEFAULT_PNG_FPS = 30.0


class VideoError(ValueError):
  """A video that cannot be read or written as asked."""


def read_video(path: str | pathlib.Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
  """Frames (N, H, W, 3) uint8 RGB and frames per second of a video file or a folder of PNG frames."""
  path = pathlib.Path(path)
  if path.is_dir():
    return _read_png_folder(path, max_frames), DEFAULT_PNG_FPS
  if not path.exists():
    raise VideoError(f"{path}: no such file or folder")
  if path.suffix.lower() not in VIDEO_SUFFIXES:
    raise VideoError(f"{path}: unknown extension {path.suffix!r}; expected a video ({', '.join(VIDEO_SUFFIXES)}) "
                     "or a folder of PNG frames")
  frames = []
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise VideoError(f"{path}: the file has no video stream")
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_PNG_FPS)
      for frame in container.decode(stream):
        frames.append(frame.to_ndarray(format="rgb24"))
        if max_frames is not None and len(frames) == max_frames:
          break
  except av.FFmpegError as e:
    if not frames:
      raise VideoError(f"{path}: not a readable video ({e})") from e
    # A truncated file: keep the frames that decoded.
  if not frames:
    raise VideoError(f"{path}: the video has no frames")
  return np.stack(frames), fps


def _read_png_folder(path: pathlib.Path, max_frames: int | None) -> np.ndarray:
  files = sorted(path.glob("*.png"))[:max_frames]
  if not files:
    raise VideoError(f"{path}: the folder holds no .png frames")
  frames = []
  for file in files:
    try:
      with Image.open(file) as image:
        frames.append(np.asarray(image.convert("RGB")))
    except OSError as e:
      raise VideoError(f"{file}: not a readable PNG ({e})") from e
  if len({f.shape for f in frames}) != 1:
    raise VideoError(f"{path}: the PNG frames do not all have the same size")
  return np.stack(frames)


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


def write_video(path: str | pathlib.Path, frames: np.ndarray, fps: float, crf: int = 18) -> pathlib.Path:
  """Writes uint8 frames (N, H, W, 3) as an H.264 .mp4 (crf 0 = lossless) or, without a suffix, a PNG folder."""
  path = pathlib.Path(path)
  if path.suffix and path.suffix.lower() != ".mp4":
    raise VideoError(f"{path}: unknown output extension {path.suffix!r}; use .mp4 or a folder name for PNG frames")
  with _atomic_output(path) as temporary:
    if path.suffix:
      _write_mp4(temporary, frames, fps, crf)
    else:
      temporary.mkdir()
      for i, frame in enumerate(frames):
        Image.fromarray(frame).save(temporary / f"{i:06d}.png")
  return path


def _write_mp4(path: pathlib.Path, frames: np.ndarray, fps: float, crf: int) -> None:
  height, width = frames.shape[1:3]
  lossless = crf == 0
  with av.open(str(path), "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
    stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
    stream.options = {"crf": str(crf), "preset": "medium"}
    for frame in frames:
      if frame.shape[:2] != (stream.height, stream.width):
        frame = np.pad(frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    container.mux(stream.encode())
