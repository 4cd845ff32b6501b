"""DiffST end to end (DESIGN §1): CFCA -> bilinear x s_x -> VAE encode -> one-step DiT with VRG guidance -> VAE decode.

`upscale(model, frames)` takes (B, N, h, w, 3) in [-1, 1] and returns (B, s_t (N-1) + 1, s_x h, s_x w, 3): it pads
what the VAE and DiT cannot take (an even N for s_t = 2 repeats the last frame; h, w reflect-padded to multiples of
16 / s_x, the rows to more when the VAE's rows split over devices: `padding_for`) and crops the output back, running
one jit-compiled program per padded input shape.
"""

import dataclasses
import functools
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from diffst_jax import config_files
from diffst_jax.io import checkpoint
from diffst_jax.models.abstract import abstract
from diffst_jax.models.cfca import CFCA, CFCAConfig
from diffst_jax.models.dit import WanDiT, WanDiTConfig, one_step_denoise
from diffst_jax.models.vae import WanVAE, WanVAEConfig
from diffst_jax.models.vrg import VRG, VRGConfig
from diffst_jax.ops.color_fix import COLOR_FIXES
from diffst_jax.ops.resize import resize_bilinear
from diffst_jax.parallel import plan as plan_lib

MODEL_NAME = "diffst"
_PARTS = {"vae": WanVAEConfig, "dit": WanDiTConfig, "cfca": CFCAConfig, "vrg": VRGConfig}


@dataclasses.dataclass(frozen=True)
class DiffSTConfig:
  vae: WanVAEConfig = dataclasses.field(default_factory=WanVAEConfig)
  dit: WanDiTConfig = dataclasses.field(default_factory=WanDiTConfig)
  cfca: CFCAConfig = dataclasses.field(default_factory=CFCAConfig)
  vrg: VRGConfig = dataclasses.field(default_factory=VRGConfig)
  space_scale: int = 4  # s_x
  sigma: float = 0.4  # sigma* = t* / 1000 of the one denoising step
  context_tokens: int = 512  # length of the null (empty-prompt) context

  def __post_init__(self):
    if self.space_scale not in (1, 2, 4):
      raise ValueError(f"DiffSTConfig: space_scale must be 1, 2 or 4, got {self.space_scale}")
    if self.vae.z_dim != self.dit.in_channels or self.dit.in_channels != self.dit.out_channels:
      raise ValueError(f"DiffSTConfig: the DiT must take and return the VAE's {self.vae.z_dim} latent channels")

  @property
  def time_scale(self) -> int:
    return self.cfca.time_scale

  @classmethod
  def from_dict(cls, config: dict[str, Any]) -> "DiffSTConfig":
    """From nested dicts (a config file's ConfigDict, or a checkpoint's model.json config)."""
    config = dict(config)
    parts = {name: part(**dict(config.pop(name, {}))) for name, part in _PARTS.items()}
    return cls(**parts, **config)


def config_from_file(path: str | pathlib.Path, arg: str | None = None) -> DiffSTConfig:
  """The DiffSTConfig of an experiment config file (its `model` section; e.g. configs/tiny.py)."""
  return DiffSTConfig.from_dict(config_files.load(path, arg).model.to_dict())


class NullContext(nnx.Variable):
  """The empty-prompt text embedding (B=1, L, text_dim): loaded with the weights, never trained."""


