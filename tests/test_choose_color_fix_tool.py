"""tools/choose_color_fix.py: a checkpoint's default colour fix chosen from evaluate.py's scores and recorded."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from diffst_jax.io import checkpoint as checkpoints
from diffst_jax.models import diffst

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _scores(path: pathlib.Path, checkpoint: pathlib.Path, rows: dict[str, tuple[float, list[float]]]) -> pathlib.Path:
  """A scores.json as evaluate.py writes it with several --color-fix: rows {fix: (mean PSNR, colour per clip)}."""
  results = {f"DiffST (model, colour fix {kind})": {
      "mean": {"psnr": psnr}, "clips": {f"clip{i}": {"colour": c} for i, c in enumerate(colours)}}
      for kind, (psnr, colours) in rows.items()}
  path.write_text(json.dumps({"checkpoint": str(checkpoint), "results": results,
                              "color_fix": {name: name.split()[-1].rstrip(")") for name in results}}))
  return path


def _run(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "choose_color_fix.py"), *map(str, args)],
                        capture_output=True, text=True, check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  copy = tmp_path_factory.mktemp("ckpt") / "model"
  shutil.copytree(ROOT / "weights" / "tiny", copy)
  checkpoints.record_inference(copy, color_fix="adain")  # a record the choice below differs from
  return copy


def test_records_the_best_psnr_among_the_fixes_that_keep_the_colour(checkpoint, tmp_path):
  params = {p: p.read_bytes() for p in (checkpoint / "params").rglob("*") if p.is_file()}
  # adain has the best PSNR but one clip's colour 4 levels off in the second evaluation; wavelet beats none on average
  clean = _scores(tmp_path / "clean.json", checkpoint, {"none": (30.0, [1.0, 2.0]), "wavelet": (29.8, [0.5, 0.4]),
                                                        "adain": (31.0, [0.3, 0.2])})
  degraded = _scores(tmp_path / "degraded.json", checkpoint, {"none": (24.0, [5.0, 1.0]), "wavelet": (24.5, [1.0, 2.9]),
                                                              "adain": (25.0, [4.0, 0.1])})
  done = _run("--checkpoint", checkpoint, clean, degraded)
  assert done.returncode == 0, done.stderr
  assert "wavelet\tPSNR 27.15 dB\tworst clip's colour off by 2.90  <- chosen" in done.stdout
  assert diffst.recorded_color_fix(checkpoint) == "adain"  # nothing written without --record
  assert _run("--checkpoint", checkpoint, clean, degraded, "--record").returncode == 0
  assert diffst.recorded_color_fix(checkpoint) == "wavelet"
  assert diffst.trained_sizes(checkpoint)["tile"] == json.loads((ROOT / "weights/tiny/model.json").read_text())[
      "inference"]["tile"]
  assert params == {p: p.read_bytes() for p in (checkpoint / "params").rglob("*") if p.is_file()}


def test_scores_of_another_checkpoint_are_refused_in_one_line(checkpoint, tmp_path):
  other = _scores(tmp_path / "other.json", tmp_path / "elsewhere", {"none": (30.0, [1.0])})
  done = _run("--checkpoint", checkpoint, other, "--record")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      f"choose_color_fix.py: error: {other}: scores checkpoint {tmp_path / 'elsewhere'}, not --checkpoint {checkpoint}"]
