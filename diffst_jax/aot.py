"""Ahead-of-time compilation of the real programs for an accelerator slice, without the accelerator: the train step
train.py runs and the upscale program infer.py runs, built abstractly (no weights are made or read), lowered with
the same shardings and compiled by the target's own compiler, which reports the memory each device needs.

  python -m diffst_jax.aot --topology v5e:2x4 --config configs/wan21_1_3b.py --mesh fsdp=2,context=4 \\
      --program train --stage 2 --clip 33x480x832 --json OUT.json
  python -m diffst_jax.aot --topology v5e:2x2 --config configs/wan21_1_3b.py --mesh context=4 \\
      --program upscale --clip 33x720x1280 --json OUT.json

--topology: a TPU slice as libtpu names it (v5e:2x4, v4:2x2x1, v5p:2x2x1, ...; the `tpu` extra brings libtpu), or
cpu:N for N simulated CPU devices. --clip: the HR output's frames x height x width. The train program takes one clip
per device of the batch axes (data x fsdp) unless --batch says otherwise. Memory, per device, from the compiler:
peak = arguments + outputs - aliased (donated) + temporaries.
"""

import argparse
import collections
import gzip
import json
import math
import os
import pathlib
import re
import sys
import time

from diffst_jax import cli, hlo_cycles
from diffst_jax.parallel import backend

MEMORY_FIELDS = ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "generated_code_bytes")
GIB = 1 << 30
# Peak dense bfloat16 FLOP/s of one chip, as Google's Cloud TPU pages give them.
CHIP_PEAK_FLOPS = {"v4": 275e12, "v5e": 197e12, "v5p": 459e12, "v6e": 918e12}
CHIP_MEMORY_BANDWIDTH = {"v4": 1228e9, "v5e": 819e9, "v5p": 2765e9, "v6e": 1640e9}  # HBM bytes/s of one chip
REFERENCE_PEAK_FLOPS = 312e12  # one A100's dense bf16 peak, what other upscalers report their frame rates on
# Custom calls libtpu's cost analysis prices at -1 s each (`cost`): its concatenations by bitcast, and the start and
# end of each asynchronous call it prepares (on v5p, scatter-adds offloaded to the SparseCores).
UNPRICED_CUSTOM_CALLS = ("ConcatBitcast", "PrepareAsyncCallStart", "PrepareAsyncCallDone")
# `cost` counts every kind of custom call, so that one more kind libtpu leaves unpriced can be found.
_CUSTOM_CALL_TARGET = re.compile(r'custom_call_target="([^"]+)"')
# With --unroll-loops, XLA's own loops go too: the windowed einsums, which interleave a matrix product sharded over
# fsdp with its all-gather or reduce-scatter step by step in a loop. Without them the collective runs whole beside
# the product (the estimate can only be longer for it).
NO_LOOP_COMPILER_OPTIONS = {"xla_tpu_enable_windowed_einsum_for_all_gather": False,
                            "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False}


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m diffst_jax.aot", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--topology", required=True, help="v5e:2x4, v4:2x2x1, ... (TPU) or cpu:N")
  parser.add_argument("--config", required=True, help="FILE[:PRESET], an experiment config (configs/*.py)")
  parser.add_argument("--mesh", default="", help="e.g. fsdp=2,context=4 over all the topology's devices (default: "
                      "the config's mesh, else data over all)")
  parser.add_argument("--program", choices=("train", "upscale"), required=True)
  parser.add_argument("--stage", type=int, default=1, help="train: the stage, 1 for the config's first")
  parser.add_argument("--clip", required=True, help="FRAMESxHEIGHTxWIDTH of the HR output, e.g. 33x480x832")
  parser.add_argument("--batch", type=int, help="train: clips per step (default: one per device of data x fsdp)")
  parser.add_argument("--precision", choices=("config", "bf16"), default="config",
                      help="upscale: the config's compute dtypes, or bf16 as infer.py --precision bf16")
  parser.add_argument("--hbm-limit", type=float, metavar="GIB", help="TPU: compile as for chips of this much memory "
                      "(libtpu's xla_tpu_max_hbm_size_mib). Given room, the compiler spends memory on speed, so a "
                      "program's peak on a 95 GiB chip says little about what it needs; a program that cannot fit "
                      "fails to compile")
  parser.add_argument("--unroll-loops", action="store_true", help="compile our loops (the DiT's blocks, the VAE's "
                      "time chunks, the perceptual loss's frames) as straight-line code, and XLA's windowed einsums "
                      "not at all: libtpu's time estimate counts a loop's body once, so only such a program's "
                      "estimate is its whole time (a longer compile)")
  parser.add_argument("--json", help="write the numbers to this file")
  parser.add_argument("--hlo", help="also write the compiled program's text, gzip-compressed, to this file (hundreds "
                      "of MB for the real programs unrolled: keep it out of git), so that it can be analysed again "
                      "without a compile")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  return parser.parse_args(argv)


