"""The two convolution implementations of `diffst_jax.models.layers.convolve` ("xla" and "gemm") on this machine.

  python bench/conv.py [--repeats 5]

Prints, for the VAE at a few shapes, the compile time and median wall time of the jitted forward and of forward +
backward (all parameters and the input) with each implementation, their ratio, and the largest difference between
the two results relative to the largest value.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
from flax import nnx
from timing import median_seconds

from diffst_jax import cli
from diffst_jax.models.vae import WanVAE, WanVAEConfig, wan21_vae_config
from diffst_jax.parallel import plan as plan_lib
from diffst_jax import config_files


def _reconstruction_fns(config: WanVAEConfig, shape: tuple[int, ...], implementation: str):
  graphdef, params, rest = nnx.split(WanVAE(config, rngs=nnx.Rngs(jax.random.key(0, impl="rbg"))), nnx.Param, ...)
  video = jax.random.uniform(jax.random.key(1), shape, minval=-1, maxval=1)

  execution_plan = plan_lib.ExecutionPlan(conv_implementation=implementation)

  def loss(params, video):
    model = nnx.merge(graphdef, params, rest)
    return jnp.mean((model.decode(execution_plan, model.encode(execution_plan, video)) - video) ** 2)

  compiled = []
  for fn in (loss, jax.grad(loss, argnums=(0, 1))):
    start = time.perf_counter()
    executable = jax.jit(fn).lower(params, video).compile()
    compiled.append((time.perf_counter() - start, functools.partial(_run, executable, params, video)))
  return compiled


def _run(executable, params, video):
  return jax.block_until_ready(executable(params, video))


def _relative_difference(a, b) -> float:
  return max(float(jnp.abs(x - y).max() / jnp.abs(x).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  tiny = WanVAEConfig(**config_files.load("configs/tiny.py").model.vae)
  cases = [("tiny VAE, stage-0 batch 8x5x32x32", tiny, (8, 5, 32, 32, 3)),
           ("tiny VAE, 1x17x64x64", tiny, (1, 17, 64, 64, 3)),
           ("Wan2.1 VAE, 1x5x64x64", wan21_vae_config(), (1, 5, 64, 64, 3))]
  print("| case | pass | compile s xla / gemm | xla s | gemm s | xla / gemm | relative difference |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for name, config, shape in cases:
    results = {}
    for implementation in ("xla", "gemm"):
      results[implementation] = [(compile_s, median_seconds(fn, args.repeats), fn())
                                 for compile_s, fn in _reconstruction_fns(config, shape, implementation)]
    for i, what in enumerate(("forward", "forward + backward")):
      (xla_compile, xla_s, xla_out), (gemm_compile, gemm_s, gemm_out) = results["xla"][i], results["gemm"][i]
      print(f"| {name} | {what} | {xla_compile:.0f} / {gemm_compile:.0f} | {xla_s:.3f} | {gemm_s:.3f} | "
            f"{xla_s / gemm_s:.2f} | {_relative_difference(xla_out, gemm_out):.1e} |", flush=True)

if __name__ == "__main__":
  cli.script(main)
