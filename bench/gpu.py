"""The GPU measurements, as one script for one call of at most 10 minutes on a machine with one NVIDIA GPU (jax
preinstalled, nothing downloadable): each row is printed as soon as it is measured, so a cut-short run keeps what it
measured.

  python bench/gpu.py           # Wan2.1 T2V-1.3B DiffST (configs/wan21_1_3b.py, bf16 compute) at real size
  python bench/gpu.py --tiny    # configs/tiny.py at small sizes: the same code on any machine, in a minute

Rows: cuDNN attention against the XLA reference (forward and backward, bf16; on a GPU only); the DiT forward and one
train step (stage 1) in seconds, TFLOP/s and MFU (against the chip's bf16 dense peak, when the chip is known); VAE
encode and decode and the end-to-end upscale of a 33-frame 480x832 output clip; peak device memory. Weights are
random (speed and memory do not depend on their values). Times are medians of repeated runs after a first,
compiling one.
"""

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffst_jax import cli  # noqa: E402
from diffst_jax.models import diffst, layers  # noqa: E402
from diffst_jax.ops.attention import dot_product_attention  # noqa: E402
from diffst_jax.parallel import plan as plan_lib  # noqa: E402
from diffst_jax.parallel import rules  # noqa: E402
from diffst_jax.parallel.mesh import make_mesh  # noqa: E402
from diffst_jax import config_files  # noqa: E402
from diffst_jax.train import loop  # noqa: E402

BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}  # dense, per chip
REPEATS = 3


def peak_tflops() -> float | None:
  kind = jax.devices()[0].device_kind
  return next((peak for name, peak in BF16_PEAK_TFLOPS.items() if name in kind), None)


def timed(function, *args) -> float:
  """Median seconds of `function(*args)` over REPEATS runs after a first one (which compiles)."""
  jax.block_until_ready(function(*args))
  seconds = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def compiled(jitted, *args):
  """The program of `jitted` for `args`, compiled once: timed and asked for its FLOPs without a second compile."""
  return jitted.lower(*args).compile()


def flops(program) -> float:
  analysis = program.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", 0.0))


def row(name: str, seconds: float, flop: float = 0.0, note: str = "") -> None:
  peak = peak_tflops()
  tflops = flop / seconds / 1e12 if flop else None
  mfu = f"{100 * tflops / peak:.1f}%" if tflops and peak else ""
  print(f"| {name} | {seconds:.3f} | {f'{tflops:.1f}' if tflops else ''} | {mfu} | {note} |", flush=True)


