"""`pip install .` (not editable) into a fresh environment: its commands upscale a clip with the default weights and
find the shipped configs, from a folder that is not the checkout."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

from diffst_jax.io import video
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"


def test_an_installed_package_upscales_a_clip_with_its_shipped_weights(tmp_path):
  environment = tmp_path / "env"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
  python = environment / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  # pip, setuptools and the dependencies come from this environment (no network here); the project is installed from
  # a copy of the checkout.
  pathlib.Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  source = tmp_path / "source"
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", "build",
                                                              "runs", "tests"))
  installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
                              "-q", str(source)], capture_output=True, text=True, check=False)
  assert installed.returncode == 0, installed.stderr[-3000:]
  shutil.rmtree(source)  # nothing may be read from the checkout it was built from
  work = tmp_path / "work"
  work.mkdir()
  env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
  where = subprocess.run([str(python), "-c", "import diffst_jax; print(diffst_jax.__file__)"], cwd=work, env=env,
                         capture_output=True, text=True, check=True).stdout
  assert where.startswith(site), where
  shutil.copy(CLIP, work / "clip.mp4")
  upscaled = subprocess.run([str(environment / "bin" / "diffst-upscale"), "--input", "clip.mp4", "--output",
                             "clip_x4.mp4", "--chunk-frames", "5"], cwd=work, env=env, capture_output=True,
                            text=True, check=False)
  assert upscaled.returncode == 0, upscaled.stderr[-3000:]
  assert f"default weights: {site}/diffst_jax/weights/tiny" in upscaled.stderr
  assert video.probe(work / "clip_x4.mp4").frames == 2 * 9 - 1
  initialized = subprocess.run([str(environment / "bin" / "diffst-upscale"), "--input", "clip.mp4", "--output",
                                "init.mp4", "--config", "tiny", "--space-scale", "1", "--chunk-frames", "3"],
                               cwd=work, env=env, capture_output=True, text=True, check=False)
  assert initialized.returncode == 0, initialized.stderr[-3000:]
  assert "configs/tiny.py at initialization" in initialized.stderr
  for command in ("diffst-train", "diffst-evaluate", "diffst-convert", "diffst-sweep", "diffst-aot"):
    helped = subprocess.run([str(environment / "bin" / command), "--help"], cwd=work, env=env, capture_output=True,
                            text=True, check=False)
    expected = 1 if command == "diffst-train" else 0  # absl's --help ends with exit code 1
    assert helped.returncode == expected and "usage" in helped.stdout.lower(), (command, helped.stderr)
