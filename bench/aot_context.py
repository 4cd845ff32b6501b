"""How per-chip memory falls as one clip is spread over more chips (context = 1, 2, 4, 8), read from the TPU
compiler: each row is one `python -m diffst_jax.aot` run, in its own process, for a TPU slice compiled from this
machine (no TPU needed; the `tpu` extra brings libtpu).

  python bench/aot_context.py --program upscale --topology v5p:2x2x2
  python bench/aot_context.py --program train --stage 1 --topology v5p:2x2x2

Mesh per row, over all the slice's chips: upscale (one clip) "data=D/N,context=N", so each chip holds 1/N of the
clip; train "fsdp=D/N,context=N" with one clip per fsdp group (the aot default), again 1/N of a clip per chip.
Memory beyond arguments should fall as 1/N; the table gives it relative to the N = 1 row times 1/N, two ways: as
allocated (memory_analysis: outputs - aliased + temporaries, the region the allocator lays buffers out in, which on a
big chip it does not pack) and as live at the peak of the compiler's schedule (its live-range report, from the
--xla_dump_to dump this script asks for): what the program holds at once. v5p's 95 GiB chips hold the N = 1 rows that a v5e chip (16 GiB) does not.

The default clip, 33x512x896, is one whose rows divide over 8 devices at every resolution of the VAE (512, 256,
128 and 64 rows): where a level's rows do not divide (720 rows' 90 at the coarsest, over 8) the VAE keeps that level
whole on every device, which no context size can divide.

With --topologies (one slice per row, e.g. v5p:1x1x1,v5p:2x1x1,v5p:2x2x1,v5p:2x2x2) only the context changes: each
row's mesh is "context=N" over a slice of N chips, one clip, and everything sharded over context (the clip, and the
parameters, gradient and optimizer state, which the rules put over fsdp and context) is spread over the N chips.
Over one fixed slice, the default, the parameters are over all its chips in every row, so their gradient and the
other parameter-sized buffers are the same in every row and only the clip's share falls as 1/N.
"""

import argparse
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffst_jax import cli  # noqa: E402  pylint: disable=wrong-import-position
GIB = 1 << 30
TOLERANCE = 1.15  # issue 25: within 15% of 1/N


def compile_row(args, topology: str, mesh: str, out: pathlib.Path, hbm_limit: float | None = None) -> dict | None:
  """aot's numbers for one row; None where the program does not fit `hbm_limit` GiB."""
  command = [sys.executable, "-m", "diffst_jax.aot", "--topology", topology, "--config", args.config, "--mesh",
             mesh, "--program", args.program, "--clip", args.clip, "--json", str(out)]
  if args.program == "train":
    command += ["--stage", str(args.stage)]
  if hbm_limit is not None:
    command += ["--hbm-limit", f"{hbm_limit:.3f}"]
  dump = out.with_name(f"{out.stem}_dump")
  env = {**os.environ, "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
         "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump} --xla_dump_hlo_as_text "
                      "--xla_dump_hlo_module_re=.*(forward|step).*".strip()}
  done = subprocess.run(command, cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)
  if done.returncode == 3:  # aot: does not fit
    return None
  done.check_returncode()
  return {**json.loads(out.read_text()), "live_peak_bytes": live_peak(dump)}


def live_peak(dump: pathlib.Path) -> int:
  """The bytes the compiler's schedule holds live at once at its peak (its live-range report), arguments included:
  what the program needs, before the allocator's packing of buffers into memory (its temp_bytes)."""
  (report,) = dump.glob("*after_optimizations-live-range.txt")
  match = re.search(r"Stack trace breakdown for peak usage: ([\d ]+) bytes", report.read_text())
  shutil.rmtree(dump)
  return int(match.group(1).replace(" ", ""))


def beyond_arguments(result: dict) -> int:
  return result["peak_bytes_per_device"] - result["argument_bytes"]


