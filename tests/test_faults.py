"""Bad inputs and faults as a user meets them: its exit code, its one line, and every file that existed before left
as it was. Two runs on one output, a damaged checkpoint, frame folders named 1..11, a set rerun with other settings,
colliding sweep trials, a huge frame, a training run that failed before its first step, paths that lead outside a
checkpoint, flags that cannot be, and Ctrl-C.

What is about processes (a run that another process holds, Ctrl-C), train.py's runs (absl's logging and a damaged
checkpoint's abandoned reads could add to their output), a set of videos on one device and the sweep's commands run
as subprocesses; the other commands run in this process through the `main` their script calls (`in_process`), with
what a process of their own would print, without a process's start and imports."""

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
from PIL import Image

from diffst_jax.io import video
from tests.conftest import ROOT, assert_kept, in_process, snapshot

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames of 64x48
TINY = ROOT / "weights" / "tiny"


def _run(script: str, *args, env=None, **kwargs) -> subprocess.CompletedProcess:
  command = [sys.executable, *([str(ROOT / script)] if script.endswith(".py") else ["-m", script]), *map(str, args)]
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False, env=env, **kwargs)


def _one_error_line(result: subprocess.CompletedProcess, *phrases: str) -> str:
  lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("diffst: ")]
  assert result.returncode not in (0, None), result.stderr
  assert len(lines) == 1 and "error: " in lines[0], result.stderr
  assert all(phrase in lines[0] for phrase in phrases), lines[0]
  return lines[0]


def _png_folder(folder: pathlib.Path, levels, names=None, size=(16, 16)) -> pathlib.Path:
  folder.mkdir(parents=True)
  for level, name in zip(levels, names or [f"{i:06d}.png" for i in range(len(levels))]):
    Image.fromarray(np.full((*size, 3), level, np.uint8)).save(folder / name)
  return folder


def test_a_second_run_on_an_output_being_written_is_refused_and_the_finished_output_is_kept(tmp_path, capfd):
  frames = video.read_video(CLIP)[0][:, :16, :16]  # at --space-scale 1, the smallest program
  video.write_video(tmp_path / "a", frames[:3], 30)
  video.write_video(tmp_path / "b", frames[3:7], 30)
  out, lock = tmp_path / "out.mp4", tmp_path / ".out.mp4.lock"
  first = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "--input", str(tmp_path / "a"), "--output",
                            str(out), "--space-scale", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert lock.exists(), "the first run never took its lock"
  second = in_process(capfd, "infer.py", "--input", tmp_path / "b", "--output", out, "--space-scale", "1")
  assert first.wait(timeout=300) == 0, first.stderr.read()
  _one_error_line(second, str(out), "another run (pid", "is writing it now")
  assert video.probe(out).frames == 2 * 3 - 1  # the first run's output, not the second's
  assert not lock.exists()
  kept = snapshot(tmp_path)
  third = in_process(capfd, "infer.py", "--input", tmp_path / "b", "--output", out, "--space-scale", "1")
  _one_error_line(third, "already exists", "--overwrite")
  assert_kept(kept, tmp_path)


def _train_flags(videos: pathlib.Path, workdir: pathlib.Path, steps: int) -> list[str]:
  return ["--config", str(ROOT / "configs" / "tiny_vae.py"), "--config.data.batch_size=1", "--config.log_every=1",
          "--config.checkpoint_every=2", f"--config.stages.stage1.steps={steps}",
          "--config.stages.stage1.warmup_steps=2", "--config.stages.stage2.steps=0",
          "--config.conv_implementation=xla", "--config.stages.stage1.loss.perceptual=0.0",
          "--config.model.vae.num_res_blocks=1", f"--config.data.videos={videos}", f"--workdir={workdir}"]


def _one_device() -> dict:
  """One device; the test run's compilation cache (tests/conftest.py), which the train.py runs here share."""
  return dict(os.environ, XLA_FLAGS="")


