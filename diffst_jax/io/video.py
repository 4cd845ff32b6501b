"""Reading and writing videos: any container PyAV reads, or a folder of PNG frames; frames are uint8 (N, H, W, 3).

Writers never leave a half-written output under the final name, and replace only outputs of ours (io/outputs.py).
"""

import contextlib
import fractions
import itertools
import pathlib
import re
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

from diffst_jax.io import outputs

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m")
DEFAULT_PNG_RATE = fractions.Fraction(30)
MIN_RATE, MAX_RATE = fractions.Fraction(1, 100), 1000  # frames per second of a PNG folder (--fps)
RIGHT_ANGLE = 90
_HDR_TRANSFERS = {16: "PQ (SMPTE 2084)", 18: "HLG (ARIB STD-B67)"}  # AVColorTransferCharacteristic
_BT709 = 1  # AVColorPrimaries, AVColorTransferCharacteristic and AVColorSpace all number BT.709 as 1
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


class VideoError(ValueError):
  """A video that cannot be read or written as asked."""


class VideoInfo(NamedTuple):
  """What infer.py needs to know of an input: sizes are upright (after the display rotation), `rate` the exact frame
  rate (`fps` as a float), `rotation` the counterclockwise degrees that make the stored frames upright."""
  frames: int
  fps: float
  height: int
  width: int
  rate: fractions.Fraction = fractions.Fraction(30)
  rotation: int = 0
  audio: bool = False


def parse_rate(text: str) -> fractions.Fraction:
  """A frame rate as the user writes it ("25", "30000/1001", "29.97"), exact; the NTSC rates written as decimals
  (23.976, 29.97, 59.94, ...) are the n x 1000/1001 they stand for."""
  try:
    rate = fractions.Fraction(text)
  except (ValueError, ZeroDivisionError) as e:
    raise VideoError(f"--fps {text}: not a frame rate; write e.g. 25, 29.97 or 30000/1001") from e
  if not MIN_RATE <= rate <= MAX_RATE:
    raise VideoError(f"--fps {text}: a frame rate must be between {float(MIN_RATE):g} and {MAX_RATE} frames per second")
  ntsc = fractions.Fraction(round(rate * fractions.Fraction(1001, 1000)) * 1000, 1001)
  if rate.denominator != 1 and abs(rate - ntsc) < fractions.Fraction(1, 500):
    return ntsc
  return rate.limit_denominator(1001)  # what an .mp4's time base holds


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
        if count and (frame.height, frame.width) != size:
          raise VideoError(f"{path}: frame {count} is {frame.width}x{frame.height} pixels, the frames before it "
                           f"{size[1]}x{size[0]}; videos whose size changes are not supported")
        count, size = count + 1, (frame.height, frame.width)
        yield np.rot90(frame.to_ndarray(format="rgb24"), _quarter_turns(frame)) if to_rgb else frame
  except av.FFmpegError as e:
    if not count:
      raise VideoError(f"{path}: not a readable video ({type(e).__name__}: {e})") from e
    if errors is not None:
      errors.append(e)
  if not count:
    raise VideoError(f"{path}: the video has no frames")


def _quarter_turns(frame) -> int:
  """Counterclockwise quarter turns that make a decoded frame upright (its display matrix; phone videos)."""
  return round((frame.rotation or 0) / RIGHT_ANGLE) % 4


