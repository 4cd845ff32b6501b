"""Wan2.1 VAE benchmark: (a) compiled peak memory of decode vs clip length, (b) CPU wall time against diffusers.

  python bench/vae.py                       # real Wan2.1 config; prints two markdown tables
  python bench/vae.py --height 480 --width 832 --frames 17 33 65 129 --repeats 5

(a) compiles `vae.decode` (the public API, under jit) for each output length and reads XLA's memory analysis;
no weights are allocated. (b) runs encode and decode on the same random clip/latents and random weights in both
implementations (ours with each convolution implementation, and "auto", what inference picks on this backend),
side by side, and reports medians over --repeats runs after one warm-up run each.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from timing import median_seconds

from diffst_jax import cli
from diffst_jax.convert import vae as convert_vae
from diffst_jax.models.vae import WanVAE, wan21_vae_config
from diffst_jax.parallel import plan as plan_lib

MB = 1 << 20


def decode_memory(config, frames: int, height: int, width: int) -> dict:
  graphdef, state = nnx.split(nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0))))
  latent = jax.ShapeDtypeStruct((1, 1 + (frames - 1) // 4, height // 8, width // 8, config.z_dim), jnp.float32)
  decode = jax.jit(lambda state, z: nnx.merge(graphdef, state).decode(plan_lib.ExecutionPlan(), z))
  stats = decode.lower(state, latent).compile().memory_analysis()
  return {"arguments": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
          "temp": stats.temp_size_in_bytes}


def wall_times(frames: int, height: int, width: int, repeats: int) -> list[tuple[str, dict[str, float], float]]:
  """(op, {convolution implementation: our seconds}, diffusers' seconds) for encode and decode."""
  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  reference = diffusers.AutoencoderKLWan().eval()
  ours = convert_vae.from_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (1, frames, height, width, 3)).astype(np.float32)
  z = rng.standard_normal((1, 1 + (frames - 1) // 4, height // 8, width // 8, 16)).astype(np.float32)
  x_torch = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous()
  z_torch = torch.from_numpy(z).permute(0, 4, 1, 2, 3).contiguous()
  x_jax, z_jax = jnp.asarray(x), jnp.asarray(z)
  ops = {"encode": (lambda p: ours.encode(p, x_jax).block_until_ready(), lambda: reference.encode(x_torch)),
         "decode": (lambda p: ours.decode(p, z_jax).block_until_ready(), lambda: reference.decode(z_torch))}
  ours_seconds = {name: {} for name in ops}
  for implementation in ("auto", *plan_lib.CONV_IMPLEMENTATIONS[1:]):
    execution_plan = plan_lib.ExecutionPlan(conv_implementation=implementation)
    for name, (ours_fn, _) in ops.items():
      ours_seconds[name][implementation] = median_seconds(functools.partial(ours_fn, execution_plan), repeats)
  with torch.no_grad():
    return [(name, ours_seconds[name], median_seconds(torch_fn, repeats)) for name, (_, torch_fn) in ops.items()]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, nargs="+", default=[17, 33, 65, 129])
  parser.add_argument("--height", type=int, default=256)
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--time-frames", type=int, default=9, help="clip length for the wall-time comparison")
  parser.add_argument("--time-size", type=int, default=64, help="height = width for the wall-time comparison")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  config = wan21_vae_config()

  print(f"(a) decode, compiled memory, Wan2.1 config, {args.height}x{args.width}, backend {jax.default_backend()}")
  print("| output frames | latent frames | arguments MB | output MB | temp MB |")
  print("|---:|---:|---:|---:|---:|")
  for frames in args.frames:
    m = decode_memory(config, frames, args.height, args.width)
    print(f"| {frames} | {1 + (frames - 1) // 4} | {m['arguments'] / MB:.1f} | {m['output'] / MB:.1f} "
          f"| {m['temp'] / MB:.1f} |")

  print(f"\n(b) CPU wall time, Wan2.1 config, random weights, {args.time_frames} frames "
        f"{args.time_size}x{args.time_size}, median of {args.repeats}")
  print("| op | convolutions | diffst-jax s | diffusers s | ratio (ours / diffusers) |")
  print("|---|---|---:|---:|---:|")
  for name, ours, theirs in wall_times(args.time_frames, args.time_size, args.time_size, args.repeats):
    for implementation, seconds in ours.items():
      label = f"auto ({plan_lib.ExecutionPlan().convolutions()})" if implementation == "auto" else implementation
      print(f"| {name} | {label} | {seconds:.3f} | {theirs:.3f} | {seconds / theirs:.2f} |")


if __name__ == "__main__":
  cli.script(main)