def test_a_damaged_newest_checkpoint_is_named_set_aside_and_the_run_resumes_from_the_one_before(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  shutil.copy(CLIP, videos)
  workdir = tmp_path / "run"
  flags, env = _train_flags(videos, workdir, steps=4), _one_device()
  assert _run("train.py", *flags, env=env).returncode == 0
  for data in (workdir / "checkpoints" / "4" / "state" / "ocdbt.process_0" / "d").iterdir():
    data.write_bytes(data.read_bytes()[:100])  # cut short, as a disk that failed leaves it
  damaged = snapshot(workdir / "checkpoints" / "4")
  result = _run("train.py", *flags, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  log = result.stdout + result.stderr
  warnings = [line for line in log.splitlines() if line.startswith("warning:")]
  assert len(warnings) == 1 and f"{workdir / 'checkpoints' / '4'}: damaged, not restored" in warnings[0]
  assert "resuming from step 2" in warnings[0] and "Traceback" not in log
  assert f"resumed {workdir} at step 2" in log
  assert_kept(damaged, workdir / "damaged_checkpoints" / "4")  # set aside whole, not deleted
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]  # step 4 written again
  assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4,
                                                                                                        3, 4]


def test_a_run_that_fails_before_its_first_step_leaves_nothing_that_blocks_the_fix_it_suggests(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  video.write_video(videos / "five.mp4", video.read_video(CLIP)[0][:5], 25)
  workdir = tmp_path / "run"
  flags, env = _train_flags(videos, workdir, steps=4), _one_device()  # the program the damaged-checkpoint test trains
  failed = _run("train.py", *flags, "--config.data.clip_frames=9", env=env)
  assert "use a smaller clip_frames" in _one_error_line(failed, "five.mp4")
  assert not workdir.exists()
  (tmp_path / "kept").mkdir()
  (tmp_path / "kept" / "notes.txt").write_text("the user's")
  failed = _run("train.py", *flags[:-1], f"--workdir={tmp_path / 'kept'}", "--config.data.clip_frames=9", env=env)
  assert failed.returncode != 0 and sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]
  fixed = _run("train.py", *flags, "--config.data.clip_frames=5", env=env)
  assert fixed.returncode == 0, fixed.stderr[-3000:]
  assert (workdir / "model" / "model.json").is_file()


def test_frame_folders_run_in_the_order_of_their_numbers_and_odd_numbering_is_said(tmp_path, capfd):
  levels = [20 * i for i in range(11)]
  numbered = _png_folder(tmp_path / "numbered", levels, [f"{i + 1}.PNG" for i in range(11)])
  # at --space-scale 1: chunks of 5 frames of 16x16, the program of tests/test_user_files.py's cut-short video
  result = in_process(capfd, "infer.py", "--input", numbered, "--output", tmp_path / "out", "--color-fix", "wavelet",
                      "--space-scale", "1")
  assert result.returncode == 0, result.stderr
  assert "warning" not in result.stderr
  plan = [line for line in result.stderr.splitlines() if "model calls" in line and "->" in line]
  assert plan and "11 frames of 16x16 -> 21 of 16x16" in plan[0]
  means = video.read_video(tmp_path / "out")[0][::2].mean(axis=(1, 2, 3))
  assert np.all(np.diff(means) > 10), means  # 1.png, 2.png, ..., 11.png: brighter and brighter

  skipping = _png_folder(tmp_path / "skipping", [0, 50, 100], ["frame1.png", "frame2.png", "frame4.png"])
  mixed = _png_folder(tmp_path / "mixed", [0, 50, 100], ["1.png", "2.png", "cover.png"])
  for folder, said in ((skipping, "skips frame numbers: 2 is followed by 4"),
                       (mixed, "mixes numbered and unnumbered frame names")):
    result = in_process(capfd, "infer.py", "--input", folder, "--output", tmp_path / f"{folder.name}_out",
                        "--time-scale", "2", "--chunk-frames", "2", "--space-scale", "1")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and said in warnings[0], result.stderr


