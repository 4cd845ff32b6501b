"""Ahead-of-time compilation for a TPU slice on this CPU machine (libtpu's compiler, no TPU), seen as the TPU VM sees
it (`jax.default_backend()` is "tpu" there): the real recipe's programs at tiny widths (configs/wan21_1_3b.py:tiny)
lower to the same program whichever backend the host has, on meshes over each axis and a mix, compile, and report
memory per device, the compiler's cost analysis and the model's FLOPs; bad topologies and meshes are one line."""

import dataclasses
import functools
import gzip
import json
import os
import subprocess
import sys

import jax
import pytest

from diffst_jax import aot
from diffst_jax.parallel import rules
from diffst_jax.parallel.mesh import make_mesh
from tests.conftest import ROOT, error_line, load_config

# libtpu takes a lock file per process unless told that several processes (the suite's workers) may load it.
ENV = dict(os.environ, ALLOW_MULTIPLE_LIBTPU_LOAD="1")


RECIPE = f"{ROOT / 'configs' / 'wan21_1_3b.py'}:tiny"
# A TPU VM's view: JAX's default backend is the TPU's (the module and its callers then see it).
AS_ON_A_TPU_VM = "import sys, jax; jax.default_backend = lambda: 'tpu'; from diffst_jax import aot; sys.exit(aot.main())"


def _aot(*args, tpu_view=False):
  command = ["-c", AS_ON_A_TPU_VM, *map(str, args)] if tpu_view else ["-m", "diffst_jax.aot", *map(str, args)]
  return subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT, env=ENV, check=False)


# Each axis of the mesh alone, and a mix; (topology, mesh)
TPU_MESHES = [("v5e:2x2", "data=4"), ("v5e:2x2", "fsdp=4"), ("v5e:2x2", "context=4"), ("v5e:2x1", "tensor=2"),
              ("v5e:2x2", "fsdp=2,context=2")]


def _lowered(program: str, topology: str, mesh_text: str, unroll_loops: bool = False):
  config = load_config("wan21_1_3b", "tiny")
  mesh, axis_rules = make_mesh(mesh_text, aot.devices(topology)), rules.rules_from_config(config.logical_axis_rules)
  if program == "upscale":
    return aot.lower_upscale(config, mesh, axis_rules, (9, 64, 64), bf16=False, unroll_loops=unroll_loops)
  return aot.lower_train(config, mesh, axis_rules, int(program[-1]), (5, 32, 32), None, unroll_loops)


