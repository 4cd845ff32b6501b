"""End-to-end DiffST seconds per output frame on the current backend, by stage, compile time apart.

  python bench/infer.py                         # tiny preset and the real sizes (1.3B DiT, Wan2.1 VAE)
  python bench/infer.py --frames 5 --size 32 --repeats 3 --configs tiny

Random weights. Each stage is the public call a user makes (CFCA; bilinear x s_x + VAE encode; VRG + one-step
DiT; VAE decode), jitted on its own: compile time is lower + compile of that program, run time the median of
--repeats runs after it. The last row is `diffst.upscale`, the whole model as one program.
"""

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
from flax import nnx
from timing import median_seconds

from diffst_jax import cli
from diffst_jax.models import diffst
from diffst_jax.models.dit import one_step_denoise
from diffst_jax.ops.resize import resize_bilinear
from diffst_jax.parallel.plan import ExecutionPlan

ROOT = pathlib.Path(__file__).resolve().parent.parent


def config_named(name: str) -> diffst.DiffSTConfig:
  return diffst.config_from_file(ROOT / "configs" / f"{name}.py")


def stages(model: diffst.DiffST):
  """(name, function of (state, input), how to get its input from the previous stage's output), on one device."""
  config = model.config
  graphdef, _ = nnx.split(model)
  plan = ExecutionPlan()

  def cfca(state, frames):
    return nnx.merge(graphdef, state).cfca(plan, frames)

  def encode(state, x):
    s_x = config.space_scale
    return nnx.merge(graphdef, state).vae.encode(plan, resize_bilinear(x, x.shape[2] * s_x, x.shape[3] * s_x))

  def denoise(state, inputs):
    m = nnx.merge(graphdef, state)
    frames, z = inputs
    context = jnp.broadcast_to(m.null_context[...], (z.shape[0], *m.null_context.shape[1:]))
    guidance = m.vrg(plan, frames) if m.vrg is not None else None
    return one_step_denoise(plan, m.dit, z, context, config.sigma, guidance)

  def decode(state, z):
    return nnx.merge(graphdef, state).vae.decode(plan, z)

  return [("CFCA", cfca), ("x s_x + VAE encode", encode), ("VRG + DiT (one step)", denoise),
          ("VAE decode", decode)]


def measure(name: str, frames: int, size: int, repeats: int) -> list[tuple[str, float, float]]:
  model = diffst.init(config_named(name))
  _, state = nnx.split(model)
  lr = jax.random.uniform(jax.random.key(0), (1, frames, size, size, 3), minval=-1, maxval=1)
  rows, value = [], lr
  for stage, fn in stages(model):
    arg = (lr, value) if stage.startswith("VRG") else value
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(state, arg).compile()
    compile_s = time.perf_counter() - start
    run_s = median_seconds(lambda: jax.block_until_ready(compiled(state, arg)), repeats)  # noqa: B023
    value = compiled(state, arg)
    rows.append((stage, compile_s, run_s))
  start = time.perf_counter()
  jax.block_until_ready(diffst.upscale(model, lr))
  first_s = time.perf_counter() - start
  run_s = median_seconds(lambda: jax.block_until_ready(diffst.upscale(model, lr)), repeats)
  rows.append(("whole model (`upscale`, one program)", first_s - run_s, run_s))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", nargs="+", default=["tiny", "wan21_1_3b"])
  parser.add_argument("--frames", type=int, default=5, help="LR input frames N")
  parser.add_argument("--size", type=int, default=32, help="LR height = width")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  for name in args.configs:
    config = config_named(name)
    out_frames = config.time_scale * (args.frames - 1) + 1
    out_size = config.space_scale * args.size
    print(f"\n{name}: {args.frames} LR frames {args.size}x{args.size} -> {out_frames} frames {out_size}x{out_size}, "
          f"fp32, backend {jax.default_backend()}, median of {args.repeats}")
    print("| stage | compile s | run s | s per output frame |")
    print("|---|---:|---:|---:|")
    rows = measure(name, args.frames, args.size, args.repeats)
    for stage, compile_s, run_s in rows:
      print(f"| {stage} | {compile_s:.1f} | {run_s:.3f} | {run_s / out_frames:.4f} |")


if __name__ == "__main__":
  cli.script(main)
