"""Sweeps: grid expansion, trial names, emitted commands, skipping finished trials, the summary; and (slow) a 2x2
CFCA x VRG sweep of the tiny config trained and scored end to end, then re-run."""

import json
import shutil
import subprocess
import sys

import pytest

from diffst_jax import sweep as sweep_lib
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"


def _write_sweep(tmp_path, base, evaluate):
  path = tmp_path / "sweep.py"
  path.write_text(f'''
def get_sweep():
  return dict(config={str(ROOT / "configs" / "tiny.py")!r}, base={base!r},
              grid={{"model.cfca.enabled": [True, False], "model.vrg.enabled": [True, False]}}, evaluate={evaluate!r})
''')
  return path


def test_grid_trials_commands_and_skipping(tmp_path, capsys):
  path = _write_sweep(tmp_path, {"seed": 3}, {"gt": "heldout"})
  trials = sweep_lib.expand(sweep_lib.load_sweep(path))
  assert list(trials) == ["cfca.enabled=True,vrg.enabled=True", "cfca.enabled=True,vrg.enabled=False",
                          "cfca.enabled=False,vrg.enabled=True", "cfca.enabled=False,vrg.enabled=False"]
  assert trials["cfca.enabled=False,vrg.enabled=True"] == {"seed": 3, "model.cfca.enabled": False,
                                                            "model.vrg.enabled": True}
  workdir = tmp_path / "runs"
  finished = list(trials)[:3]
  for index, name in enumerate(finished):  # finished trials, as run_trial leaves them
    (workdir / name).mkdir(parents=True)
    (workdir / name / "trial.json").write_text(json.dumps({"name": name, "scores": {"psnr": 20.0 + index,
                                                                                     "ssim": 0.5, "lpips": 0.3}}))
  assert sweep_lib.main(["--sweep", str(path), "--workdir", str(workdir), "--emit-commands"]) == 0
  commands = capsys.readouterr().out.strip().splitlines()
  assert len(commands) == 1 and commands[0].endswith("--trial cfca.enabled=False,vrg.enabled=False")
  (workdir / finished[0] / "eval").mkdir()
  (workdir / finished[0] / "eval" / "report.html").write_text("<html></html>")  # evaluate.py's, for one of them
  assert sweep_lib.main(["--sweep", str(path), "--workdir", str(workdir), "--summary-only"]) == 0
  summary = (workdir / "summary.md").read_text()
  assert "| cfca.enabled=True,vrg.enabled=False | 21.00 | 0.5000 | 0.3000 |  |" in summary
  assert ("| cfca.enabled=True,vrg.enabled=True | 20.00 | 0.5000 | 0.3000 | "
          "[report](cfca.enabled%3DTrue%2Cvrg.enabled%3DTrue/eval/report.html) |") in summary
  assert (workdir / "summary.png").stat().st_size > 1000
  for name in finished:
    assert sweep_lib.run_trial({}, name, trials[name], workdir)["name"] == name  # skipped: nothing to run
  assert capsys.readouterr().out.count("finished, skipped") == 3


def test_bad_sweeps_are_one_line(tmp_path, capsys):
  (tmp_path / "bad.py").write_text("def get_sweep():\n  return dict(config='x.py', grids={})\n")
  assert sweep_lib.main(["--sweep", str(tmp_path / "bad.py"), "--workdir", str(tmp_path / "w")]) == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and "unknown keys: ['grids']" in error[0]
  path = _write_sweep(tmp_path, {}, {"gt": "heldout"})
  assert sweep_lib.main(["--sweep", str(path), "--workdir", str(tmp_path / "w"), "--trial", "nope"]) == 2
  assert "no trial 'nope'" in capsys.readouterr().err


@pytest.mark.slow  # four trainings and evaluations of distinct programs: about 10 minutes on 2 cores
def test_a_2x2_sweep_trains_scores_and_skips_when_rerun(tiny_config, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax.convert import vae as vae_convert  # pylint: disable=import-outside-toplevel
  from diffst_jax.models.vae import WanVAE, WanVAEConfig  # pylint: disable=import-outside-toplevel

  vae_convert.save(WanVAE(WanVAEConfig(**tiny_config.vae), rngs=nnx.Rngs(jax.random.key(0, impl="rbg"))),
                   tmp_path / "vae")  # stands in for the stage-0 autoencoder
  for folder in ("videos", "heldout"):
    (tmp_path / folder).mkdir()
    shutil.copy(CLIP, tmp_path / folder / "carphone.mp4")
  base = {"data.videos": str(tmp_path / "videos"), "init.vae": str(tmp_path / "vae"), "data.crop_size": 32,
          "stages.stage1.steps": 2, "stages.stage1.warmup_steps": 1, "stages.stage2.steps": 0,
          "conv_implementation": "xla", "checkpoint_every": 100}
  path = _write_sweep(tmp_path, base, {"gt": str(tmp_path / "heldout"), "no_dists": True, "no_ablations": True})
  command = [sys.executable, "-m", "diffst_jax.sweep", "--sweep", str(path), "--workdir", str(tmp_path / "sweep")]
  first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  records = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/trial.json"))]
  assert len(records) == 4 and all(0 < r["scores"]["psnr"] < 60 for r in records)
  for record in records:
    resolved = json.loads((tmp_path / "sweep" / record["name"] / "train" / "config.json").read_text())
    assert resolved["model"]["cfca"]["enabled"] == record["overrides"]["model.cfca.enabled"]
  summary = (tmp_path / "sweep" / "summary.md").read_text()
  assert "| cfca.enabled=False,vrg.enabled=False |" in summary
  assert summary.count("[report](") == 4 and (tmp_path / "sweep" / records[0]["name"] / "eval" / "report.html").is_file()
  again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
  assert again.returncode == 0 and again.stdout.count("finished, skipped") == 4, again.stderr[-3000:]
  assert "diffst_jax.commands.train" not in again.stdout  # nothing retrained