def test_a_set_rerun_with_other_settings_keeps_the_outputs_made_with_the_first(tmp_path):
  videos = tmp_path / "videos"
  _png_folder(videos / "first", [10, 60, 110])
  _png_folder(videos / "second", [200, 150, 100])
  # On one device the two videos share one compiled program (on this process's 8 each device compiles its own), at
  # --space-scale 1 the smallest.
  out, scale, env = tmp_path / "out", ["--space-scale", "1"], _one_device()
  assert _run("infer.py", "--input", videos, "--output", out, *scale, env=env).returncode == 0
  kept = snapshot(out)
  rerun = _run("infer.py", "--input", videos, "--output", out, *scale, "--time-scale", "4", env=env)
  assert rerun.returncode == 1
  assert "0 done, 0 skipped (complete), 2 failed" in rerun.stderr and "made with other settings" in rerun.stderr
  assert_kept(kept, out)
  assert set(snapshot(out)) == set(kept)
  same = _run("infer.py", "--input", videos, "--output", out, *scale, env=env)
  assert same.returncode == 0 and "0 done, 2 skipped (complete), 0 failed" in same.stderr


def test_sweep_trials_whose_names_would_collide_stay_apart(tmp_path):
  sweep = tmp_path / "sweep.py"
  sweep.write_text("def get_sweep():\n  return {'config': 'configs/tiny.py', 'evaluate': {'gt': 'heldout'},\n"
                   "          'grid': {'data.videos': ['/d/tv a/b', '/d/tva/b', '/d/tv_a_b']}}\n")
  result = _run("diffst_jax.sweep", "--sweep", sweep, "--workdir", tmp_path / "w", "--emit-commands")
  assert result.returncode == 0, result.stderr
  commands = result.stdout.strip().splitlines()
  assert len(commands) == 3
  assert len({command.split("--trial ")[-1] for command in commands}) == 3


def test_a_huge_output_needs_a_flag_and_is_refused_before_any_work(tmp_path, capfd):
  _png_folder(tmp_path / "huge", [0, 255], size=(2200, 3000))
  result = in_process(capfd, "infer.py", "--input", tmp_path / "huge", "--output", tmp_path / "out")
  _one_error_line(result, "12000x8800 output frames (106 megapixels)", "above 8K", "--large-output")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["huge"]


def _checkpoint_naming(tmp_path: pathlib.Path, name: str) -> pathlib.Path:
  checkpoint = tmp_path / "ckpt"
  shutil.copytree(TINY, checkpoint)
  metadata = json.loads((checkpoint / "model.json").read_text())
  metadata["params_files"][name] = 1
  (checkpoint / "model.json").write_text(json.dumps(metadata))
  return checkpoint


@pytest.mark.parametrize("name", ["/etc/passwd", "../../../x", "../model.json"])
def test_a_checkpoint_naming_a_file_outside_its_folder_is_refused(tmp_path, capfd, name):
  checkpoint = _checkpoint_naming(tmp_path, name)
  result = in_process(capfd, "infer.py", "--input", CLIP, "--output", tmp_path / "out.mp4", "--checkpoint", checkpoint)
  _one_error_line(result, "model.json: names", repr(name), "not a file inside")
  assert not (tmp_path / "out.mp4").exists()


def test_a_shard_index_naming_a_file_outside_its_folder_is_refused(tmp_path, capfd):
  release = tmp_path / "release"
  release.mkdir()
  (tmp_path / "outside.safetensors").write_bytes(b"not read")
  index = release / "model.safetensors.index.json"
  index.write_text(json.dumps({"weight_map": {"blocks.0.weight": "../outside.safetensors"}}))
  result = in_process(capfd, "convert_torch_weights.py", "--dit", index, "--out", tmp_path / "out")
  _one_error_line(result, "names '../outside.safetensors'", "not a file inside")
  assert not (tmp_path / "out").exists()


INFER_FLAG_CASES = {
    "fps tiny": (["--fps", "1e-9"], "--fps 1e-9: a frame rate must be between 0.01 and 1000"),
    "fps huge": (["--fps", "12345.678901"], "--fps 12345.678901: a frame rate must be between"),
    "tile zero": (["--tile", "0", "0"], "--tile 0 0: must be at least 16"),
    "tile overlap negative": (["--tile", "16", "16", "--tile-overlap", "-4"], "--tile-overlap -4: must be at least 0"),
    "tile batch zero": (["--tile-batch", "0"], "--tile-batch 0: must be at least 1"),
    "chunk frames zero": (["--chunk-frames", "0"], "--chunk-frames 0: must be at least 2"),
}