def probe(path: str | pathlib.Path, png_rate: fractions.Fraction = DEFAULT_PNG_RATE, quiet: bool = False
          ) -> VideoInfo:
  """Frame count, fps and size of a video file or PNG folder, without decoding a video beyond its first frame: the
  count is the container's packets (demuxed, not decoded), so that the frames are decoded once, by `iter_frames`.
  Raises for PNG frames of different sizes (a video whose size changes raises in `iter_frames`); warns (on stderr,
  unless `quiet`: the other processes of a multi-host run) about what is not kept and, when the file holds fewer
  frames than it declares (cut short), counts the frames that decode instead and says both counts."""
  path = pathlib.Path(path)
  _check_source(path)
  if path.is_dir():
    files = _png_files(path, quiet)
    sizes = map(_png_size, files)
    first = next(sizes)
    for file, size in zip(files[1:], sizes):
      if size != first:
        raise VideoError(f"{file}: is {size[1]}x{size[0]} pixels, but {files[0].name}, the first frame, is "
                         f"{first[1]}x{first[0]}; all frames of a folder must have one size")
    return VideoInfo(len(files), float(png_rate), *first, rate=png_rate)
  decoded = _decoded(path, to_rgb=False)
  first = next(decoded)  # raises for a file that is not a readable video
  decoded.close()
  frames, times, errors = 0, [], []
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    try:  # the packets, demuxed, not decoded: one per frame, with its presentation time
      for packet in container.demux(stream):
        if packet.size:
          frames += 1
          if packet.pts is not None:
            times.append(float(packet.pts * packet.time_base))
    except av.FFmpegError as e:
      errors.append(e)
    times.sort()  # display order
    rate = fractions.Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_PNG_RATE)
    fps = float(rate)
    declared = stream.frames  # containers without a count (Matroska, WebM) give a duration
    timed = round(container.duration / av.time_base * fps) if container.duration and not declared else 0
    audio = bool(container.streams.audio)
  short = declared > frames or timed > frames + 1  # one frame more or less is the duration's rounding
  if short or errors:  # cut short or damaged: what counts is what decodes (the one case decoded twice)
    frames, errors = 0, []
    for _ in _decoded(path, to_rgb=False, errors=errors):
      frames += 1
    short = declared > frames or timed > frames + 1
  turns = _quarter_turns(first)
  height, width = (first.width, first.height) if turns % 2 else (first.height, first.width)
  if not quiet:
    _warn_about_timing_and_colour(path, first, times, rate)
  if (short or errors) and not quiet:
    why = (f"the file declares {declared or f'about {timed}'} frames but only {frames} decode" if short else
           f"decoding stopped with an error after {frames} frames ({errors[0]})")
    print(f"warning: {path}: {why}; it is cut short or damaged, and only those {frames} frames are used",
          file=sys.stderr)
  return VideoInfo(frames, fps, height, width, rate=rate, rotation=turns * RIGHT_ANGLE, audio=audio)


def _warn_about_timing_and_colour(path: pathlib.Path, first, times: list, rate: fractions.Fraction) -> None:
  """Says, on stderr, what the frames carry that infer.py does not keep: a variable frame rate (taken as constant),
  more than 8 bits or an HDR transfer (converted to 8-bit BT.709)."""
  steps = np.diff([t for t in times if t is not None])
  if steps.size > 1 and (steps.max() - steps.min()) > 0.5 / float(rate):
    print(f"warning: {path}: the frame rate varies (frames {steps.min() * 1000:.1f} to {steps.max() * 1000:.1f} ms "
          f"apart); it is treated as constant at {float(rate):g} fps, so the output's timing follows frame order",
          file=sys.stderr)
  bits = max(component.bits for component in first.format.components)
  hdr = _HDR_TRANSFERS.get(first.color_trc)
  if bits > 8 or hdr:
    what = " and ".join(filter(None, [f"{bits}-bit samples" if bits > 8 else "", f"an HDR transfer ({hdr})" if hdr
                                      else ""]))
    print(f"warning: {path}: has {what}; it is converted to 8-bit BT.709 (no tone mapping), and the output is 8-bit "
          "BT.709", file=sys.stderr)


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


def png_files(path: pathlib.Path) -> list[pathlib.Path]:
  """The PNG frames of a folder (`.png` in any case), in natural order: by the numbers in their names, so 2.png comes
  before 10.png; [] when it holds none."""
  if not path.is_dir():
    return []
  files = [entry for entry in path.iterdir() if entry.suffix.lower() == ".png" and entry.is_file()]
  return sorted(files, key=_natural_key)


def _natural_key(file: pathlib.Path) -> list:
  return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", file.name))]


def _frame_numbering_problem(files: list[pathlib.Path]) -> str | None:
  """What is odd about a frame folder's names: numbered and unnumbered ones mixed, numbers skipped or repeated."""
  numbers = [re.findall(r"\d+", file.stem) for file in files]
  unnumbered = [file.name for file, found in zip(files, numbers) if not found]
  if unnumbered and len(unnumbered) < len(files):
    return (f"mixes numbered and unnumbered frame names ({unnumbered[0]} among "
            f"{next(f.name for f, found in zip(files, numbers) if found)}, ...)")
  if unnumbered:
    return None
  last = [int(found[-1]) for found in numbers]
  for previous, current, file in zip(last, last[1:], files[1:]):
    if current == previous:
      return f"numbers two frames {current} ({file.name} and the one before it)"
    if current != previous + 1:
      return f"skips frame numbers: {previous} is followed by {current} ({file.name})"
  return None


