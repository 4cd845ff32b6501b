"""Clips from still photographs: a deterministic synthetic camera that pans, zooms and turns slightly over a photo
at speeds like real footage's, for the colours and textures that real clips of a few scenes lack.

Every frame is one affine resampling (bicubic) of the photo, first reduced (Lanczos) so that one output pixel spans
about one photo pixel, so frames carry the photo's own detail without aliasing. The motion of a clip is drawn from
a seed and the photo's name, so the same folder of photos always gives the same clips.
"""

import dataclasses
import math
import zlib

import numpy as np
from PIL import Image

# Per frame, at 30 fps: pans of 0.5-4 output pixels (15-120 px/s, a slow to a brisk pan of 720p footage), zooms of up
# to 0.6% (20% over a second), turns of up to 0.15 degrees (4.5 degrees per second).
PAN_PIXELS = (0.5, 4.0)
ZOOM_PER_FRAME = 0.006
TURN_DEGREES = 0.15
# How much of the photo's shorter side the first frame shows: a scene, not a close-up of a leaf.
COVERAGE = (0.4, 0.8)


@dataclasses.dataclass(frozen=True)
class CameraMotion:
  pan: tuple[float, float]  # output pixels per frame, (right, down)
  zoom: float  # magnification per frame (> 1 zooms in)
  turn: float  # degrees per frame


def motion_for(name: str, seed: int) -> CameraMotion:
  """The motion of the clip `name` (a photo's path and clip index, say) under `seed`: a pan in a random direction,
  and with even odds each a zoom in or out and a small turn."""
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  speed, direction = rng.uniform(*PAN_PIXELS), rng.uniform(0, 2 * math.pi)
  zoom = math.exp(rng.uniform(-ZOOM_PER_FRAME, ZOOM_PER_FRAME)) if rng.random() < 0.5 else 1.0
  turn = rng.uniform(-TURN_DEGREES, TURN_DEGREES) if rng.random() < 0.5 else 0.0
  return CameraMotion((speed * math.cos(direction), speed * math.sin(direction)), zoom, turn)


def render(photo: Image.Image, motion: CameraMotion, frames: int, size: tuple[int, int], name: str,
           seed: int = 0) -> np.ndarray:
  """`frames` frames (frames, h, w, 3) uint8 of `size` (h, w) filmed over `photo` with `motion`. How much of the
  photo the camera shows and where it starts are drawn from `seed` and `name`; a pan that would leave the photo is
  slowed until it does not. Raises ValueError when the photo is too small for the frame."""
  h, w = size
  rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 1])
  magnification = motion.zoom ** np.arange(frames)
  magnification /= magnification.max()  # output pixels per pixel of the reduced photo: 1 at the closest frame
  angles = np.radians(motion.turn) * np.arange(frames)
  rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], -1).reshape(-1, 2, 2)
  half = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float64) / 2  # the frame's corners about its center
  turned = np.einsum("tij,kj->tki", rotations, half) / magnification[:, None, None]  # in reduced-photo pixels
  # The reduced photo's size: every frame's window, before any pan, fits in `coverage` of it (at most; more only
  # where the photo's aspect leaves no choice); never enlarged.
  footprint = turned.max(axis=(0, 1)) - turned.min(axis=(0, 1))
  photo = photo.convert("RGB")
  coverage = rng.uniform(*COVERAGE)
  fit = max(footprint[0] / (coverage * photo.width), footprint[1] / (coverage * photo.height))
  if fit > 1:
    raise ValueError(f"a photo of {photo.width}x{photo.height} is too small for {w}x{h} frames: it needs at least "
                     f"{math.ceil(photo.width * fit)}x{math.ceil(photo.height * fit)}")
  reduced = photo.resize((round(photo.width * fit), round(photo.height * fit)), Image.LANCZOS)
  bounds = np.array([reduced.width, reduced.height], np.float64)
  pan = np.asarray(motion.pan, np.float64)
  while True:  # the windows before any pan fit with room to spare, so a slow enough pan fits too
    # Window centers relative to the first, in reduced-photo pixels: each frame moves `pan` output pixels.
    centers = np.concatenate([[0.0], np.cumsum(1 / magnification[:-1])])[:, None] * pan
    corners = centers[:, None] + turned
    low, high = -corners.min(axis=(0, 1)), bounds - corners.max(axis=(0, 1))
    if np.all(low <= high):
      break
    pan *= 0.7
  first = rng.uniform(low, high)
  clip = np.empty((frames, h, w, 3), np.uint8)
  for t in range(frames):
    # PIL maps each output pixel (x, y) to the photo's (a x + b y + c, d x + e y + f): output pixels about the
    # frame's center, turned and scaled, plus the center.
    (a, b), (d, e) = rotations[t] / magnification[t]
    cx, cy = first + centers[t]
    coefficients = (a, b, cx - a * w / 2 - b * h / 2, d, e, cy - d * w / 2 - e * h / 2)
    clip[t] = np.asarray(reduced.transform((w, h), Image.AFFINE, coefficients, Image.BICUBIC))
  return clip
