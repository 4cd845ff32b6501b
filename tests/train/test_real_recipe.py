"""The real recipe's settings at tiny widths, through every path: configs/wan21_1_3b.py:tiny (per-part learning
rates, bf16 compute with fp32 parameters, DOVE's degradations, unit-range losses with DISTS, the null context, the
frozen flow network, fresh stage-2 moments) trains both stages, is stopped by a signal and resumes bit-exactly,
exports, and upscales a clip on whole frames. Its programs compile for a TPU slice in tests/test_aot.py."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from diffst_jax import config_files
from diffst_jax.io import video
from diffst_jax.models import diffst
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"
CONFIG_FILE = ROOT / "configs" / "wan21_1_3b.py"
CONFIG = f"{CONFIG_FILE}:tiny"


def test_the_tiny_preset_keeps_every_setting_of_the_real_recipe():
  real, tiny = config_files.load(CONFIG_FILE), config_files.load(CONFIG_FILE, "tiny")
  assert tiny.optimizer.learning_rate_scale.to_dict() == real.optimizer.learning_rate_scale.to_dict() == {
      "cfca": 5.0, "vrg": 5.0}
  for part in ("vae", "dit"):
    assert tiny.model[part].dtype == real.model[part].dtype == "bfloat16"
    assert tiny.model[part].get("param_dtype", "float32") == "float32"
  same = ("pixel_range", "perceptual", "data.degradation", "stages.stage2.fresh_optimizer", "stages.stage1.loss",
          "stages.stage2.loss", "optimizer.clip_norm", "model.sigma", "model.space_scale", "model.cfca.time_scale")
  for key in same:
    real_value, tiny_value = real, tiny
    for name in key.split("."):
      real_value, tiny_value = real_value[name], tiny_value[name]
    assert tiny_value == real_value, key
  assert (tiny.pixel_range, tiny.perceptual, tiny.data.degradation) == ("unit", "dists", "dove")
  assert tiny.stages.stage2.fresh_optimizer and tiny.stages.stage2.loss.perceptual > 0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  folder = tmp_path_factory.mktemp("recipe")
  (folder / "videos").mkdir()
  shutil.copy(CLIP, folder / "videos" / CLIP.name)
  np.save(folder / "null_context.npy", np.random.default_rng(0).normal(size=(8, 24)).astype(np.float32))
  return folder


def _command(inputs, workdir, *extra):
  return [sys.executable, str(ROOT / "train.py"), "--config", CONFIG, f"--workdir={workdir}",
          f"--config.data.videos={inputs / 'videos'}", "--config.init.vae=weights/tiny", "--config.init.flow=weights/tiny",
          f"--config.init.null_context={inputs / 'null_context.npy'}", "--config.log_every=1",
          "--config.checkpoint_every=1", *extra]


def _env(inputs):
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", JAX_COMPILATION_CACHE_DIR=str(inputs / "xla"))


def _losses(workdir: pathlib.Path) -> dict[int, dict]:
  return {record["step"]: record for record in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def _run(inputs, workdir, *extra):
  result = subprocess.run(_command(inputs, workdir, *extra), env=_env(inputs), cwd=ROOT, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def test_trains_stops_resumes_exports_and_upscales(inputs, tmp_path):
  _run(inputs, tmp_path / "full")
  expected = _losses(tmp_path / "full")
  assert sorted(expected) == [1, 2, 3, 4]
  assert all(expected[step].keys() >= {"loss_rec", "loss_perceptual", "loss_consistency"} for step in (3, 4))
  assert all("loss_latent" in expected[step] for step in (1, 2))
  # per-part rates: CFCA and VRG at 5x the DiT's (the logged rate is the schedule's, the DiT's)
  stage1_rate = config_files.load(CONFIG_FILE, "tiny").stages.stage1.learning_rate
  assert expected[2]["learning_rate"] == pytest.approx(stage1_rate)

  # The stopped run names its work directory as a file:// URI, as a run in object storage would (gs://, io/paths.py).
  workdir = tmp_path / "stopped"
  workdir_uri = f"file://{workdir}"
  stopped = subprocess.Popen(_command(inputs, workdir_uri), env=_env(inputs), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").read_text():
    assert stopped.poll() is None, stopped.stdout.read()
    time.sleep(0.05)
  stopped.send_signal(signal.SIGTERM)
  output, _ = stopped.communicate(timeout=600)
  assert stopped.returncode == 0 and "run the same command again to resume" in output, output
  stopped_at = max(_losses(workdir))
  assert stopped_at < 4

  exported = _run(inputs, workdir_uri, f"--export_to={tmp_path / 'exported'}")
  assert f"wrote the model of step {stopped_at}" in exported.stdout
  assert diffst.load(tmp_path / "exported").config.dit.dtype == "bfloat16"

  resumed = _run(inputs, workdir_uri)
  assert f"at step {stopped_at}" in resumed.stdout + resumed.stderr
  losses = lambda run: {step: record["loss"] for step, record in run.items()}  # noqa: E731
  assert losses(_losses(workdir)) == losses(expected)  # bit-identical: parameters, both optimizers, data position

  out = tmp_path / "out.mp4"
  result = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(workdir / "model"), "--input",
                           str(CLIP), "--output", str(out)], env=_env(inputs), cwd=ROOT, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  source, upscaled = video.probe(CLIP), video.probe(out)
  assert (upscaled.frames, upscaled.height, upscaled.width) == (2 * 9 - 1, 4 * source.height, 4 * source.width)