@functools.cache
def _lowered_text(program: str, topology: str, mesh_text: str, tpu_view: bool, unroll_loops: bool = False) -> str:
  """`_lowered(...).as_text()`, lowered on this CPU machine or, with `tpu_view`, as a TPU VM sees it (its default
  backend "tpu", for this lowering only); each once per worker process, for the tests that look at the same program."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if tpu_view:
      patch.setattr(jax, "default_backend", lambda: "tpu")
    return _lowered(program, topology, mesh_text, unroll_loops).as_text()


PROGRAMS = ["train stage 1", "train stage 2", "upscale"]


@pytest.mark.parametrize("program", ["train stage 2", "upscale"])  # stage 1's model and optimizer are stage 2's
@pytest.mark.parametrize("topology, mesh_text", TPU_MESHES[:-1])
def test_programs_lower_as_on_a_tpu_vm_on_each_axis(program, topology, mesh_text):
  """As a TPU VM (default backend "tpu") sees it, each program lowers with splash, TPU's attention, inside shard_map
  (a Mosaic kernel outside it fails to lower under a mesh)."""
  assert "tpu_custom_call" in _lowered_text(program, topology, mesh_text, tpu_view=True)


def test_the_recipe_upscale_compiles_as_on_a_tpu_vm_with_its_cost(tmp_path):
  # A small clip (its VAE rows still split over context): libtpu compiles it in half 9x128x128's time, and the
  # numbers checked here do not depend on the clip.
  result = _aot("--topology", "v5e:2x2", "--config", RECIPE, "--mesh", "context=4", "--program", "upscale", "--clip",
                "9x32x32", "--json", tmp_path / "upscale.json", "--hlo", tmp_path / "upscale.hlo.gz", tpu_view=True)
  assert result.returncode == 0, result.stderr[-3000:]
  with gzip.open(tmp_path / "upscale.hlo.gz", "rt") as file:
    assert "\nENTRY " in file.read()  # the compiled program's text, kept for analyses without a compile
  numbers = json.loads((tmp_path / "upscale.json").read_text())
  assert numbers["platform"] == "tpu" and numbers["chips"] == 4
  assert numbers["estimated_seconds"] > 0 and numbers["compiler_flops"] > 0 and numbers["compiler_bytes_accessed"] > 0
  assert numbers["estimated_seconds"] == pytest.approx(numbers["compiler_optimal_seconds"]
                                                       + numbers["compiler_unpriced_calls"])
  # the model's FLOPs: the VAE's encoder and decoder and the rest (DiT, CFCA, VRG) counted from the jaxpr
  assert set(numbers["model_flops_by_function"]) == {"_encode", "_decode", "other"}
  assert numbers["model_flops"] == sum(numbers["model_flops_by_function"].values())
  # The DiT's blocks and the VAE's time chunks run as loops, whose bodies libtpu's estimate counts once: no MFU.
  assert numbers["compiler_loops"] >= 3 and "estimated_mfu" not in numbers and "frames_per_second" not in numbers
  assert numbers["roofline_seconds"] == pytest.approx(max(numbers["model_flops"] / (4 * 197e12),
                                                          numbers["compiler_bytes_accessed"] / 819e9))
  assert 0 < numbers["attention_flops"] < numbers["model_flops"]
  assert numbers["attention_seconds_at_peak"] == pytest.approx(numbers["attention_flops"] / (4 * 197e12))
  assert "| estimated seconds (compiler estimate) |" in result.stdout
  # libtpu's per-operation cycle estimates, by part and operation: the VAE's convolutions lead at this size
  shares = numbers["compiler_cycles_by_operation"]
  ranked = [share for key, share in shares.items() if key != "rest"]
  assert sum(shares.values()) == pytest.approx(1) and ranked == sorted(ranked, reverse=True)
  assert {"_encode/conv_general_dilated", "_decode/conv_general_dilated"} <= set(shares)
  assert "| _decode/conv_general_dilated |" in result.stdout
  # and by part and source line: the line of the package each operation was traced at
  lines = numbers["compiler_cycles_by_source_line"]
  assert sum(lines.values()) == pytest.approx(1)
  assert {"_encode: models/layers.py", "_decode: models/layers.py"} <= {key.rsplit(":", 1)[0] for key in lines}


@pytest.mark.parametrize("program", PROGRAMS)
def test_programs_are_the_targets_whatever_the_host_sees_and_unroll_to_no_loop(program):
  """Lowered on this CPU machine and lowered as a TPU VM sees it, on a mesh that mixes fsdp and context, the program
  is the same: every kernel choice follows the target, none the host.

  With the plan's `unroll_loops` (aot --unroll-loops), the DiT's blocks, the VAE's time chunks and the perceptual
  loss's frame groups lower as straight-line code, so that libtpu's estimate, which counts a loop's body once, sees
  them whole: no program has a loop left, the train steps' gradients included.

  (One test for both: they look at the same program as a TPU VM lowers it, lowered once.)"""
  topology, mesh_text = TPU_MESHES[-1]
  on_this_host = _lowered_text(program, topology, mesh_text, tpu_view=False)
  as_on_a_tpu_vm = _lowered_text(program, topology, mesh_text, tpu_view=True)
  assert on_this_host.count("tpu_custom_call") == as_on_a_tpu_vm.count("tpu_custom_call") > 0
  assert on_this_host == as_on_a_tpu_vm, "the program lowered on this host is not the one a TPU VM lowers"

  rolled = as_on_a_tpu_vm.count("stablehlo.while")
  unrolled = _lowered_text(program, topology, mesh_text, tpu_view=True, unroll_loops=True).count("stablehlo.while")
  assert rolled >= 3 and unrolled == 0, f"while loops: {rolled} rolled, {unrolled} unrolled"


def test_utilization_from_an_estimate_of_a_program_without_loops():
  """The compiler's estimate plus the attention (splash, which it does not price) at the chips' peak."""
  result = {"topology": "v5e:2x2", "chips": 4, "program": "upscale", "clip": [9, 64, 64], "model_flops": 8e12,
            "attention_flops": 1.576e12, "compiler_bytes_accessed": 1e9, "estimated_seconds": 0.02,
            "compiler_loops": 0}
  numbers = aot.utilization(result)
  seconds = 0.02 + 1.576e12 / (4 * 197e12)  # v5e: 197 TFLOP/s per chip
  assert numbers["attention_seconds_at_peak"] == pytest.approx(0.002)
  assert numbers["estimated_seconds_with_attention"] == pytest.approx(seconds)
  assert numbers["estimated_mfu"] == pytest.approx(8e12 / (4 * 197e12 * seconds))
  assert numbers["frames_per_second"] == pytest.approx(9 / seconds)
  assert numbers["frames_per_second_per_312_tflops"] == pytest.approx(9 / seconds * 312 / (4 * 197))
  assert "estimated_mfu" not in aot.utilization(result | {"compiler_loops": 2})
  assert "estimated_mfu" not in aot.utilization({k: v for k, v in result.items() if k != "attention_flops"})


@pytest.mark.slow  # half a minute on 2 cores
def test_libtpu_prices_splash_attention_at_almost_nothing(monkeypatch):
  """One v5p chip, 12 heads of 128 over 4096 tokens in bf16: XLA's attention is counted and priced at more than the
  chip's peak allows; splash's FLOPs are not counted and its estimate is under a quarter of that bound
  (aot.utilization adds the attention at peak)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from diffst_jax.ops import attention  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  mesh = make_mesh("data=1", aot.devices("v5p:1x1x1"))
  q = aot._replicated((1, 4096, 12, 128), jnp.bfloat16, mesh)  # pylint: disable=protected-access
  model_flops = 4 * 4096 * 4096 * 12 * 128
  at_peak = model_flops / 459e12  # v5p: 459 TFLOP/s per chip

  def priced(implementation: str) -> dict:
    function = functools.partial(attention.dot_product_attention, implementation=implementation)
    return aot.cost(jax.jit(function).lower(q, q, q).compile())

  xla, splash = priced("xla"), priced("splash")
  assert xla["compiler_flops"] >= model_flops and xla["estimated_seconds"] > at_peak
  assert splash["compiler_flops"] < model_flops / 1000 and splash["estimated_seconds"] < at_peak / 4