def _png_files(path: pathlib.Path, quiet: bool = True) -> list[pathlib.Path]:
  files = png_files(path)
  if not files:
    raise VideoError(f"{path}: the folder holds no .png frames")
  problem = _frame_numbering_problem(files)
  if problem and not quiet:
    print(f"warning: {path}: {problem}; its {len(files)} frames are used in the order of the numbers in their names",
          file=sys.stderr)
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


PIXEL_FORMATS = ("yuv420p", "yuv444p")
_MP4_AUDIO_CODECS = ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac")  # what the .mp4 muxer takes as is


def write_video(path: str | pathlib.Path, frames: Iterable[np.ndarray], fps: float | fractions.Fraction,
                crf: int = 18, pix_fmt: str | None = None, audio_from: str | pathlib.Path | None = None,
                overwrite: bool = False, settings: str | None = None) -> pathlib.Path:
  """Writes uint8 frames (H, W, 3), streamed, as an H.264 .mp4 or, for a path without a suffix, a folder of PNGs;
  the output appears under `path` only once complete, and replaces only, with `overwrite`, a previous output of ours
  (outputs.check_replaceable). The .mp4 is BT.709 (converted so, and tagged), `pix_fmt` yuv420p (sizes as
  `encoded_size` says) or yuv444p (the default at crf 0, lossless); `audio_from`'s first audio track is copied in
  unchanged (re-encoded to AAC only where the .mp4 container cannot hold its codec). `settings`: the fingerprint of
  what made the frames, recorded with them (outputs.recorded_settings)."""
  path = check_output_path(path)
  if not 0 <= crf <= 51:
    raise VideoError(f"crf {crf}: H.264 quality must be in 0-51 (0 lossless, 18 default, 51 worst)")
  if pix_fmt is not None and pix_fmt not in PIXEL_FORMATS:
    raise VideoError(f"pix_fmt {pix_fmt}: expected one of {', '.join(PIXEL_FORMATS)}")
  rate = fractions.Fraction(fps).limit_denominator(1001) if isinstance(fps, float) else fractions.Fraction(fps)
  with outputs.writing(path, output_kind(path), overwrite, settings) as temporary:
    if path.suffix:
      _write_mp4(temporary, iter(frames), rate, crf, pix_fmt or ("yuv444p" if crf == 0 else "yuv420p"), audio_from,
                 outputs.video_comment(settings))
    else:
      for i, frame in enumerate(frames):
        Image.fromarray(frame).save(temporary / f"{i:06d}.png")
  return path


def _write_mp4(path: pathlib.Path, frames: Iterator[np.ndarray], rate: fractions.Fraction, crf: int, pix_fmt: str,
               audio_from: str | pathlib.Path | None, comment: str) -> None:
  first = next(frames)
  height, width = first.shape[:2]
  with contextlib.ExitStack() as stack:
    container = stack.enter_context(av.open(str(path), "w", format="mp4"))
    container.metadata["comment"] = comment
    stream = container.add_stream("libx264", rate=rate)
    stream.height, stream.width = encoded_size(height, width, path)
    stream.pix_fmt = pix_fmt
    stream.options = {"crf": str(crf), "preset": "medium"}
    context = stream.codec_context
    context.color_primaries = context.color_trc = context.colorspace = _BT709
    context.color_range = _LIMITED_RANGE
    audio = _audio_copier(container, stack.enter_context(av.open(str(audio_from)))) if audio_from else None
    for frame in itertools.chain([first], frames):
      if frame.shape[:2] != (stream.height, stream.width):
        frame = np.pad(frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
      picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(
          format=pix_fmt, dst_colorspace="ITU709")
      picture.colorspace, picture.color_range = _BT709, _LIMITED_RANGE
      container.mux(stream.encode(picture))
    container.mux(stream.encode())
    if audio:
      audio()


def _audio_copier(container, source):
  """Adds `source`'s first audio track to `container` and returns what muxes it (None without one): a stream copy,
  or an AAC encode where the container cannot hold the codec."""
  if not source.streams.audio:
    return None
  track = source.streams.audio[0]
  if track.codec_context.name in _MP4_AUDIO_CODECS:
    copy = container.add_stream_from_template(track)

    def mux_copies():
      for packet in source.demux(track):
        if packet.dts is not None:
          packet.stream = copy
          container.mux(packet)

    return mux_copies
  encoded = container.add_stream("aac", rate=track.rate)
  encoded.layout = track.layout

  def mux_encoded():
    for frame in source.decode(track):
      frame.pts = None
      container.mux(encoded.encode(frame))
    container.mux(encoded.encode())

  return mux_encoded
