"""L_perc (DESIGN §7): a perceptual distance (`diffst_jax.models.perceptual`) between clips, frame by frame, spread
over every batch and context device."""

import functools

import jax
import jax.numpy as jnp

from diffst_jax.models.perceptual import DistsParams, LpipsParams, dists, load_dists, load_lpips, lpips
from diffst_jax.parallel import plan as plan_lib

SCOPE = "perceptual"  # its operations' name in a compiled program (hlo_cycles)
_METRICS = {"lpips": (lpips, LpipsParams), "lpips_alex": (lpips, LpipsParams), "dists": (dists, DistsParams)}


def load(kind: str) -> LpipsParams | DistsParams:
  """The weights of a training loss `kind`: "lpips" (LPIPS-VGG, the usual loss network), "lpips_alex" (about 100x
  cheaper on CPU) or "dists"."""
  if kind not in _METRICS:
    raise ValueError(f"unknown perceptual loss {kind!r}; expected one of {sorted(_METRICS)}")
  return {"lpips": lambda: load_lpips("vgg"), "lpips_alex": lambda: load_lpips("alex"), "dists": load_dists}[kind]()


@functools.partial(jax.named_call, name=SCOPE)
def perceptual_loss(plan: plan_lib.ExecutionPlan, kind: str, params: LpipsParams | DistsParams, output: jax.Array,
                    target: jax.Array) -> jax.Array:
  """L_perc: the `kind` ("lpips", "lpips_alex" or "dists") distance between clips (B, T, H, W, 3) in [-1, 1],
  averaged over all frames, the frames spread as `plan.for_images()` lays them out."""
  if kind not in _METRICS:
    raise ValueError(f"perceptual_loss: unknown kind {kind!r}; expected one of {sorted(_METRICS)}")
  metric, params_type = _METRICS[kind]
  if not isinstance(params, params_type):
    raise ValueError(f"perceptual_loss: kind {kind!r} needs load({kind!r})'s {params_type.__name__}, "
                     f"got {type(params).__name__}")
  if output.ndim != 5 or output.shape != target.shape:
    raise ValueError(f"perceptual_loss: expected two clips (B, T, H, W, 3) of one shape, got {output.shape} and "
                     f"{target.shape}")
  images_plan = plan.for_images()
  # One frame per device at a time, each group recomputed in the backward pass: the network's activations of a
  # whole clip (tens of GB for 66 frames of 480x832 through VGG16) are never held at once.
  devices = images_plan.axis_size("act_batch")
  count = output.shape[0] * output.shape[1]
  groups = -(-count // devices)

  def frame_groups(clip):
    frames = jnp.pad(clip.reshape(count, *clip.shape[2:]), ((0, groups * devices - count),) + ((0, 0),) * 3)
    return images_plan.constrain(frames.reshape(groups, devices, *clip.shape[2:]), (None, "act_batch"))

  score = jax.checkpoint(lambda pair: images_plan.constrain(metric(images_plan, params, *pair), ("act_batch",)))
  _, scores = plan.scan(lambda _, pair: ((), score(pair)), (), (frame_groups(output), frame_groups(target)))
  return jnp.mean(scores.reshape(-1)[:count])