@pytest.mark.slow  # half a minute on 2 cores
def test_libtpu_counts_a_loop_body_once_and_prices_unrolled_steps_whole(monkeypatch):
  """A scan of a 4096x4096 bf16 matmul on one v5e chip: rolled, libtpu's FLOPs and estimate are the same at 1, 4 and
  16 steps; unrolled, the estimate grows with the steps, by about the matmul's time at the chip's peak per step
  (docs/BENCHMARKS.md: why `aot --unroll-loops`)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  mesh = make_mesh("data=1", aot.devices("v5e:1x1"))
  x = aot._replicated((4096, 4096), jnp.bfloat16, mesh)  # pylint: disable=protected-access

  def estimate(steps: int, unroll) -> tuple[float, float]:
    scan = lambda x, w: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=steps,  # noqa: E731
                                     unroll=unroll)[0]
    numbers = aot.cost(jax.jit(scan).lower(x, x).compile())
    return numbers["compiler_flops"], numbers["estimated_seconds"]

  rolled = [estimate(steps, 1) for steps in (4, 16)]
  assert rolled[0] == rolled[1]
  unrolled = {steps: estimate(steps, True)[1] for steps in (4, 16)}
  per_step = (unrolled[16] - unrolled[4]) / 12
  assert per_step == pytest.approx(2 * 4096**3 / 197e12, rel=0.1)  # v5e: 197 TFLOP/s per chip
  assert unrolled[16] > 3 * rolled[1][1]


@pytest.mark.slow  # a minute on 2 cores
def test_libtpu_prices_each_concat_bitcast_at_minus_one_second(monkeypatch):
  """The gradient of a tiny VAE decoder: libtpu's raw estimate is negative by one second per ConcatBitcast custom
  call of the program; `aot.cost` adds them back, and the loop of its time chunks is reported."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from diffst_jax.models import diffst  # pylint: disable=import-outside-toplevel
  from diffst_jax.models.vae import WanVAE  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.plan import ExecutionPlan  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  mesh = make_mesh("data=1", aot.devices("v5e:1x1"))
  config = diffst.DiffSTConfig.from_dict(load_config("tiny").model.to_dict()).vae
  config = dataclasses.replace(config, remat=False)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0))))
  replicated = lambda a: aot._replicated(a.shape, a.dtype, mesh)  # noqa: E731  pylint: disable=protected-access
  latent = replicated(jax.ShapeDtypeStruct((1, 3, 8, 8, config.z_dim), jnp.float32))
  plan = ExecutionPlan(mesh)
  gradient = jax.grad(lambda state, z: jnp.sum(nnx.merge(graphdef, state).decode(plan, z) ** 2), argnums=1)
  with jax.set_mesh(mesh):
    numbers = aot.cost(jax.jit(gradient).lower(jax.tree.map(replicated, state), latent).compile())
  assert numbers["compiler_unpriced_calls"] > 1 and numbers["compiler_loops"] >= 1
  assert numbers["compiler_optimal_seconds"] < -1
  assert 0 < numbers["estimated_seconds"] < 1  # a few milliseconds
  assert numbers["estimated_seconds"] == pytest.approx(numbers["compiler_optimal_seconds"]
                                                       + numbers["compiler_unpriced_calls"])


