"""Wan2.1 T2V-1.3B DiT forward benchmark on the current backend (CPU here), against diffusers.

  python bench/dit.py                                  # latent 3x16x16 (192 tokens), 512 context tokens
  python bench/dit.py --frames 5 --size 32 --repeats 5

Prints one table: cold compile time (fresh process, empty persistent compilation cache), warm start (fresh
process, cache filled by the cold run), XLA's compiled memory (weights, temp), and the wall time of one forward
pass of ours and of diffusers on the same random weights and inputs (medians of --repeats after a warm-up), with
the ratio. The compile runs happen in subprocesses so that in-process caches cannot flatter them.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli  # noqa: E402  pylint: disable=wrong-import-position
from timing import median_seconds

MB = 1 << 20


def _abstract_forward(frames: int, size: int, context_len: int):
  """The jitted forward of the 1.3B DiT and abstract arguments for it (no weights allocated)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax.models.dit import WanDiT, wan21_t2v_1_3b  # pylint: disable=import-outside-toplevel

  graphdef, state = nnx.split(nnx.eval_shape(lambda: WanDiT(wan21_t2v_1_3b(), rngs=nnx.Rngs(0))))
  forward = jax.jit(lambda state, x, t, c: nnx.merge(graphdef, state)(x, t, c))
  args = (state, jax.ShapeDtypeStruct((1, frames, size, size, 16), jnp.float32),
          jax.ShapeDtypeStruct((1,), jnp.float32), jax.ShapeDtypeStruct((1, context_len, 4096), jnp.float32))
  return forward, args


def compile_once(frames: int, size: int, context_len: int) -> dict:
  """Lower + compile in this process; returns seconds and XLA's memory analysis."""
  start = time.perf_counter()
  forward, args = _abstract_forward(frames, size, context_len)
  compiled = forward.lower(*args).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  return {"seconds": seconds, "arguments": memory.argument_size_in_bytes, "temp": memory.temp_size_in_bytes,
          "output": memory.output_size_in_bytes}


def compile_in_fresh_process(args, cache_dir: str) -> dict:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  command = [sys.executable, __file__, "--compile-only", "--frames", str(args.frames), "--size", str(args.size),
             "--context", str(args.context)]
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def wall_times(args) -> tuple[float, float]:
  import diffusers  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax.convert import dit as convert_dit  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  reference = diffusers.WanTransformer3DModel(num_attention_heads=12, ffn_dim=8960, num_layers=30).eval()
  ours = convert_dit.from_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, args.frames, args.size, args.size, 16)).astype(np.float32)
  context = rng.standard_normal((1, args.context, 4096)).astype(np.float32)
  t = np.array([400.0], np.float32)
  graphdef, state = nnx.split(ours)
  forward = jax.jit(lambda state, x, t, c: nnx.merge(graphdef, state)(x, t, c))
  x_jax, t_jax, c_jax = jnp.asarray(x), jnp.asarray(t), jnp.asarray(context)
  x_torch = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous()
  t_torch, c_torch = torch.from_numpy(t), torch.from_numpy(context)
  ours_s = median_seconds(lambda: forward(state, x_jax, t_jax, c_jax).block_until_ready(), args.repeats)
  with torch.no_grad():
    theirs_s = median_seconds(lambda: reference(x_torch, t_torch, c_torch), args.repeats)
  return ours_s, theirs_s


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=3, help="latent frames T'")
  parser.add_argument("--size", type=int, default=16, help="latent height = width (H/8)")
  parser.add_argument("--context", type=int, default=512, help="context tokens (Wan's text_len)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.compile_only:
    print(json.dumps(compile_once(args.frames, args.size, args.context)))
    return

  with tempfile.TemporaryDirectory() as cache_dir:
    cold = compile_in_fresh_process(args, cache_dir)
    warm = compile_in_fresh_process(args, cache_dir)
  ours_s, theirs_s = wall_times(args)
  tokens = args.frames * (args.size // 2) ** 2
  print(f"Wan2.1 T2V-1.3B DiT forward, fp32, latent (1, {args.frames}, {args.size}, {args.size}, 16) = {tokens} "
        f"tokens, {args.context} context tokens, random weights")
  print("| measure | value |")
  print("|---|---:|")
  print(f"| cold compile (fresh process, empty cache) | {cold['seconds']:.1f} s |")
  print(f"| warm start (fresh process, persistent cache) | {warm['seconds']:.1f} s |")
  print(f"| compiled memory: arguments (weights + inputs) | {cold['arguments'] / MB:.0f} MB |")
  print(f"| compiled memory: temp | {cold['temp'] / MB:.0f} MB |")
  print(f"| forward wall time, diffst-jax (median of {args.repeats}) | {ours_s:.3f} s |")
  print(f"| forward wall time, diffusers (median of {args.repeats}) | {theirs_s:.3f} s |")
  print(f"| ratio diffst-jax / diffusers | {ours_s / theirs_s:.2f} |")


if __name__ == "__main__":
  cli.script(main)