class DiffST(nnx.Module):
  """The DiffST model; call `upscale(model, frames, plan)` rather than the module on raw clips."""

  def __init__(self, config: DiffSTConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.cfca = CFCA(config.cfca, rngs=rngs)
    self.vrg = VRG(config.vrg, config.dit.text_dim, rngs=rngs) if config.vrg.enabled else None
    self.vae = WanVAE(config.vae, rngs=rngs)
    self.dit = WanDiT(config.dit, rngs=rngs)
    self.null_context = NullContext(jnp.zeros((1, config.context_tokens, config.dit.text_dim), jnp.float32))

  def __call__(self, plan: plan_lib.ExecutionPlan, frames: jax.Array) -> jax.Array:
    """(B, N, h, w, 3) with N, h, w already valid (see `upscale`) -> (B, s_t (N-1) + 1, s_x h, s_x w, 3)."""
    return self.vae.decode(plan, self.denoised_latent(plan, frames))

  def lr_latent(self, plan: plan_lib.ExecutionPlan, frames: jax.Array) -> jax.Array:
    """(B, N, h, w, 3) -> the latent the DiT denoises: the CFCA-interpolated clip, upscaled bilinearly, encoded."""
    x = self.cfca(plan, frames)
    if self.config.space_scale > 1:
      x = resize_bilinear(x, x.shape[2] * self.config.space_scale, x.shape[3] * self.config.space_scale)
    return self.vae.encode(plan, x)

  def denoised_latent(self, plan: plan_lib.ExecutionPlan, frames: jax.Array) -> jax.Array:
    """(B, N, h, w, 3) -> the one-step denoised latent ẑ (B, 1 + s_t (N-1) / 4, s_x h / 8, s_x w / 8, z_dim)."""
    context = jnp.broadcast_to(self.null_context[...], (frames.shape[0], *self.null_context.shape[1:]))
    guidance = self.vrg(plan, frames) if self.vrg is not None else None
    return one_step_denoise(plan, self.dit, self.lr_latent(plan, frames), context, self.config.sigma, guidance)


def init(config: DiffSTConfig, seed: int = 0) -> DiffST:
  """A DiffST at initialization. The key uses the "rbg" generator: XLA compiles its per-shape initializers about
  4x faster than threefry's on CPU, which dominates start-up for small models."""
  return DiffST(config, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))


def with_config(model: DiffST, config: DiffSTConfig) -> DiffST:
  """The same parameters under another config (scales, dtypes, ablation switches); the parts the new config leaves
  out (a disabled VRG) are dropped."""
  graphdef, shapes = nnx.split(abstract(lambda rngs: DiffST(config, rngs=rngs)))
  return nnx.merge(graphdef, nnx.State({part: value for part, value in nnx.state(model).items() if part in shapes}))


ABLATIONS = ("cfca", "vrg")


def without(model: DiffST, part: str) -> DiffST:
  """The trained model with CFCA (then plain linear frame blending) or VRG (no guidance branch) switched off."""
  if part not in ABLATIONS:
    raise ValueError(f"cannot switch off {part!r}: choose one of {', '.join(ABLATIONS)}")
  config = model.config
  return with_config(model, dataclasses.replace(config, **{part: dataclasses.replace(getattr(config, part),
                                                                                     enabled=False)}))


@functools.partial(jax.jit, static_argnums=(0, 1))
def forward(graphdef: nnx.GraphDef, plan: plan_lib.ExecutionPlan, state: nnx.State, frames: jax.Array) -> jax.Array:
  """The compiled program of `upscale` (and of `python -m diffst_jax.aot --program upscale`), on valid sizes, under
  `plan` (a static argument: a program traced under one plan is not reused under another)."""
  return nnx.merge(graphdef, state)(plan, frames)