def attention_rows(tokens: int, heads: int, dim: int) -> None:
  if jax.default_backend() != "gpu":
    print("| cuDNN attention | | | | not a GPU: skipped |", flush=True)
    return
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, weights = (jax.random.normal(key, (1, tokens, heads, dim), jnp.bfloat16) for key in keys)
  results = {}
  for implementation in ("cudnn", "xla"):
    forward = jax.jit(lambda q, k, v, i=implementation: dot_product_attention(q, k, v, implementation=i))
    loss = lambda q, k, v, i=implementation: jnp.sum(  # noqa: E731
        dot_product_attention(q, k, v, implementation=i).astype(jnp.float32) * weights)
    backward = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    results[implementation] = (forward(q, k, v), backward(q, k, v), timed(forward, q, k, v), timed(backward, q, k, v))
  error = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))) /  # noqa: E731
                             jnp.max(jnp.abs(b.astype(jnp.float32))))
  cudnn, xla = results["cudnn"], results["xla"]
  row(f"attention forward, cuDNN ({tokens} tokens, bf16)", cudnn[2],
      note=f"XLA {xla[2]:.3f} s; max error relative to XLA {error(cudnn[0], xla[0]):.1e}")
  row(f"attention forward + backward, cuDNN ({tokens} tokens, bf16)", cudnn[3],
      note=f"XLA {xla[3]:.3f} s; max gradient error relative to XLA "
           f"{max(error(a, b) for a, b in zip(cudnn[1], xla[1])):.1e}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tiny", action="store_true", help="configs/tiny.py at small sizes (a smoke run)")
  args = parser.parse_args()
  config = config_files.load(ROOT / "configs" / ("tiny.py" if args.tiny else "wan21_1_3b.py"))
  frames, height, width = (9, 64, 64) if args.tiny else (33, 480, 832)
  model_config = diffst.DiffSTConfig.from_dict(config.model.to_dict())
  s_t, s_x = model_config.time_scale, model_config.space_scale
  device = jax.devices()[0]
  print(f"{device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, clip {frames}x{height}x{width}, "
        f"bf16 peak {peak_tflops() or 'unknown'} TFLOP/s\n\n| measurement | seconds | TFLOP/s | MFU | note |\n"
        "|---|---:|---:|---:|---|", flush=True)
  latent = ((frames - 1) // 4 + 1, height // 8, width // 8)
  dit = model_config.dit
  attention_rows(latent[0] * latent[1] * latent[2] // 4, dit.num_attention_heads, dit.attention_head_dim)

  model = diffst.init(model_config)  # float32 weights: the train step's
  inference = nnx.clone(model)
  layers.store_in_compute_dtype(inference)  # the rows without gradients hold their weights as infer.py does
  graphdef, state = nnx.split(inference.dit)
  z = jax.random.normal(jax.random.key(1), (1, *latent, dit.in_channels))
  context = jnp.zeros((1, model_config.context_tokens, dit.text_dim))
  inputs = (state, z, jnp.array([400.0]), context)
  one_device = plan_lib.ExecutionPlan()
  forward = compiled(jax.jit(lambda state, z, t, c: nnx.merge(graphdef, state)(one_device, z, t, c)), *inputs)
  row(f"DiT forward ({latent[0] * latent[1] * latent[2] // 4} tokens)", timed(forward, *inputs), flops(forward))

  hr = jax.random.uniform(jax.random.key(2), (1, frames, height, width, 3), minval=-1.0, maxval=1.0)
  encode = compiled(jax.jit(lambda video: inference.vae.encode(one_device, video)), hr)
  row("VAE encode", timed(encode, hr), flops(encode))
  code = encode(hr)
  decode = compiled(jax.jit(lambda latent_clip: inference.vae.decode(one_device, latent_clip)), code)
  row("VAE decode", timed(decode, code), flops(decode))

  lr = hr[:, ::s_t, ::s_x, ::s_x]
  row(f"upscale, end to end ({lr.shape[1]}x{lr.shape[2]}x{lr.shape[3]} in)", timed(diffst.upscale, inference, lr))

  mesh = make_mesh("", [device])
  axis_rules = rules.rules_from_config(config.logical_axis_rules)
  made = loop.program(config, model, plan_lib.ExecutionPlan(mesh, axis_rules, **loop.run_choices(config)))
  state, frozen = jax.device_put((made.new_state(made.trainable), made.frozen), made.shardings)
  batch = {"hr": np.random.default_rng(0).integers(0, 256, (1, frames, height, width, 3), np.uint8)}
  batch["lr"] = batch["hr"][:, ::s_t, ::s_x, ::s_x]
  with jax.set_mesh(mesh):
    batch = rules.global_batch(batch, mesh, axis_rules)
    step = compiled(made.step(made.stages[0]), state, frozen, None, batch)
    step_flops = flops(step)
    seconds = []
    for _ in range(REPEATS + 1):
      start = time.perf_counter()
      state, metrics = step(state, frozen, None, batch)
      jax.block_until_ready(metrics)
      seconds.append(time.perf_counter() - start)
  row("train step, stage 1 (L_latent, AdamW)", statistics.median(seconds[1:]), step_flops,
      note=f"first step {seconds[0]:.1f} s")
  stats = device.memory_stats() or {}
  print(f"\npeak device memory: {stats.get('peak_bytes_in_use', 0) / 2**30:.1f} GiB"
        if stats else "\npeak device memory: not reported by this backend", flush=True)


if __name__ == "__main__":
  cli.script(main)
