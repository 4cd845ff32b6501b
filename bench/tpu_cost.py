"""The TPU compiler's time estimate of the real programs (configs/wan21_1_3b.py), and their memory per chip: each row
is one `python -m diffst_jax.aot` run in its own process, compiled for a TPU slice from this machine (libtpu, no
TPU), its JSON kept in --out so that a rerun skips the rows it has (the train steps compile for one to two and a
half hours here), and the compiled program's text beside it (ROW.hlo.gz, ignored by git: too large to commit).

  python bench/tpu_cost.py --out runs/tpu_cost            # every row
  python bench/tpu_cost.py --out runs/tpu_cost --rows upscale_720p_v5e

Every time here is the compiler's estimate (`optimal_seconds` of libtpu's cost analysis, its -1 s per ConcatBitcast
and PrepareAsyncCall custom call added back: `aot.cost`), not a measurement, plus the attention at the chips' peak
(libtpu prices splash kernels at almost nothing: `aot.utilization`); it counts each while loop's body once, so the rows meant for the
estimate compile our loops unrolled (`--unroll-loops`), and MFU = model FLOPs (counted from the model's jaxpr,
ops/flops.py) / (chips x chip peak x estimated seconds) is given only for programs without loops. A second table
names, for the rows compiled since aot reports them, the operations with the largest shares of libtpu's
per-operation cycle estimates (hlo_cycles.py), by part and operation and by part and source line (the latter read
again from ROW.hlo.gz for a row compiled before aot reported it).
"""

import argparse
import gzip
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffst_jax import cli  # noqa: E402
CONFIG = str(ROOT / "configs" / "wan21_1_3b.py")
# name: (topology, mesh, program, stage, clip, unrolled). The v5e rows give memory per chip as a TPU VM runs the
# programs (loops rolled); the rows whose purpose is the time estimate compile our loops unrolled (aot --unroll-loops),
# since libtpu counts a loop's body once.
ROWS = {
    "upscale_720p_v5e": ("v5e:2x2", "context=4", "upscale", None, "33x720x1280", False),
    "train1_v5e": ("v5e:2x4", "fsdp=2,context=4", "train", 1, "33x480x832", False),
    "train2_v5e": ("v5e:2x4", "fsdp=2,context=4", "train", 2, "33x480x832", False),
    "upscale_480p_v5p": ("v5p:1x1x1", "data=1", "upscale", None, "33x480x832", True),
    "upscale_768x1408_v5p": ("v5p:1x1x1", "data=1", "upscale", None, "33x768x1408", True),
    "train1_v5p": ("v5p:2x2x2", "fsdp=2,context=4", "train", 1, "33x480x832", True),
    "train2_v5p": ("v5p:2x2x2", "fsdp=2,context=4", "train", 2, "33x480x832", True),
    "upscale_720p_v5e_unrolled": ("v5e:2x2", "context=4", "upscale", None, "33x720x1280", True),
    "train1_v5e_unrolled": ("v5e:2x4", "fsdp=2,context=4", "train", 1, "33x480x832", True),
    "train2_v5e_unrolled": ("v5e:2x4", "fsdp=2,context=4", "train", 2, "33x480x832", True),
}
GIB = 1 << 30


def command(name: str, out: pathlib.Path) -> list[str]:
  topology, mesh, program, stage, clip, unrolled = ROWS[name]
  args = ["--topology", topology, "--config", CONFIG, "--mesh", mesh, "--program", program, "--clip", clip,
          "--json", str(out / f"{name}.json"), "--hlo", str(out / f"{name}.hlo.gz"),
          *(["--unroll-loops"] if unrolled else [])]
  return [sys.executable, "-m", "diffst_jax.aot", *args, *(["--stage", str(stage)] if stage else [])]