def parse_clip(text: str) -> tuple[int, int, int]:
  parts = text.lower().split("x")
  if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
    raise ValueError(f"--clip {text}: expected FRAMESxHEIGHTxWIDTH of positive integers, e.g. 33x480x832")
  return tuple(int(part) for part in parts)


def devices(topology: str) -> list:
  """The devices of `topology`: a TPU slice's (abstract: compile only) or cpu:N simulated CPU devices."""
  import jax  # pylint: disable=import-outside-toplevel

  if topology.startswith("cpu"):
    return jax.devices("cpu")[:backend.cpu_device_count(topology)]
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    bounds = _host_bounds(topology)
    options = {"chips_per_host_bounds": bounds} if bounds else {}
    return list(topologies.get_topology_desc(topology, "tpu", **options).devices)
  except Exception as e:  # pylint: disable=broad-except  # libtpu missing, or a name it does not know
    detail = cli.first_line(e)
    raise ValueError(f"--topology {topology}: not a TPU slice libtpu can compile for ({detail}); e.g. v5e:2x4, "
                     "v4:2x2x1, v5p:2x2x1, or cpu:8 (libtpu comes with pip install -e \".[tpu]\")") from e


def _host_bounds(topology: str) -> tuple[int, ...] | None:
  """A slice of fewer chips than one host holds (v5p:1x1x1, v5e:2x1, ...) is that host's whole shape; libtpu's
  default host bounds (2x2x1) refuse it."""
  shape = topology.partition(":")[2].split("x")
  if not all(size.isdigit() for size in shape) or math.prod(int(size) for size in shape) >= 4:
    return None
  return tuple(int(size) for size in shape) + (1,) * (3 - len(shape))


def _replicated(shape, dtype, mesh):
  import jax  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel

  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=NamedSharding(mesh, PartitionSpec()))


def lower_train(config, mesh, axis_rules, stage: int, clip: tuple[int, int, int], batch: int | None,
                unroll_loops: bool = False):
  """The lowered train step of `stage` on `mesh` for a batch of HR clips `clip` (and their LR inputs); with
  `unroll_loops`, our loops as straight-line code (ExecutionPlan.unroll_loops)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from diffst_jax.parallel import plan as plan_lib  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import rules  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import loop, perceptual, tasks  # pylint: disable=import-outside-toplevel

  program = loop.make_program(config, tasks.get(config.task).abstract(config), plan_lib.ExecutionPlan(
      mesh, axis_rules, **loop.run_choices(config), unroll_loops=unroll_loops))
  names = sorted(config.stages)
  if not 1 <= stage <= len(names):
    raise ValueError(f"--stage {stage}: the config has {len(names)} stages ({', '.join(names)}); give 1 to "
                     f"{len(names)}")
  weights = program.stages[stage - 1]["loss"]
  shapes = _clip_shapes(config, clip, batch or rules.axis_size_on(mesh, axis_rules, "act_batch"))
  inputs = {name: jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=rules.batch_sharding(shape, mesh, axis_rules))
            for name, shape in shapes.items()}
  perceptual_params = None
  if weights.get("perceptual"):
    perceptual_params = jax.tree.map(lambda a: _replicated(a.shape, a.dtype, mesh), perceptual.load(config.perceptual))
  state, frozen = program.abstract_state()
  with jax.set_mesh(mesh):
    return program.step(program.stages[stage - 1]).lower(state, frozen, perceptual_params, inputs)


def _without_remat(config):
  """`config` with the DiT's and the VAE's rematerialization off: the model's own operations, each counted once."""
  config = config.copy_and_resolve_references()
  config.model.dit.remat_policy, config.model.vae.remat = "none", False
  return config