def padding_for(config: DiffSTConfig, frames: int, height: int, width: int,
                row_devices: int = 1) -> tuple[int, int, int]:
  """Frames, rows and columns to append so the model can take an (N, h, w) input whose VAE rows split over
  `row_devices` (the execution plan's "act_rows"): rows that leave the coarsest latent level indivisible would run
  the VAE whole on every device (`ExecutionPlan.for_vae`)."""
  extra_frames = 1 if config.time_scale == 2 and frames % 2 == 0 else 0
  s_x = config.space_scale
  hr_rows = math.lcm(16, config.vae.spatial_compression * row_devices)
  row_multiple = hr_rows // math.gcd(hr_rows, s_x)
  return extra_frames, -height % row_multiple, -width % (16 // s_x)


def upscale(model: DiffST, frames: jax.Array, plan: plan_lib.ExecutionPlan | None = None) -> jax.Array:
  """(B, N, h, w, 3) in [-1, 1], N >= 2 -> (B, s_t (N-1) + 1, s_x h, s_x w, 3) in [-1, 1], float32, under `plan`
  (default: one device of JAX's default backend)."""
  if frames.ndim != 5 or frames.shape[-1] != 3:
    raise ValueError(f"upscale: expected frames (B, N, h, w, 3), got shape {tuple(frames.shape)}")
  b, n, h, w, _ = frames.shape
  if n < 2:
    raise ValueError(f"upscale: needs at least 2 input frames to interpolate between, got {n}")
  config = model.config
  plan = plan or plan_lib.ExecutionPlan()
  extra_frames, extra_rows, extra_cols = padding_for(config, n, h, w, plan.axis_size("act_rows"))
  frames = jnp.asarray(frames, jnp.float32)
  if extra_frames:
    frames = jnp.concatenate([frames, frames[:, -1:]], axis=1)
  if extra_rows or extra_cols:
    mode = "reflect" if extra_rows < h and extra_cols < w else "edge"
    frames = jnp.pad(frames, ((0, 0), (0, 0), (0, extra_rows), (0, extra_cols), (0, 0)), mode=mode)
  graphdef, state = nnx.split(model)
  out = forward(graphdef, plan, state, frames)
  s_t, s_x = config.time_scale, config.space_scale
  return out[:, : s_t * (n - 1) + 1, : s_x * h, : s_x * w]


def save(model: DiffST, directory: str | pathlib.Path, source: dict[str, Any] | None = None,
         trained_sizes: dict[str, int] | None = None) -> pathlib.Path:
  """Writes the model as our Orbax checkpoint (model.json + params); the directory must be new or empty.
  `trained_sizes`: what infer.py then defaults to (chunking.plan_for): the input frames of its training clips
  ("chunk_frames") and, where one was measured best, an LR tile size ("tile")."""
  return checkpoint.save(directory, MODEL_NAME, dataclasses.asdict(model.config),
                         nnx.to_pure_dict(nnx.state(model)), source, trained_sizes)


def is_diffst(directory: str | pathlib.Path) -> bool:
  """Whether `directory` is our checkpoint of a whole DiffST."""
  return checkpoint.is_checkpoint(directory) and checkpoint.model_name(directory) == MODEL_NAME


def trained_sizes(directory: str | pathlib.Path) -> dict[str, int]:
  """The clip length and crop size the checkpoint was trained on, as far as it records them (trained by train.py),
  and the tile and colour fix measured best for it; raises, naming the field, for a value that cannot be."""
  recorded = checkpoint.read_metadata(directory, MODEL_NAME).get("inference", {})
  where = f"{pathlib.Path(directory) / checkpoint.METADATA_FILE}: inference"
  if not isinstance(recorded, dict):
    raise ValueError(f"{where} is {recorded!r}; expected a mapping of chunk_frames, tile and color_fix")
  for field, least in (("chunk_frames", 2), ("tile", 1)):
    value = recorded.get(field)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
      raise ValueError(f"{where}.{field} is {value!r}; expected a whole number of at least {least} (or no such "
                       "field)")
  if recorded.get("color_fix", "none") not in COLOR_FIXES:
    raise ValueError(f"{where}.color_fix is {recorded['color_fix']!r}; expected one of {', '.join(COLOR_FIXES)}")
  return recorded


def recorded_color_fix(directory: str | pathlib.Path) -> str:
  """The colour fix measured best for the checkpoint, if its model.json records one, else "none"."""
  return trained_sizes(directory).get("color_fix", "none")


def load(directory: str | pathlib.Path, part: str | None = None) -> nnx.Module:
  """A ready DiffST from our checkpoint directory; with `part` ("vae", "dit", ...) only that part, reading only its
  parameters (e.g. a trained DiffST's VAE to initialize another run)."""
  config = DiffSTConfig.from_dict(checkpoint.read_metadata(directory, MODEL_NAME)["config"])
  model = abstract(lambda rngs: DiffST(config, rngs=rngs))
  graphdef, state = nnx.split(getattr(model, part) if part else model)
  target = nnx.to_pure_dict(state)
  if part:
    restored = checkpoint.restore(directory, {part: target}, partial=True)[part]
  else:
    restored = checkpoint.restore(directory, target)
  nnx.replace_by_pure_dict(state, restored)
  return nnx.merge(graphdef, state)
