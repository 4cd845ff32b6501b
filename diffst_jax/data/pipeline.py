"""Training batches (DESIGN §8): stored HR clips -> shuffle(seed) -> repeat -> random crop (and, with `augment`, a
random flip / transpose) -> space then time degradation -> batch -> prefetch (threads, or worker processes).

The space degradation sees a window of `degradation_window` pixels around the crop (0: the crop alone). Its video
compression draws an absolute bitrate (DESIGN §8), so how hard it compresses per pixel depends on the size of what it
sees; a window the size of the evaluation's frames trains on the compression the model is scored on.

Example `position` of the endless shuffled stream draws its crop and degradation from
`np.random.default_rng((seed, position))` and a batch is a fixed range of positions, so the batches depend only
on the arguments, never on the number of workers. The iterator's state is `{"global_next_index": examples read}`
(plain JSON, the same for any number of workers).
"""

import dataclasses
import pathlib
from collections.abc import Sequence

import grain
import numpy as np
from absl import flags

from diffst_jax.data import builder, degrade

MAX_SEED = 2**32 - 1  # grain's shuffle takes 32-bit seeds
CROP_MULTIPLE = 16  # the DiT needs H and W multiples of 16 (DESIGN §1)


@dataclasses.dataclass(frozen=True)
class TrainingPair(grain.transforms.MapWithIndex):
  """A stored clip at stream position `index` -> {"hr": (T, crop, crop, 3), "lr": (T_lr, crop/s_x, crop/s_x, 3)}
  ("hr" alone without `with_lr`); a `degradation_window` larger than the crop is degraded whole (clipped to the
  frame) and the pair cut from it. With `augment`, what is degraded is first flipped and transposed at random
  (`random_flip`). With several `recipes` (degrade.mixture) each example draws one."""

  crop_size: int
  space_scale: int
  time_scale: int
  seed: int
  with_lr: bool = True
  degradation_window: int = 0
  augment: bool = False
  recipes: tuple[str, ...] = ("dove",)

  def map_with_index(self, index: int, element: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, index))
    clip, s = element["clip"], self.space_scale

    def crop(height: int, width: int) -> np.ndarray:
      window = random_crop(clip, height, width, rng)
      return random_flip(window, rng) if self.augment else window

    if not self.with_lr:
      return {"hr": crop(self.crop_size, self.crop_size)}
    # one recipe draws nothing, so its examples stay those of a run from before mixtures existed
    recipe = self.recipes[rng.integers(len(self.recipes))] if len(self.recipes) > 1 else self.recipes[0]
    if self.degradation_window <= self.crop_size:
      hr = crop(self.crop_size, self.crop_size)
      lr = degrade.degrade_space_by(recipe, hr, rng, s)
    else:
      window = crop(*(min(self.degradation_window, size) // s * s for size in clip.shape[1:3]))
      lr_window = degrade.degrade_space_by(recipe, window, rng, s)
      top, left = (s * rng.integers((size - self.crop_size) // s + 1) for size in window.shape[1:3])
      hr = window[:, top:top + self.crop_size, left:left + self.crop_size]
      lr = lr_window[:, top // s:(top + self.crop_size) // s, left // s:(left + self.crop_size) // s]
    return {"hr": hr, "lr": degrade.degrade_time(lr, self.time_scale)}


def random_flip(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The clip (T, H, W, C) flipped left-right, top-bottom and in time, and transposed (H <-> W), each with
  probability 1/2: the 16 symmetries of a square crop's frames and their order, all plausible video."""
  left_right, top_bottom, in_time, transpose = rng.integers(2, size=4)
  clip = clip[::-1 if in_time else 1, ::-1 if top_bottom else 1, ::-1 if left_right else 1]
  return np.ascontiguousarray(clip.transpose(0, 2, 1, 3) if transpose else clip)


def random_crop(clip: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """The same height x width window of every frame of a clip (T, H, W, C), at a random position."""
  _, clip_height, clip_width, _ = clip.shape
  assert clip_height >= height and clip_width >= width, \
      f"clip {clip_height}x{clip_width} is smaller than the {height}x{width} crop"
  top, left = rng.integers(clip_height - height + 1), rng.integers(clip_width - width + 1)
  return clip[:, top:top + height, left:left + width]


def _check_arguments(clip_frames: int, crop_size: int, space_scale: int, time_scale: int, batch_size: int, seed: int,
                     num_workers: int, degradation_window: int) -> None:
  for name, value, minimum in (("clip_frames", clip_frames, 1), ("crop_size", crop_size, 1),
                               ("degradation_window", degradation_window, 0),
                               ("space_scale", space_scale, 1), ("time_scale", time_scale, 1),
                               ("batch_size", batch_size, 1), ("seed", seed, 0), ("num_workers", num_workers, 0)):
    if not isinstance(value, int) or value < minimum:
      raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
  if clip_frames % 4 != 1 or clip_frames < 5:
    raise ValueError(f"clip_frames={clip_frames}: the Wan VAE needs 4k+1 frames (5, 9, 13, 17, 21, ...)")
  if (clip_frames - 1) % time_scale:
    raise ValueError(f"clip_frames={clip_frames}, time_scale={time_scale}: clip_frames - 1 must be a multiple of "
                     "time_scale so the last HR frame is an LR keyframe (e.g. 9 or 17 frames for time_scale 2 or 4)")
  if crop_size % CROP_MULTIPLE or crop_size % space_scale:
    raise ValueError(f"crop_size={crop_size}: expected a multiple of {CROP_MULTIPLE} and of space_scale={space_scale}")
  if seed > MAX_SEED:
    raise ValueError(f"seed={seed}: expected a seed in [0, {MAX_SEED}]")


def _check_crop_fits(clips: builder.DiffstClips, crop_size: int) -> None:
  height, width = clips.info.metadata["min_height"], clips.info.metadata["min_width"]
  if crop_size > min(height, width):
    raise ValueError(f"crop_size={crop_size}: the clips in {clips.data_path} are only {height} pixels high and {width} "
                     f"wide at the least; use a crop_size of at most {min(height, width)} or drop the small videos")


def _open_split(clips: builder.DiffstClips, split: str) -> Sequence[dict]:
  try:
    return clips.as_data_source(split)
  except ValueError as e:  # an unknown split, a malformed or an empty slice
    raise ValueError(f"split={split!r}: {str(e).splitlines()[-1]} (use 'train' or a TFDS slice such as "
                     "'train[:90%]')") from e


def _mark_flags_parsed() -> None:
  """Grain's multiprocessing reads absl flags, which scripts that do not start through absl's app.run never parse."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_dataset(data_dir: str | pathlib.Path, *, clip_frames: int, crop_size: int, space_scale: int,
                 time_scale: int, batch_size: int, seed: int, num_workers: int = 0, split: str = "train",
                 clip_stride: int | None = None, with_lr: bool = True, degradation_window: int = 0,
                 augment: bool = False, degradation: str = "dove", process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """Endless batches {"hr": uint8 (B, T, crop, crop, 3), "lr": uint8 (B, (T-1)//s_t+1, crop/s_x, crop/s_x, 3)};
  `with_lr=False` skips the degradations and gives "hr" alone (training a VAE needs no LR input);
  `degradation_window` > `crop_size` degrades a window that large around each crop (see the module docstring);
  `augment` flips and transposes each example at random before it is degraded (`random_flip`); `degradation` names
  the degradation recipe (degrade.RECIPES: "dove", or "earlier", this project's before it followed DOVE; "bicubic",
  clean input) or a mixture of them joined by "+" (degrade.mixture).

  Reads the clips `builder.prepare` stored in `data_dir` (`split` may be a TFDS slice, e.g. "train[:90%]");
  `num_workers` > 0 prepares batches in that many worker processes (their arrays live in shared memory, freed when
  the batch is). `iter(dataset)` returns the dataset's one iterator (call `make_dataset` again for a fresh one);
  save `iterator.get_state()` (a JSON-able dict) and restore it with `iterator.set_state(state)`. With several
  processes (multi-host), `batch_size` is the global batch and each process gets its `batch_size / process_count`
  clips of it.
  """
  if batch_size % process_count:
    raise ValueError(f"data.batch_size = {batch_size} does not split over {process_count} processes; make it a "
                     "multiple of the process count")
  _check_arguments(clip_frames, crop_size, space_scale, time_scale, batch_size, seed, num_workers, degradation_window)
  clips = builder.load(data_dir, clip_frames, clip_stride=clip_stride)
  _check_crop_fits(clips, crop_size)
  examples = (grain.MapDataset.source(_open_split(clips, split))
              .shuffle(seed=seed)
              .repeat()
              .map_with_index(TrainingPair(crop_size, space_scale, time_scale, seed, with_lr, degradation_window,
                                           augment, degrade.mixture(degradation))))
  if num_workers:
    _mark_flags_parsed()
  return grain.experimental.ElasticIterator(
      examples, batch_size, grain.sharding.ShardOptions(shard_index=process_index, shard_count=process_count),
      read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=2),
      multiprocessing_options=grain.MultiprocessingOptions(num_workers=num_workers) if num_workers else None)