@pytest.mark.slow  # two minutes on 2 cores
def test_the_unrolled_train_step_on_v5p_compiles_without_loops_and_its_estimate_is_whole(monkeypatch):
  """The recipe's stage-1 step at tiny widths on v5p:2x2x2, fsdp=2 x context=4, unrolled: XLA still makes windowed
  einsums (loops) of the products sharded over fsdp unless `NO_LOOP_COMPILER_OPTIONS` turn them off, and libtpu
  prices each PrepareAsyncCall custom call (v5p's scatter-adds offloaded to the SparseCores) at -1 s, which
  `aot.cost` adds back: a positive estimate of a few milliseconds (docs/BENCHMARKS.md)."""
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  lowered = _lowered("train stage 1", "v5p:2x2x2", "fsdp=2,context=4", unroll_loops=True)
  with_windowed_einsums = lowered.compile()
  assert "windowed_dot_general" in with_windowed_einsums.as_text()
  assert aot.cost(with_windowed_einsums)["compiler_loops"] >= 1
  compiled = lowered.compile(compiler_options=aot.NO_LOOP_COMPILER_OPTIONS)
  numbers = aot.cost(compiled)
  asynchronous = compiled.as_text().count('custom_call_target="PrepareAsyncCallStart"')
  assert numbers["compiler_loops"] == 0 and asynchronous >= 1
  assert numbers["compiler_custom_calls"]["PrepareAsyncCallStart"] == asynchronous
  # the SparseCore's scatter offloads carry libtpu's "unpriced" cycles, which would swamp every share
  assert "scatter_offload" in compiled.as_text() and max(numbers["compiler_cycles_by_operation"].values()) < 0.9
  assert numbers["compiler_unpriced_calls"] >= 2 * asynchronous and numbers["compiler_optimal_seconds"] < -1
  assert 0 < numbers["estimated_seconds"] < 0.1
  assert numbers["estimated_seconds"] == pytest.approx(numbers["compiler_optimal_seconds"]
                                                       + numbers["compiler_unpriced_calls"])


