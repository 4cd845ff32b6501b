"""Training clips (DESIGN §8): a TFDS builder that cuts a folder of HR videos into clips of `clip_frames` consecutive
frames, stored as array_record files that read back without TensorFlow.

A clip is a uint8 tensor (clip_frames, H, W, 3), zlib-compressed, with H and W those of its video. TFDS' Image and
Video features need TensorFlow, and re-encoding the frames (PyAV) would change the pixels the model learns to
restore, so clips are stored raw.
"""

import collections
import dataclasses
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from diffst_jax.io import video

FILE_FORMAT = "array_record"


class SourceVideo(NamedTuple):
  path: pathlib.Path
  name: str  # path relative to the videos folder, with "/" separators
  frames: int
  height: int
  width: int


@dataclasses.dataclass(kw_only=True)
class ClipsConfig(tfds.core.BuilderConfig):
  clip_frames: int
  clip_stride: int


def config_name(clip_frames: int, clip_stride: int | None = None) -> str:
  """The builder config of clips of `clip_frames` frames starting every `clip_stride` frames (default: no overlap)."""
  clip_stride = clip_frames if clip_stride is None else clip_stride
  if not isinstance(clip_frames, int) or clip_frames < 1:
    raise ValueError(f"clip_frames={clip_frames!r}: expected a positive integer number of frames per clip")
  if not isinstance(clip_stride, int) or clip_stride < 1:
    raise ValueError(f"clip_stride={clip_stride!r}: expected a positive integer (frames between clip starts)")
  return f"frames{clip_frames}_stride{clip_stride}"


class DiffstClips(tfds.core.GeneratorBasedBuilder):
  """Fixed-length HR clips cut from a folder of videos; one config per (clip_frames, clip_stride), named by
  `config_name`, e.g. "frames5_stride5"."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "uint8 clips (zlib) with their source video and first frame index."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    # No checksums or metadata files live beside this code; TFDS' lookup of them needs the `importlib_resources`
    # package, which tensorflow-datasets 4.9.10 does not install on Python >= 3.9.
    return None

  @classmethod
  def get_builder_config(cls, name: str, version: str | tfds.core.Version | None = None) -> ClipsConfig | None:
    del version  # every config has the builder's version
    match = re.fullmatch(r"frames(\d+)_stride(\d+)", name)
    if not match:
      return None
    clip_frames, clip_stride = int(match[1]), int(match[2])
    return ClipsConfig(name=name, clip_frames=clip_frames, clip_stride=clip_stride,
                       description=f"{clip_frames}-frame clips, one every {clip_stride} frames")

  def __init__(self, *, videos: Sequence[SourceVideo] = (), **kwargs):
    self._videos = tuple(videos)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    frames = self.builder_config.clip_frames
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "clip": tfds.features.Tensor(shape=(frames, None, None, 3), dtype=np.uint8, encoding="zlib"),
            "video": tfds.features.Text(),
            "first_frame": tfds.features.Scalar(dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the videos are local
    usable = self._long_enough_videos()
    assert usable, "prepare() checks that some video is long enough"
    self.info.metadata.update(videos=[v.name for v in self._videos], min_height=min(v.height for v in usable),
                              min_width=min(v.width for v in usable))
    return {"train": self._generate_examples(usable)}

  def _long_enough_videos(self) -> list[SourceVideo]:
    return [v for v in self._videos if v.frames >= self.builder_config.clip_frames]

  def _generate_examples(self, sources: Sequence[SourceVideo]) -> Iterator[tuple[str, dict]]:
    config = self.builder_config
    for source in sources:
      for first, clip in clips(video.iter_frames(source.path), config.clip_frames, config.clip_stride):
        yield f"{source.name}@{first}", {"clip": clip, "video": source.name, "first_frame": first}


def clips(frames: Iterator[np.ndarray], clip_frames: int, clip_stride: int) -> Iterator[tuple[int, np.ndarray]]:
  """(first frame index, clip (clip_frames, H, W, 3)) for every full window starting at a multiple of clip_stride."""
  window = collections.deque(maxlen=clip_frames)
  for index, frame in enumerate(frames):
    window.append(frame)
    first = index - clip_frames + 1
    if first >= 0 and first % clip_stride == 0:
      yield first, np.stack(window)


# ---------------------------------------------------------------------------------------------------------------
# Finding videos, building and loading


def find_videos(videos_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Video files (known suffixes) and folders of PNG frames under `videos_dir`, recursively, hidden names skipped."""
  videos_dir = pathlib.Path(videos_dir)
  if not videos_dir.is_dir():
    problem = "is not a folder" if videos_dir.exists() else "does not exist"
    raise ValueError(f"{videos_dir}: the videos folder {problem}; pass the folder that holds the videos")
  found = []
  for path in sorted(videos_dir.rglob("*")):
    if any(part.startswith(".") for part in path.relative_to(videos_dir).parts):
      continue
    is_video_file = path.is_file() and path.suffix.lower() in video.VIDEO_SUFFIXES
    if is_video_file or video.png_files(path):
      found.append(path)
  if not found:
    raise ValueError(f"{videos_dir}: holds no readable video (a file ending in {', '.join(video.VIDEO_SUFFIXES)}, "
                     "or a folder of .png frames); add some or pass another folder")
  return found


