"""Ahead-of-time compilation for a TPU slice on this CPU machine (libtpu's compiler, no TPU): the tiny config's
upscale program and train step compile with their shardings and report memory per device; bad topologies and meshes
are one line."""

import json
import os
import subprocess
import sys

import pytest

from diffst_jax import aot
from diffst_jax.parallel import rules
from diffst_jax.parallel.mesh import make_mesh
from tests.conftest import ROOT, error_line, load_config

# libtpu takes a lock file per process unless told that several processes (the suite's workers) may load it.
ENV = dict(os.environ, ALLOW_MULTIPLE_LIBTPU_LOAD="1")


def _aot(*args):
  return subprocess.run([sys.executable, "-m", "diffst_jax.aot", *map(str, args)], capture_output=True, text=True,
                        cwd=ROOT, env=ENV, check=False)


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


@pytest.mark.slow  # 1.5 min on 2 cores
def test_the_tiny_train_step_compiles_for_a_tpu_slice(monkeypatch):
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  config = load_config("tiny")
  config.model.vae.num_res_blocks, config.model.dit.num_layers = 1, 1  # the same program, compiled faster
  mesh = make_mesh("fsdp=2,context=2", aot.devices("v5e:2x2"))
  lowered = aot.lower_train(config, mesh, rules.rules_from_config(config.logical_axis_rules), 1, (5, 32, 32), None)
  assert "tpu_custom_call" in lowered.as_text()  # splash, TPU's attention, inside shard_map
  numbers = aot.memory(lowered.compile(compiler_options={"exec_time_optimization_effort": -1.0}))  # compiles faster
  assert numbers["alias_bytes"] > 0  # the donated train state is updated in place
  assert 0 < numbers["peak_bytes_per_device"] < 2 << 30


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
  assert result.returncode == 3
  assert error_line(result).startswith("diffst_jax.aot: does not fit: RESOURCE_EXHAUSTED")