def completed(name: str, path: pathlib.Path) -> dict:
  """The row's JSON, with what aot reports now and did not when the row was compiled written into it: its attention
  FLOPs (counted again from the model) and its cycle shares by source line (read from the program's text beside it,
  where that was kept)."""
  from diffst_jax import aot, config_files  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import rules  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.mesh import make_mesh  # pylint: disable=import-outside-toplevel

  result = json.loads(path.read_text())
  text_path = path.with_suffix(".hlo.gz")
  if "compiler_cycles_by_source_line" not in result and text_path.exists():
    with gzip.open(text_path, "rt") as file:
      result |= aot.cycle_shares(file.read())
    path.write_text(json.dumps(result, indent=2) + "\n")
  if "attention_flops" not in result:
    topology, mesh_text, program, stage, clip, _ = ROWS[name]
    config = config_files.load(CONFIG)
    mesh = make_mesh(mesh_text, aot.devices(topology))
    counted = aot.program_flops(config, mesh, rules.rules_from_config(config.logical_axis_rules), program, stage,
                                aot.parse_clip(clip), None, False)
    if counted["model_flops"] != result["model_flops"]:
      raise ValueError(f"{path}: its model FLOPs ({result['model_flops']}) are not this code's "
                       f"({counted['model_flops']}); compile the row again")
    result["attention_flops"] = counted["attention_flops"]
    path.write_text(json.dumps(result, indent=2) + "\n")
  return result


def row(name: str, result: dict) -> str:
  from diffst_jax import aot  # pylint: disable=import-outside-toplevel

  result = result | aot.utilization(result)
  seconds = result.get("estimated_seconds")
  fields = [name, result["topology"], result["mesh"], result["program"] + (f" {result['stage']}" if "stage" in result
                                                                          else ""),
            "x".join(map(str, result["clip"])), f"{result['peak_bytes_per_device'] / GIB:.2f}",
            f"{result['model_flops'] / 1e12:.1f}", f"{result['attention_flops'] / 1e12:.1f}",
            f"{result['compiler_flops'] * result['chips'] / 1e12:.1f}",
            (f"{seconds:.3f}" + (f" ({result['compiler_loops']} loops, bodies once)" if result.get("compiler_loops")
                                 else "")) if seconds else f"none (libtpu: {result['compiler_optimal_seconds']:.4g})",
            f"{result['estimated_seconds_with_attention']:.3f}" if "estimated_seconds_with_attention" in result
            else "", f"{result['roofline_seconds']:.3f}",
            f"{result['estimated_mfu']:.1%}" if "estimated_mfu" in result else "",
            f"{result['frames_per_second']:.1f}" if "frames_per_second" in result else "",
            f"{result['frames_per_second_per_312_tflops']:.1f}" if "frames_per_second_per_312_tflops" in result else "",
            f"{result['compile_seconds']:.0f}"]
  return "| " + " | ".join(fields) + " |"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder of the rows' JSON files")
  parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  names = args.rows.split(",")
  for name in names:
    if not (out / f"{name}.json").exists():
      print(" ".join(command(name, out)), flush=True)
      subprocess.run(command(name, out), cwd=ROOT, check=False, env=dict(os.environ, ALLOW_MULTIPLE_LIBTPU_LOAD="1"))
  print("| row | topology | mesh | program | clip | peak GiB per chip | model TFLOPs | of which attention | compiler "
        "TFLOPs (all chips) | compiler's estimate, s | with attention at peak, s | roofline s | estimated MFU | "
        "output frames/s | frames/s per 312 TFLOP/s | compile s |")
  print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  os.environ["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
  compiled = {name: completed(name, out / f"{name}.json") for name in names
              if (out / f"{name}.json").exists()}
  for name, result in compiled.items():
    print(row(name, result))
  print("\n| row | largest shares of libtpu's per-operation cycle estimates, by part/operation | by part: source "
        "line |\n|---|---|---|")
  for name, result in compiled.items():
    if result.get("compiler_cycles_by_operation"):
      print(f"| {name} | {largest(result['compiler_cycles_by_operation'])} | "
            f"{largest(result.get('compiler_cycles_by_source_line', {}))} |")


def largest(shares: dict[str, float], count: int = 6) -> str:
  return ", ".join(f"{key} {share:.1%}" for key, share in list(shares.items())[:count] if key != "rest")


if __name__ == "__main__":
  cli.script(main)