def _probe_all(videos_dir: pathlib.Path, paths: Sequence[pathlib.Path]) -> list[SourceVideo]:
  sources = []
  for path in paths:
    try:
      info = video.probe(path)
    except video.VideoError as e:
      raise video.VideoError(f"{e}; remove it from the training folder or re-encode it") from e
    sources.append(SourceVideo(path, path.relative_to(videos_dir).as_posix(), info.frames, info.height, info.width))
  return sources


def _check_long_enough(videos_dir: pathlib.Path, sources: Sequence[SourceVideo], clip_frames: int) -> None:
  longest = max(sources, key=lambda v: v.frames)
  if longest.frames < clip_frames:
    raise ValueError(f"{videos_dir}: every video is shorter than clip_frames={clip_frames} (longest: {longest.name}, "
                     f"{longest.frames} frames); use a smaller clip_frames or add longer videos")


def prepare(videos_dir: str | pathlib.Path, data_dir: str | pathlib.Path, clip_frames: int, *,
            clip_stride: int | None = None) -> pathlib.Path:
  """Cuts every video under `videos_dir` into clips stored in the TFDS `data_dir`, which it returns.

  Reuses a finished build of the same videos and clip layout; a build of other videos in `data_dir` is an error
  (nothing is ever deleted). Videos shorter than `clip_frames` contribute no clips.
  """
  videos_dir, data_dir = pathlib.Path(videos_dir).absolute(), pathlib.Path(data_dir).absolute()
  config = config_name(clip_frames, clip_stride)
  paths = find_videos(videos_dir)
  if any((data_dir / DiffstClips.name / config).glob("*/dataset_info.json")):  # else TFDS warns of a missing build
    existing = DiffstClips(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
    if existing.is_prepared():
      _check_same_videos(existing, videos_dir, [p.relative_to(videos_dir).as_posix() for p in paths])
      return data_dir
  sources = _probe_all(videos_dir, paths)
  _check_long_enough(videos_dir, sources, clip_frames)
  DiffstClips(data_dir=data_dir, config=config, file_format=FILE_FORMAT, videos=sources).download_and_prepare()
  return data_dir


def _check_same_videos(existing: DiffstClips, videos_dir: pathlib.Path, names: list[str]) -> None:
  built = existing.info.metadata.get("videos")
  if built != names:
    raise ValueError(f"{existing.data_path}: holds clips of other videos ({len(built or [])}) than the {len(names)} "
                     f"found in {videos_dir}; pass a new data_dir (nothing was deleted)")


def load(data_dir: str | pathlib.Path, clip_frames: int, *, clip_stride: int | None = None) -> DiffstClips:
  """The finished builder of `clip_frames`-frame clips in `data_dir` (read it with `.as_data_source(split)`)."""
  config = config_name(clip_frames, clip_stride)
  clips_builder = DiffstClips(data_dir=pathlib.Path(data_dir).absolute(), config=config, file_format=FILE_FORMAT)
  if not clips_builder.is_prepared():
    raise ValueError(f"{data_dir}: holds no {config} clips; build them with "
                     f"diffst_jax.data.builder.prepare(videos_dir, data_dir, {clip_frames})")
  return clips_builder
