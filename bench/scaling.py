"""Scale-out read from compiled programs (abstract inputs: nothing is allocated or run), on 8 simulated devices.

  python bench/scaling.py [--frames 33 --height 480 --width 832] [--skip-vae] [--skip-train]

For the real Wan2.1 T2V-1.3B DiT and the real Wan2.1 VAE at a realistic clip (33 frames of 480x832: a 9x60x104
latent, 14,040 DiT tokens), for context = 1, 2, 4, 8 (mesh "context=N" over N devices):
  * DiT forward, each context-parallel attention mode: per-device peak memory (arguments + output + temp; the
    parameters stay replicated, fsdp = 1) and the bytes each device receives through collectives per DiT layer
    (summed result sizes of all-gather / all-to-all / collective-permute / all-reduce / reduce-scatter in a
    one-layer DiT of the same width), against the analytic expectation (allgather_kv: K and V gathered, 2 S D
    bytes; ulysses: q, k, v and the output through all-to-all, 4 S D / N bytes; ring: K and V passed N - 1 times,
    2 (N - 1) S D / N bytes);
  * VAE encode + decode of the clip: per-device peak memory (rows over context; the VAE keeps rows split only when
    its coarsest rows divide over context: 60 latent rows split over 2 and 4 devices, not 8);
"Beyond arguments" is the peak less the arguments (the replicated parameters and the input): the part that
context parallelism divides.
  * one train step (stage 1, L_latent, AdamW) of the whole DiffST with fsdp = 8 (and with fsdp = 2 x context = 4),
    one clip per device of the batch axes: per-device peak memory.
On CPU the DiT's attention is XLA's (it materializes each device's S/N x S scores); accelerators take cuDNN /
splash kernels, whose memory does not grow with S^2.
"""

import argparse
import dataclasses
import os
import pathlib
import re
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffst_jax import cli  # noqa: E402
from diffst_jax import aot  # noqa: E402
from diffst_jax.models.dit import WanDiT, wan21_t2v_1_3b  # noqa: E402
from diffst_jax.models.vae import WanVAE, wan21_vae_config  # noqa: E402
from diffst_jax.parallel import attention as context_parallel  # noqa: E402
from diffst_jax.parallel import plan as plan_lib  # noqa: E402
from diffst_jax.parallel import rules  # noqa: E402
from diffst_jax.parallel.mesh import make_mesh  # noqa: E402
from diffst_jax import config_files  # noqa: E402

MB = 1 << 20
COLLECTIVE = re.compile(r"=\s*(\(?[^=]*?)\s+(all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter)"
                        r"(-start)?\(")
SHAPE = re.compile(r"(f32|bf16|f16|s32|u32|u8|s8|pred|f64|s64)\[([\d,]*)\]")
BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "u8": 1, "s8": 1, "pred": 1, "f64": 8, "s64": 8}


def collective_bytes(hlo_text: str) -> int:
  """Bytes of the results of the collectives in an HLO module (per device; async starts counted once)."""
  total = 0
  for line in hlo_text.splitlines():
    match = COLLECTIVE.search(line)
    if not match:
      continue
    shapes = SHAPE.findall(match.group(1))
    if match.group(3):  # an async start's (operand, result) tuple
      shapes = shapes[-1:]
    total += sum(BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1])) for dtype, dims in shapes)
  return total


def memory_mb(compiled) -> dict[str, float]:
  """Per-device peak (arguments + output - aliased + temporaries) and the part of it that is not arguments."""
  numbers = aot.memory(compiled)
  return {"peak MB": numbers["peak_bytes_per_device"] / MB,
          "beyond arguments MB": (numbers["peak_bytes_per_device"] - numbers["argument_bytes"]) / MB}


def _replicated(mesh, shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, PartitionSpec()))


