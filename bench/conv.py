"""The CPU convolution path of `diffst_jax.models.layers.Conv` against XLA's native 3D convolution.

  python bench/conv.py [--repeats 5]

On CPU, `Conv` runs a 3D convolution as a 2D one over time-stacked frames and computes kernel gradients as matrix
products (`layers._cpu_conv`); on accelerators it uses XLA's native convolution (`layers._native_conv`). This
prints, for the VAE at a few shapes, the median wall time of the jitted forward and of forward + backward (all
parameters and the input) with each path, their ratio, and the largest difference between the two results relative
to the largest value.
"""

import argparse

import jax
import jax.numpy as jnp
from flax import nnx
from timing import median_seconds

from diffst_jax.models import layers
from diffst_jax.models.vae import WanVAE, WanVAEConfig, wan21_vae_config
from diffst_jax.train import defaults


def _reconstruction_fns(config: WanVAEConfig, shape: tuple[int, ...]):
  graphdef, params, rest = nnx.split(WanVAE(config, rngs=nnx.Rngs(jax.random.key(0, impl="rbg"))), nnx.Param, ...)
  video = jax.random.uniform(jax.random.key(1), shape, minval=-1, maxval=1)

  def loss(params, video):
    model = nnx.merge(graphdef, params, rest)
    return jnp.mean((model.decode(model.encode(video)) - video) ** 2)

  forward = jax.jit(loss)
  backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return (lambda: jax.block_until_ready(forward(params, video)),
          lambda: jax.block_until_ready(backward(params, video)))


def _relative_difference(a, b) -> float:
  return max(float(jnp.abs(x - y).max() / jnp.abs(x).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  tiny = WanVAEConfig(**defaults.load_config_file("configs/tiny.py").model.vae)
  cases = [("tiny VAE, stage-0 batch 8x5x32x32", tiny, (8, 5, 32, 32, 3)),
           ("tiny VAE, 1x17x64x64", tiny, (1, 17, 64, 64, 3)),
           ("Wan2.1 VAE, 1x5x64x64", wan21_vae_config(), (1, 5, 64, 64, 3))]
  cpu_conv = layers._cpu_conv  # pylint: disable=protected-access
  print("| case | pass | native s | cpu path s | native / cpu path | relative difference |")
  print("|---|---|---:|---:|---:|---:|")
  for name, config, shape in cases:
    results = {}
    for path, conv in (("native", layers._native_conv), ("cpu", cpu_conv)):  # pylint: disable=protected-access
      layers._cpu_conv = conv  # pylint: disable=protected-access
      forward, backward = _reconstruction_fns(config, shape)
      results[path] = [(median_seconds(fn, args.repeats), fn()) for fn in (forward, backward)]
    layers._cpu_conv = cpu_conv  # pylint: disable=protected-access
    for i, what in enumerate(("forward", "forward + backward")):
      (native_s, native_out), (cpu_s, cpu_out) = results["native"][i], results["cpu"][i]
      print(f"| {name} | {what} | {native_s:.3f} | {cpu_s:.3f} | {native_s / cpu_s:.2f} | "
            f"{_relative_difference(native_out, cpu_out):.1e} |")


if __name__ == "__main__":
  main()
