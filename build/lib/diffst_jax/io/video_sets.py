"""A set of videos to upscale as one job (infer.py --input FOLDER_OR_LIST --output FOLDER): the videos, where each
one's output goes, and which outputs are already complete.

* A set is a folder holding videos (files with a video extension) and/or folders of PNG frames, or a text file
  (`.txt`) listing such paths, one per line (relative to the list's folder; blank lines and lines starting with #
  are skipped). A folder holding PNG frames itself is one video, not a set.
* Each video's output goes into the output folder under the video's name: `NAME.mp4` for a video file `NAME.EXT`,
  a folder `NAME` of PNG frames for a PNG folder `NAME`. Outputs are written whole or not at all
  (outputs.writing), so one found under its final name is complete; it counts as done when it records the settings
  of this run (the model and the flags that change its frames), and is replaced only with --overwrite otherwise.
* The output folder carries diffst-jax's marker: a job that was killed resumes in it.
"""

import pathlib

from diffst_jax.io import outputs, video

LIST_SUFFIX = ".txt"


def is_video_set(path: pathlib.Path) -> bool:
  """Whether --input names a set of videos rather than one video: a `.txt` list, or a folder without PNG frames of
  its own."""
  if path.is_file():
    return path.suffix.lower() == LIST_SUFFIX
  return path.is_dir() and not video.png_files(path)


def _is_video(path: pathlib.Path) -> bool:
  if path.is_dir():
    return bool(video.png_files(path))
  return path.suffix.lower() in video.VIDEO_SUFFIXES


def list_videos(path: pathlib.Path) -> list[pathlib.Path]:
  """The videos of a set, in a fixed order (every process of a job sees the same list)."""
  if path.is_file():
    try:
      lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
      raise video.VideoError(f"{path}: not a text file listing videos, one path per line ({e.reason} at byte "
                             f"{e.start})") from e
    videos = [(path.parent / line) for line in lines if line and not line.startswith("#")]
    missing = [v for v in videos if not v.exists()]
    if missing:
      raise video.VideoError(f"{path}: lists {missing[0]}, which does not exist"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unknown = [v for v in videos if not _is_video(v)]
    if unknown:
      raise video.VideoError(f"{path}: lists {unknown[0]}, which is neither a video "
                             f"({', '.join(video.VIDEO_SUFFIXES)}) nor a folder of PNG frames")
  else:
    videos = sorted(entry for entry in path.iterdir() if not entry.name.startswith(".") and _is_video(entry))
  if not videos:
    raise video.VideoError(f"{path}: holds no videos ({', '.join(video.VIDEO_SUFFIXES)}) and no folders of PNG "
                           "frames")
  return videos


def output_names(videos: list[pathlib.Path], folder: pathlib.Path) -> list[pathlib.Path]:
  """Each video's output path in `folder`; raises when two videos would share one."""
  names = [folder / (v.name if v.is_dir() else v.stem + ".mp4") for v in videos]
  seen = {}
  for source, name in zip(videos, names):
    if name in seen:
      raise video.VideoError(f"{source} and {seen[name]} would both be written to {name}; rename one of them")
    seen[name] = source
  return names


def check_output_folder(path: str | pathlib.Path, inputs: list[pathlib.Path]) -> pathlib.Path:
  """The absolute output folder of a set: new, empty, or one of ours (a killed job's, to resume)."""
  folder = outputs.check_destination(path, inputs, folder=True)
  if pathlib.Path(path).suffix:
    raise video.VideoError(f"{path}: the output of a set of videos is a folder; name one without an extension")
  if folder.exists() and any(folder.iterdir()) and not (folder / outputs.MARKER).is_file():
    raise outputs.OutputError(f"{path}: holds files diffst-jax did not write (no {outputs.MARKER} marker); choose a "
                              "new or empty folder, or a previous output folder of infer.py to resume it")
  return folder


def make_output_folder(folder: pathlib.Path) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  marker = folder / outputs.MARKER
  if not marker.exists():
    marker.write_text("upscaled videos of infer.py: a folder written by diffst-jax\n")


def is_complete(output: pathlib.Path, settings: str) -> bool:
  """Whether `output` is a finished output of ours (outputs appear only when complete) made with `settings`."""
  kind = video.output_kind(output)
  return outputs.is_ours(output, kind) and outputs.recorded_settings(output, kind) == settings
