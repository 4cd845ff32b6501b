"""evaluate.py as a user runs it: a checkpoint and a folder of real ground-truth clips in, scores and strips out."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from diffst_jax.commands import evaluate
from diffst_jax.io import video
from diffst_jax.models import diffst
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames of 64x48


@pytest.fixture(scope="module")
def checkpoint(tiny_config, tmp_path_factory):
  return diffst.save(diffst.init(diffst.DiffSTConfig.from_dict(tiny_config.to_dict()), seed=0),
                     tmp_path_factory.mktemp("checkpoint") / "model")


def test_scores_a_folder_of_real_clips(checkpoint, tmp_path):
  (tmp_path / "gt").mkdir()
  shutil.copy(CLIP, tmp_path / "gt" / "carphone.mp4")
  out = tmp_path / "scores"
  assert evaluate.main(["--gt", str(tmp_path / "gt"), "--out", str(out), "--checkpoint", str(checkpoint),
                        "--no-dists", "--no-ablations", "--crop-border", "4", "--color-fix", "none", "wavelet"]) == 0
  report = json.loads((out / "scores.json").read_text())
  assert report["protocol"] == "bicubic" and report["crop_border"] == 4
  methods = report["results"]
  uncorrected, corrected = "DiffST (model, colour fix none)", "DiffST (model, colour fix wavelet)"
  assert list(methods) == [uncorrected, corrected, "bicubic x4 + linear blend x2"]
  assert report["color_fix"] == {uncorrected: "none", corrected: "wavelet"}
  for result in methods.values():
    assert result["clips"]["carphone"]["frames"] == 9
    assert set(result["mean"]) == {"psnr", "psnr_y", "ssim", "lpips", "tof", "tlp", "psnr_key", "psnr_between",
                                   "colour"}
  # the untrained model's colours are arbitrary (60 levels off); the wavelet fix takes the baseline's low frequencies
  assert methods[corrected]["mean"]["colour"] < methods[uncorrected]["mean"]["colour"] / 4
  assert f"| {corrected} |" in (out / "scores.md").read_text()
  page = (out / "report.html").read_text()  # tests/eval/test_report.py opens one in Chromium
  assert all(name in page for name in methods) and "report/carphone/psnr.png" in page
  assert sorted(p.name for p in (out / "report" / "carphone").glob("*.mp4")) == [
      "bicubic-x4-linear-blend-x2.mp4", "diffst-model-colour-fix-none.mp4", "diffst-model-colour-fix-wavelet.mp4",
      "ground-truth.mp4"]
  assert video.probe(out / "report" / "carphone" / "ground-truth.mp4").frames == 9
  strip = Image.open(out / "strips" / "carphone.png")
  # baseline, DiffST, ground truth after a 36-pixel column of frame numbers; a 2-line header; frames 1, 3 or 5, 7
  assert strip.size == (36 + 3 * 64 + 2 * 4, 2 * 12 + 4 + 3 * 48 + 2 * 4)


def test_bad_arguments_are_one_line(checkpoint, tmp_path, capsys):
  (tmp_path / "gt").mkdir()
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(["--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "o"), "--checkpoint", str(checkpoint),
                   "--protocol", "paired"])
  assert exit_info.value.code == 2 and "--protocol paired needs --lq" in capsys.readouterr().err
  shutil.copy(CLIP, tmp_path / "gt" / "carphone.mp4")
  (tmp_path / "lq").mkdir()
  shutil.copy(CLIP, tmp_path / "lq" / "other.mp4")
  assert evaluate.main(["--gt", str(tmp_path / "gt"), "--lq", str(tmp_path / "lq"), "--out", str(tmp_path / "o"),
                        "--checkpoint", str(checkpoint), "--protocol", "paired"]) == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and error[0].startswith("evaluate.py: error: --lq must hold the clips of --gt by name")


def test_dists_scores_without_torch(checkpoint, tmp_path):
  """evaluate.py with DISTS in the base install: torch and the torch extra's packages unimportable."""
  (tmp_path / "gt").mkdir()
  shutil.copy(CLIP, tmp_path / "gt" / "carphone.mp4")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_torch"), str(ROOT)])}
  probe = "import torch"
  assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=False).returncode != 0
  result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--gt", str(tmp_path / "gt"), "--out",
                           str(tmp_path / "scores"), "--checkpoint", str(checkpoint), "--no-ablations"],
                          env=env, capture_output=True, text=True, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  for scores in json.loads((tmp_path / "scores" / "scores.json").read_text())["results"].values():
    assert 0 < scores["mean"]["dists"] < 1