@pytest.mark.slow  # a minute on 2 cores; the default run compiles this program up to its memory check
# (test_a_program_that_does_not_fit_the_memory_limit_is_one_line)
def test_the_tiny_upscale_program_compiles_for_a_tpu_slice(tmp_path):
  result = _aot("--topology", "v5e:2x2", "--config", ROOT / "configs" / "tiny.py", "--mesh", "context=4",
                "--program", "upscale", "--clip", "9x64x64", "--json", tmp_path / "upscale.json")
  assert result.returncode == 0, result.stderr[-3000:]
  numbers = json.loads((tmp_path / "upscale.json").read_text())
  assert numbers["platform"] == "tpu" and numbers["mesh"] == "context=4"
  assert numbers["peak_bytes_per_device"] == (numbers["argument_bytes"] + numbers["output_bytes"]
                                              - numbers["alias_bytes"] + numbers["temp_bytes"])
  assert numbers["argument_bytes"] > 0 and numbers["temp_bytes"] > 0 and numbers["compile_seconds"] > 0
  assert "| peak per device |" in result.stdout
  assert "TPU" not in result.stderr  # libtpu stays quiet on a machine without chips


@pytest.mark.slow  # 4 min on 2 cores
@pytest.mark.parametrize("stage", [1, 2])
def test_the_recipe_train_step_compiles_as_on_a_tpu_vm(monkeypatch, stage):
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  lowered = _lowered(f"train stage {stage}", "v5e:2x2", "fsdp=2,context=2")
  assert "tpu_custom_call" in lowered.as_text()  # splash, TPU's attention, inside shard_map
  compiled = lowered.compile()
  numbers = aot.memory(compiled)
  assert numbers["alias_bytes"] > 0  # the donated train state is updated in place
  assert 0 < numbers["peak_bytes_per_device"] < 2 << 30
  assert aot.cost(compiled)["compiler_flops"] > 0


@pytest.mark.parametrize("topology, chips", [("v5p:1x1x1", 1), ("v5e:2x1", 2), ("v5e:2x2", 4), ("v5p:2x2x2", 8)])
def test_slices_smaller_than_a_host_are_slices_too(monkeypatch, topology, chips):
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  found = aot.devices(topology)
  assert len(found) == chips and {device.platform for device in found} == {"tpu"}


@pytest.mark.parametrize("args, message", [
    (["--topology", "v9z:3x3"], "--topology v9z:3x3: not a TPU slice libtpu can compile for"),
    (["--topology", "v5e:2x2", "--mesh", "context=8"], "mesh: {'data': 1, 'fsdp': 1, 'context': 8, 'tensor': 1} "
     "needs 8 devices, there are 4"),
    (["--topology", "v5e:2x2", "--clip", "33x480"], "--clip 33x480: expected FRAMESxHEIGHTxWIDTH"),
    (["--topology", "cpu:4", "--hbm-limit", "8"], "--hbm-limit 8.0: a positive size in GiB, for a TPU --topology only"),
])
def test_bad_topologies_meshes_and_clips_are_one_line(args, message):
  defaults = {"--config": ROOT / "configs" / "tiny.py", "--program": "upscale", "--clip": "9x64x64"}
  given = dict(zip(args[::2], args[1::2]))
  line = error_line(_aot(*[item for key, value in (defaults | given).items() for item in (key, value)]))
  assert line.startswith(f"diffst_jax.aot: error: {message}"), line


def test_a_program_that_does_not_fit_the_memory_limit_is_one_line():
  result = _aot("--topology", "v5e:2x2", "--config", ROOT / "configs" / "tiny.py", "--mesh", "context=4",
                "--program", "upscale", "--clip", "9x64x64", "--hbm-limit", "0.001")
  assert result.returncode == 1  # the work ran and did not fit (diffst_jax/cli.py)
  assert error_line(result).startswith("diffst_jax.aot: does not fit: RESOURCE_EXHAUSTED")