def dit_rows(latent: tuple[int, int, int], context_len: int) -> list[dict]:
  frames, height, width = latent
  tokens = frames * (height // 2) * (width // 2)
  rows = []
  for mode in context_parallel.MODES:
    for cp in (1, 2, 4, 8):
      config = wan21_t2v_1_3b()
      if mode == "ulysses" and config.num_attention_heads % cp:
        rows.append({"mode": mode, "context": cp, "note": f"{config.num_attention_heads} heads % {cp} != 0"})
        continue
      mesh = make_mesh(f"context={cp}", jax.devices()[:cp])
      row = {"mode": mode, "context": cp}
      for layers in (config.num_layers, 1):
        layer_config = dataclasses.replace(config, num_layers=layers)
        graphdef, state = nnx.split(nnx.eval_shape(lambda c=layer_config: WanDiT(c, rngs=nnx.Rngs(0))))
        with plan_lib.activate(mesh, context_parallel=mode) as execution_plan:
          forward = jax.jit(lambda state, x, t, c, graphdef=graphdef, p=execution_plan: nnx.merge(graphdef, state)(
              p, x, t, c))
          start = time.perf_counter()
          compiled = forward.lower(rules.abstract_state(state, mesh), _replicated(mesh, (1, *latent, 16)),
                                   _replicated(mesh, (1,)), _replicated(mesh, (1, context_len, 4096))).compile()
          row.setdefault("compile s", 0.0)
          row["compile s"] += time.perf_counter() - start
        if layers > 1:
          row.update(memory_mb(compiled))
        else:
          row["collective MB / layer"] = collective_bytes(compiled.as_text()) / MB
      dim_bytes = tokens * config.dim * 4
      row["expected MB / layer"] = {"allgather_kv": 2 * dim_bytes, "ulysses": 4 * dim_bytes / cp,
                                    "ring": 2 * (cp - 1) * dim_bytes / cp}[mode] / MB if cp > 1 else 0.0
      rows.append(row)
      print(row, flush=True)
  return rows


def vae_rows(clip: tuple[int, int, int]) -> list[dict]:
  rows = []
  graphdef, state = nnx.split(nnx.eval_shape(lambda: WanVAE(wan21_vae_config(), rngs=nnx.Rngs(0))))
  for cp in (1, 2, 4, 8):
    mesh = make_mesh(f"context={cp}", jax.devices()[:cp])
    with plan_lib.activate(mesh) as execution_plan:
      reconstruct = jax.jit(lambda state, video, p=execution_plan: (lambda vae: vae.decode(p, vae.encode(p, video)))(
          nnx.merge(graphdef, state)))
      start = time.perf_counter()
      video = jax.ShapeDtypeStruct((1, *clip, 3), jnp.float32, sharding=NamedSharding(
          mesh, rules.logical_to_mesh(("act_batch", None, "act_rows", None, None), rules.DEFAULT_RULES,
                                      (1, *clip, 3), mesh)))
      compiled = reconstruct.lower(rules.abstract_state(state, mesh), video).compile()
      rows.append({"context": cp, **memory_mb(compiled), "compile s": time.perf_counter() - start})
    print(rows[-1], flush=True)
  return rows


def train_row(clip: tuple[int, int, int], mesh_text: str) -> dict:
  """The stage-1 train step train.py runs (diffst_jax.aot builds it), one clip per device of the batch axes."""
  config = config_files.load(ROOT / "configs" / "wan21_1_3b.py")
  mesh, axis_rules = make_mesh(mesh_text), rules.rules_from_config(config.logical_axis_rules)
  start = time.perf_counter()
  compiled = aot.lower_train(config, mesh, axis_rules, 1, clip, None).compile()
  row = {"mesh": mesh_text, "clips": rules.axis_size_on(mesh, axis_rules, "act_batch"), **memory_mb(compiled),
         "compile s": time.perf_counter() - start}
  print(row, flush=True)
  return row


def print_dit_table(latent: tuple[int, int, int], context_len: int) -> None:
  print("DiT forward\n\n| mode | context | peak MB / device | beyond arguments MB | collective MB / layer | "
        "expected MB / layer | compile s |\n|---|---:|---:|---:|---:|---:|---:|")
  for row in dit_rows(latent, context_len):
    if "note" in row:
      print(f"| {row['mode']} | {row['context']} | {row['note']} | | | | |")
    else:
      print(f"| {row['mode']} | {row['context']} | {row['peak MB']:.0f} | {row['beyond arguments MB']:.0f} | "
            f"{row['collective MB / layer']:.1f} | {row['expected MB / layer']:.1f} | {row['compile s']:.0f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=33)
  parser.add_argument("--height", type=int, default=480)
  parser.add_argument("--width", type=int, default=832)
  parser.add_argument("--context-len", type=int, default=512)
  parser.add_argument("--skip-dit", action="store_true")
  parser.add_argument("--skip-vae", action="store_true")
  parser.add_argument("--skip-train", action="store_true")
  parser.add_argument("--train-meshes", nargs="+", default=["fsdp=8", "fsdp=2,context=4"])
  args = parser.parse_args()
  clip = (args.frames, args.height, args.width)
  latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
  print(f"clip {clip}, latent {latent}, jax {jax.__version__}, {jax.device_count()} simulated devices\n")
  if not args.skip_dit:
    print_dit_table(latent, args.context_len)
  if not args.skip_vae:
    print("\nVAE encode + decode\n\n| context | peak MB / device | beyond arguments MB | compile s |\n"
          "|---:|---:|---:|---:|")
    for row in vae_rows(clip):
      print(f"| {row['context']} | {row['peak MB']:.0f} | {row['beyond arguments MB']:.0f} | {row['compile s']:.0f} |")
  if not args.skip_train:
    rows = [train_row(clip, mesh_text) for mesh_text in args.train_meshes]
    print("\nTrain step, stage 1 (L_latent, AdamW), one clip per device of the batch axes\n\n| mesh | clips | "
          "peak MB / device | arguments MB | beyond arguments MB | compile s |\n|---|---:|---:|---:|---:|---:|")
    for row in rows:
      print(f"| {row['mesh']} | {row['clips']} | {row['peak MB']:.0f} | "
            f"{row['peak MB'] - row['beyond arguments MB']:.0f} | {row['beyond arguments MB']:.0f} | "
            f"{row['compile s']:.0f} |")


if __name__ == "__main__":
  cli.script(main)