def _counting_plan():
  """One device, XLA's attention and convolutions: every matrix product a plain one to count."""
  from diffst_jax.parallel import plan as plan_lib  # pylint: disable=import-outside-toplevel

  return plan_lib.ExecutionPlan(platform="cpu", attention="xla", conv_implementation="xla")


def model_flops(jaxpr) -> dict:
  """The model FLOPs of a traced program (ops/flops.py): in all, by jit-compiled function (the VAE's `_encode`,
  `_decode`) and in attention (`attention_flops`: what a TPU runs in splash kernels, unpriced by its compiler)."""
  from diffst_jax.ops import attention, flops  # pylint: disable=import-outside-toplevel

  parts = flops.by_function(jaxpr)
  return {"model_flops": sum(parts.values()), "model_flops_by_function": {k: v for k, v in parts.items() if v},
          "attention_flops": flops.in_scope(jaxpr, attention.SCOPE)}


def train_flops(config, stage: int, clip: tuple[int, int, int], clips: int) -> dict:
  """`model_flops` of one train step of `stage` (forward and backward of its losses over `clips` HR clips `clip`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax.train import perceptual, tasks  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import step as train_step  # pylint: disable=import-outside-toplevel

  config = _without_remat(config)
  task = tasks.get(config.task)
  graphdef, trainable, frozen = nnx.split(task.abstract(config), task.trainable(tasks.trains_flow(config)), ...)
  weights = config.stages[sorted(config.stages)[stage - 1]].loss.to_dict()
  loss = train_step.make_loss_fn(task, graphdef, weights, config.perceptual, _counting_plan(), config.pixel_range)
  perceptual_params = None
  if weights.get("perceptual"):
    perceptual_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                     perceptual.load(config.perceptual))
  batch = {name: jax.ShapeDtypeStruct(shape, jnp.uint8) for name, shape in _clip_shapes(config, clip, clips).items()}
  return model_flops(jax.make_jaxpr(jax.value_and_grad(loss, has_aux=True))(trainable, frozen, perceptual_params,
                                                                            batch).jaxpr)


def _clip_shapes(config, clip: tuple[int, int, int], clips: int) -> dict[str, tuple[int, ...]]:
  from diffst_jax.train import tasks  # pylint: disable=import-outside-toplevel

  frames, height, width = clip
  s_t, s_x = config.model.cfca.time_scale, config.model.space_scale
  shapes = {"hr": (clips, frames, height, width, 3)}
  if tasks.get(config.task).uses_lr:
    shapes["lr"] = (clips, (frames - 1) // s_t + 1, height // s_x, width // s_x, 3)
  return shapes


def _upscale_program(config, clip: tuple[int, int, int], bf16: bool, row_devices: int):
  """(graphdef, abstract state, padded LR input shape) of the program infer.py runs on one chunk whose output is the
  HR clip `clip`, its VAE's rows over `row_devices`."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel
  from diffst_jax.models.abstract import abstract  # pylint: disable=import-outside-toplevel

  model_config = diffst.DiffSTConfig.from_dict(config.model.to_dict())
  frames, height, width = clip
  s_t, s_x = model_config.time_scale, model_config.space_scale
  if (frames - 1) % s_t or height % s_x or width % s_x:
    raise ValueError(f"--clip {frames}x{height}x{width}: an output clip has s_t (N-1) + 1 frames and sizes "
                     f"divisible by s_x (s_t = {s_t}, s_x = {s_x})")
  lr = ((frames - 1) // s_t + 1, height // s_x, width // s_x)
  padding = diffst.padding_for(model_config, *lr, row_devices)
  model = inference.in_precision(abstract(lambda rngs: diffst.DiffST(model_config, rngs=rngs)),
                                 "bf16" if bf16 else "fp32")
  graphdef, state = nnx.split(model)
  return graphdef, state, (1, *(n + p for n, p in zip(lr, padding)), 3)


def lower_upscale(config, mesh, axis_rules, clip: tuple[int, int, int], bf16: bool, unroll_loops: bool = False):
  """The lowered program infer.py runs on one chunk whose output is the HR clip `clip`, the model on `mesh`; with
  `unroll_loops`, our loops as straight-line code (ExecutionPlan.unroll_loops)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax import inference  # pylint: disable=import-outside-toplevel
  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import rules  # pylint: disable=import-outside-toplevel

  graphdef, state, shape = _upscale_program(config, clip, bf16, rules.axis_size_on(
      mesh, rules.for_inference(axis_rules), "act_rows"))
  model, activate = inference.on_mesh(nnx.merge(graphdef, state), mesh, axis_rules, unroll_loops=unroll_loops)
  with activate() as execution_plan:
    return diffst.forward.lower(graphdef, execution_plan, nnx.state(model), _replicated(shape, jnp.float32, mesh))


def upscale_flops(config, clip: tuple[int, int, int], bf16: bool, row_devices: int) -> dict:
  """`model_flops` of the upscale program (`lower_upscale`, its VAE's rows over `row_devices`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel

  graphdef, state, shape = _upscale_program(config, clip, bf16, row_devices)
  return model_flops(jax.make_jaxpr(lambda state, x: diffst.forward(graphdef, _counting_plan(), state, x))(
      state, jax.ShapeDtypeStruct(shape, jnp.float32)).jaxpr)


def cost(compiled, text: str | None = None) -> dict[str, float]:
  """The compiler's cost analysis of a compiled program: its FLOPs and bytes accessed and, from libtpu, its estimate
  of the program's time on the chip (`optimal_seconds`).

  libtpu 0.0.42.1 prices each of its own ConcatBitcast and PrepareAsyncCall custom calls at -1 s (a tiny VAE
  decoder's gradient with 50 ConcatBitcasts: -49.996 s; docs/BENCHMARKS.md), so the estimate adds them back. It
  also counts the body of each while loop once, whatever its trip count (the decoder of 2 and of 9 latent frames:
  the same FLOPs and time), so for a program with loops (the scanned DiT blocks, the VAE's time chunks) the estimate
  falls far short of its time: `compiler_loops` says how many there are, and `utilization` derives nothing from
  such an estimate. `text`: the program's `as_text()`, where the caller has it already."""
  analysis = compiled.cost_analysis()
  analysis = (analysis[0] if isinstance(analysis, (list, tuple)) else analysis) or {}
  text = compiled.as_text() if text is None else text
  custom_calls = collections.Counter(_CUSTOM_CALL_TARGET.findall(text))
  unpriced = sum(custom_calls[target] for target in UNPRICED_CUSTOM_CALLS)
  seconds = analysis.get("optimal_seconds")
  estimate = None if seconds is None else seconds + unpriced
  return {"compiler_flops": analysis.get("flops"), "compiler_bytes_accessed": analysis.get("bytes accessed"),
          "compiler_optimal_seconds": seconds, "compiler_unpriced_calls": unpriced,
          "compiler_loops": text.count(" while("),
          "estimated_seconds": estimate if estimate is not None and estimate > 0 else None,
          "compiler_custom_calls": dict(custom_calls.most_common()),
          **cycle_shares(text)}


def cycle_shares(text: str) -> dict[str, dict[str, float]]:
  """libtpu's per-operation cycle estimates of a compiled program (its text), by part and operation and by part and
  source line (hlo_cycles.py): what dominates its time estimate."""
  return {"compiler_cycles_by_operation": hlo_cycles.shares(text, program_parts()),
          "compiler_cycles_by_source_line": hlo_cycles.source_line_shares(text, program_parts(),
                                                                          __name__.split(".")[0])}


def program_parts() -> tuple[str, ...]:
  """The names our programs' parts trace under (`hlo_cycles.label`): the VAE's jit-compiled encoder and decoder, the
  DiT, CFCA, VRG, every attention and the perceptual loss."""
  from diffst_jax.models import cfca, dit, vrg  # pylint: disable=import-outside-toplevel
  from diffst_jax.ops import attention  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import perceptual  # pylint: disable=import-outside-toplevel

  return ("_encode", "_decode", dit.SCOPE, cfca.SCOPE, vrg.SCOPE, attention.SCOPE, perceptual.SCOPE)


def utilization(result: dict) -> dict[str, float]:
  """The roofline's lower bound on the program's time (the model's FLOPs at the chips' peak, or the compiler's bytes
  accessed per chip at the chip's memory bandwidth, whichever takes longer) and the time of its attention at the
  chips' peak: libtpu prices a splash kernel at almost nothing (no FLOPs; 0.05 ms for a 103 GFLOP attention that
  takes at least 0.22 ms on a v5p chip), so the estimate below adds it. With the compiler's own time estimate of a
  program without loops (`cost`), plus that attention time: estimated MFU (model FLOPs / (chips x chip peak x
  estimated seconds)) and, for the upscale program, output frames per second, also per 312 TFLOP/s of chip peak (one
  A100's). Empty for a chip of unknown peak."""
  seconds, chip = result.get("estimated_seconds"), result["topology"].partition(":")[0]
  if chip not in CHIP_PEAK_FLOPS:
    return {}
  peak = result["chips"] * CHIP_PEAK_FLOPS[chip]
  roofline = max(result["model_flops"] / peak, (result["compiler_bytes_accessed"] or 0) / CHIP_MEMORY_BANDWIDTH[chip])
  numbers = {"peak_flops": peak, "roofline_seconds": roofline}
  if "attention_flops" not in result:  # compiled before attention was counted
    return numbers
  numbers["attention_seconds_at_peak"] = result["attention_flops"] / peak
  if not seconds or result.get("compiler_loops"):
    return numbers
  seconds += numbers["attention_seconds_at_peak"]
  numbers.update(estimated_seconds_with_attention=seconds, estimated_mfu=result["model_flops"] / (peak * seconds))
  if result["program"] == "upscale":
    fps = result["clip"][0] / seconds
    numbers.update(frames_per_second=fps, frames_per_second_per_312_tflops=fps * REFERENCE_PEAK_FLOPS / peak)
  return numbers


def memory(compiled) -> dict[str, int]:
  analysis = compiled.memory_analysis()
  numbers = {"argument_bytes": analysis.argument_size_in_bytes, "output_bytes": analysis.output_size_in_bytes,
             "alias_bytes": analysis.alias_size_in_bytes, "temp_bytes": analysis.temp_size_in_bytes,
             "generated_code_bytes": analysis.generated_code_size_in_bytes}
  numbers["peak_bytes_per_device"] = backend.peak_bytes(compiled)
  return numbers


def compile_program(args) -> dict:
  from diffst_jax.parallel import rules  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.mesh import make_mesh  # pylint: disable=import-outside-toplevel
  from diffst_jax import config_files  # pylint: disable=import-outside-toplevel

  clip = parse_clip(args.clip)
  config_file, _, preset = args.config.partition(":")
  config = config_files.load(config_file, preset or None)
  mesh_text = args.mesh or config.mesh or "data=-1"
  target = devices(args.topology)
  mesh = make_mesh(mesh_text, target)
  axis_rules = rules.rules_from_config(config.logical_axis_rules)
  start = time.perf_counter()
  if args.program == "train":
    lowered = lower_train(config, mesh, axis_rules, args.stage, clip, args.batch, args.unroll_loops)
  else:
    lowered = lower_upscale(config, mesh, axis_rules, clip, args.precision == "bf16", args.unroll_loops)
  options = NO_LOOP_COMPILER_OPTIONS if args.unroll_loops and target[0].platform == "tpu" else {}
  compiled = lowered.compile(compiler_options=options)
  text = compiled.as_text()  # hundreds of MB for the real programs unrolled: made once
  if args.hlo:
    with gzip.open(args.hlo, "wt") as file:
      file.write(text)
  result = {"topology": args.topology, "platform": target[0].platform, "chips": len(target), "config": args.config,
            "mesh": mesh_text, "program": args.program, **({"stage": args.stage} if args.program == "train" else {}),
            "clip": list(clip), "precision": args.precision, "hbm_limit_gib": args.hbm_limit,
            "unroll_loops": args.unroll_loops, "compiler_options": options, **memory(compiled),
            "compile_seconds": time.perf_counter() - start, **cost(compiled, text)}
  result.update(program_flops(config, mesh, axis_rules, args.program, args.stage, clip, args.batch,
                               args.precision == "bf16"))
  return result | utilization(result)


def program_flops(config, mesh, axis_rules, program: str, stage: int, clip: tuple[int, int, int], batch: int | None,
                  bf16: bool) -> dict:
  """`model_flops` of the program `compile_program` compiles (train or upscale) on `mesh`."""
  from diffst_jax.parallel import rules  # pylint: disable=import-outside-toplevel

  if program == "train":
    return train_flops(config, stage, clip, batch or rules.axis_size_on(mesh, axis_rules, "act_batch"))
  return upscale_flops(config, clip, bf16, rules.axis_size_on(mesh, rules.for_inference(axis_rules), "act_rows"))


def table(result: dict) -> str:
  rows = [("peak per device", result["peak_bytes_per_device"])] + [
      (field.removesuffix("_bytes").replace("_", " "), result[field]) for field in MEMORY_FIELDS]
  lines = [f"{result['program']} on {result['topology']} ({result['mesh']}), clip {'x'.join(map(str, result['clip']))}"
           f", compiled in {result['compile_seconds']:.1f} s", "", "| memory | GiB |", "|---|---:|"]
  lines += [f"| {name} | {value / GIB:.2f} |" for name, value in rows]
  lines += ["", "| cost | value |", "|---|---:|", f"| model FLOPs (counted from the model) | {result['model_flops']:.4g} |"]
  lines += [f"| model FLOPs in {name} | {value:.4g} |" for name, value in result["model_flops_by_function"].items()]
  estimates = (("model FLOPs in attention", "attention_flops", "{:.4g}"),
               ("compiler FLOPs (per chip)", "compiler_flops", "{:.4g}"),
               ("compiler bytes accessed (per chip)", "compiler_bytes_accessed", "{:.4g}"),
               ("estimated seconds (compiler estimate)", "estimated_seconds", "{:.4g}"),
               ("attention at the chips' peak, s (splash: unpriced by the compiler)", "attention_seconds_at_peak",
                "{:.4g}"),
               ("estimated seconds with attention at peak", "estimated_seconds_with_attention", "{:.4g}"),
               ("while loops (their bodies counted once in the estimate)", "compiler_loops", "{:d}"),
               ("roofline lower bound on the time, s", "roofline_seconds", "{:.4g}"),
               ("estimated MFU (compiler estimate, attention at peak)", "estimated_mfu", "{:.1%}"),
               ("output frames per second (compiler estimate)", "frames_per_second", "{:.2f}"),
               ("output frames per second per 312 TFLOP/s (compiler estimate)", "frames_per_second_per_312_tflops",
                "{:.2f}"))
  lines += [f"| {name} | {form.format(result[key])} |" for name, key, form in estimates if result.get(key) is not None]
  for key, heading in (("compiler_cycles_by_operation", "part/operation"),
                       ("compiler_cycles_by_source_line", "part: source line")):
    if result.get(key):
      lines += ["", f"| {heading} (the compiler's per-operation cycle estimates) | share |", "|---|---:|"]
      lines += [f"| {name} | {share:.1%} |" for name, share in result[key].items()]
  return "\n".join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)

  def work() -> int:
    if args.topology.startswith("cpu"):
      os.environ["XLA_FLAGS"] = backend.with_cpu_devices(os.environ.get("XLA_FLAGS", ""),
                                                         backend.cpu_device_count(args.topology))
    if args.hbm_limit is not None:
      if args.topology.startswith("cpu") or args.hbm_limit <= 0:
        raise ValueError(f"--hbm-limit {args.hbm_limit}: a positive size in GiB, for a TPU --topology only")
      os.environ["LIBTPU_INIT_ARGS"] = (f"{os.environ.get('LIBTPU_INIT_ARGS', '')} "
                                        f"--xla_tpu_max_hbm_size_mib={int(args.hbm_limit * 1024)}").strip()
    try:
      result = compile_program(args)
    except Exception as error:  # pylint: disable=broad-except  # XlaRuntimeError, whose module moves between versions
      if args.debug or "RESOURCE_EXHAUSTED" not in str(error):
        raise
      print(f"diffst_jax.aot: does not fit: {cli.first_line(error)[:300]}", file=sys.stderr)
      return cli.PART_FAILED
    print(table(result))
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return cli.DONE

  return cli.run("diffst_jax.aot", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