@pytest.mark.parametrize("case", list(INFER_FLAG_CASES))
def test_flags_that_cannot_be_are_refused_before_any_work(tmp_path, capfd, case):
  flags, message = INFER_FLAG_CASES[case]
  _png_folder(tmp_path / "frames", [0, 100])
  result = in_process(capfd, "infer.py", "--input", tmp_path / "frames", "--output", tmp_path / "out", *flags)
  _one_error_line(result, message)
  assert "diffst: " not in result.stderr  # refused before the model is loaded
  assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


@pytest.mark.parametrize("inference, message", [
    ({"tile": [0, 0]}, "inference.tile is [0, 0]; expected a whole number of at least 1"),
    ({"chunk_frames": -5}, "inference.chunk_frames is -5; expected a whole number of at least 2"),
    ({"color_fix": "sepia"}, "inference.color_fix is 'sepia'; expected one of none, wavelet, adain")])
def test_recorded_inference_settings_that_cannot_be_are_named_as_the_checkpoint_s(tmp_path, capfd, inference,
                                                                                  message):
  checkpoint = tmp_path / "ckpt"
  shutil.copytree(TINY, checkpoint)
  metadata = json.loads((checkpoint / "model.json").read_text())
  metadata["inference"] = metadata.get("inference", {}) | inference
  (checkpoint / "model.json").write_text(json.dumps(metadata))
  result = in_process(capfd, "infer.py", "--input", CLIP, "--output", tmp_path / "out.mp4", "--checkpoint", checkpoint)
  _one_error_line(result, f"{checkpoint / 'model.json'}: {message}")


@pytest.mark.parametrize("flags, message", [
    (["--strip-frames", "0"], "--strip-frames 0: must be at least 1"),
    (["--crop-border", "1000"], "--crop-border 1000: leaves nothing of")])
def test_evaluate_flags_that_cannot_be_are_refused_before_scoring(tmp_path, capfd, flags, message):
  (tmp_path / "gt").mkdir()
  shutil.copy(CLIP, tmp_path / "gt")
  result = in_process(capfd, "evaluate.py", "--gt", tmp_path / "gt", "--out", tmp_path / "scores", "--checkpoint",
                      TINY, "--no-dists", "--no-ablations", *flags)
  _one_error_line(result, message)
  assert not (tmp_path / "scores").exists()


def test_ctrl_c_is_one_line_and_exit_code_130_with_nothing_left_behind(tmp_path):
  # 2880 frames: many chunks of model calls, each 5 frames of 16x16 at --space-scale 1 (the frame folders' program),
  # so that the run is still upscaling when the signal comes (with 36, and twice in the full suite with 288, a warm
  # compilation cache let it finish first)
  frames = np.repeat(video.read_video(CLIP)[0][:, :16, :16], 320, axis=0)
  video.write_video(tmp_path / "in", frames, 30)
  before = snapshot(tmp_path)
  run = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "--input", str(tmp_path / "in"), "--output",
                          str(tmp_path / "out.mp4"), "--chunk-frames", "5", "--space-scale", "1"], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
  said = ""
  while "model calls" not in said:
    line = run.stderr.readline()
    assert line, "infer.py ended before upscaling"
    said += line
  run.send_signal(signal.SIGINT)
  rest = run.stderr.read()
  assert run.wait(timeout=120) == 130
  lines = [line for line in rest.replace("\r", "\n").splitlines() if line.strip() and "model calls:" not in line]
  assert rest.rstrip().splitlines()[-1] == lines[-1]  # on a line of its own, after the progress bar's
  assert lines == ["infer.py: error: interrupted; the partial output was removed"], rest
  assert_kept(before, tmp_path)
  assert set(snapshot(tmp_path)) == set(before) and not list(tmp_path.glob(".*"))