def live_beyond_arguments(result: dict) -> int:
  return result["live_peak_bytes"] - result["argument_bytes"]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--program", choices=("train", "upscale"), required=True)
  parser.add_argument("--topology", default="v5p:2x2x2", help="a TPU slice of 8 chips (v5p:2x2x2, v5e:2x4, ...)")
  parser.add_argument("--config", default="configs/wan21_1_3b.py")
  parser.add_argument("--clip", default="33x512x896", help="HR output frames x height x width")
  parser.add_argument("--stage", type=int, default=1)
  parser.add_argument("--context", default="1,2,4,8", help="context sizes, comma-separated")
  parser.add_argument("--chips", type=int, default=8, help="chips of the slice")
  parser.add_argument("--topologies", help="one slice per row, comma-separated, each compiled with context = its "
                      "chips (e.g. v5p:1x1x1,v5p:2x1x1,v5p:2x2x1,v5p:2x2x2); replaces --topology, --context, --chips")
  parser.add_argument("--fit", action="store_true", help="a row over the target (beyond arguments more than "
                      f"{TOLERANCE} x 1/N of the first row's) is compiled again for chips of its arguments plus that "
                      "share (aot --hbm-limit): does the compiler fit it there, when it cannot spend memory on speed")
  parser.add_argument("--json", help="write the rows to this file")
  args = parser.parse_args()
  batch_axis = "data" if args.program == "upscale" else "fsdp"
  if args.topologies:
    runs = [(topology, chips, f"context={chips}") for topology in args.topologies.split(",")
            for chips in [math.prod(int(size) for size in topology.partition(":")[2].split("x"))]]
  else:
    runs = [(args.topology, n, f"{batch_axis}={args.chips // n},context={n}") for n in map(int, args.context.split(","))]
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for topology, n, mesh in runs:
      result = compile_row(args, topology, mesh, pathlib.Path(scratch) / f"{n}.json")
      row = {"context": n, "mesh": mesh, **result, "beyond_argument_bytes": beyond_arguments(result),
             "live_beyond_argument_bytes": live_beyond_arguments(result)}
      if rows and args.fit:
        share = TOLERANCE * rows[0]["beyond_argument_bytes"] * rows[0]["context"] / n
        if row["beyond_argument_bytes"] > share:
          limit = (row["argument_bytes"] + share) / GIB
          limited = compile_row(args, topology, mesh, pathlib.Path(scratch) / f"{n}_limited.json", limit)
          row["limited"] = {"hbm_limit_gib": limit, "fits": limited is not None,
                            **({"beyond_argument_bytes": beyond_arguments(limited), **limited} if limited else {})}
      rows.append(row)
      print(f"context={n} done: {row['beyond_argument_bytes'] / GIB:.2f} GiB beyond arguments", file=sys.stderr,
            flush=True)
  base = rows[0]["beyond_argument_bytes"] * rows[0]["context"]
  live_base = rows[0]["live_beyond_argument_bytes"] * rows[0]["context"]
  print(f"{args.program} {args.clip} on {args.topologies or args.topology} ({args.config}"
        f"{f', stage {args.stage}' if args.program == 'train' else ''})\n")
  print("| context N | slice | mesh | arguments GiB | allocated beyond arguments GiB | / (N=1 row / N) | live at peak "
        "beyond arguments GiB | / (N=1 row / N) | compile s | under a limit of arguments + 1.15 x (N=1 row / N) |")
  print("|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
  for row in rows:
    limited = row.get("limited")
    under_limit = ("" if not limited else
                   f"{limited['hbm_limit_gib']:.2f} GiB: does not fit" if not limited["fits"] else
                   f"{limited['hbm_limit_gib']:.2f} GiB: fits, {limited['beyond_argument_bytes'] / GIB:.2f} beyond "
                   f"({limited['beyond_argument_bytes'] * row['context'] / base:.2f})")
    print(f"| {row['context']} | {row['topology']} | {row['mesh']} | {row['argument_bytes'] / GIB:.2f} | "
          f"{row['beyond_argument_bytes'] / GIB:.2f} | {row['beyond_argument_bytes'] * row['context'] / base:.2f} | "
          f"{row['live_beyond_argument_bytes'] / GIB:.2f} | "
          f"{row['live_beyond_argument_bytes'] * row['context'] / live_base:.2f} | {row['compile_seconds']:.0f} | "
          f"{under_limit} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
  cli.script(main)
