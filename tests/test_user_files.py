"""Nothing a user gives is ever lost, and every bad input is one line that names the file: each case run as the user
meets it, with every file that existed before checked byte for byte afterwards. A damaged checkpoint (whose reads
could print after the line) and one case of each tool run as a subprocess of the tool; the others run in this
process through the `main` the tool's script calls, with what a process of its own would print
(tests/conftest.py's `in_process`)."""

import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from diffst_jax.io import outputs, video
from tests.conftest import ROOT, assert_kept, error_line, in_process, snapshot

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"  # 9 frames, 64x48
TINY = ROOT / "weights" / "tiny"


def _run(tool: str, *args, cwd=ROOT) -> subprocess.CompletedProcess:
  """A tool as the user starts it: a script of the project root, or a module (`-m`)."""
  start = [str(ROOT / tool)] if tool.endswith(".py") else ["-m", tool]
  return subprocess.run([sys.executable, *start, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                        check=False)


def _png_folder(folder, frames):
  folder.mkdir(parents=True)
  for i, frame in enumerate(frames):
    Image.fromarray(frame).save(folder / f"{i:06d}.png")
  return folder


def test_the_reported_reproductions_leave_every_file_in_place(tmp_path, capfd, monkeypatch):
  clips = tmp_path / "x" / "clips"
  clips.mkdir(parents=True)
  shutil.copy(CLIP, clips / "my.mp4")
  (clips / "notes.txt").write_text("keep")
  nested = tmp_path / "s" / "a" / "b"
  nested.mkdir(parents=True)
  (tmp_path / "s" / "a" / "important.txt").write_text("keep")
  shutil.copy(CLIP, nested / "in.mp4")
  frames = _png_folder(tmp_path / "frames", video.read_video(CLIP)[0][:3])
  before = snapshot(tmp_path)

  line = error_line(in_process(capfd, "infer.py", "--input", clips / "my.mp4", "--output", clips, "--overwrite"))
  assert line.startswith(f"infer.py: error: {clips}: holds the input")
  with monkeypatch.context() as in_nested:
    in_nested.chdir(nested)
    line = error_line(in_process(capfd, "infer.py", "--input", "in.mp4", "--output", "..", "--overwrite"))
    assert "holds the input" in line
    line = error_line(in_process(capfd, "infer.py", "--input", clips / "my.mp4", "--output", ".", "--overwrite"))
    assert "is the working directory or a folder above it" in line
  line = error_line(in_process(capfd, "infer.py", "--input", frames, "--output", frames / "out", "--overwrite"))
  assert "lies inside the input folder" in line

  assert_kept(before, tmp_path)
  assert set(snapshot(tmp_path)) == set(before)  # and nothing was added


def _foreign_outputs(tmp_path):
  """Outputs --overwrite must keep: {case: (the --output, what the line says)}."""
  frames = video.read_video(CLIP)[0][:2]
  _png_folder(tmp_path / "extracted", frames)  # e.g. `ffmpeg -i x.mp4 extracted/%06d.png`: no marker
  with outputs.writing(tmp_path / "ours_plus_notes", outputs.FRAMES) as folder:
    Image.fromarray(frames[0]).save(folder / "000000.png")
  (tmp_path / "ours_plus_notes" / "notes.txt").write_text("mine")
  shutil.copy(CLIP, tmp_path / "their.mp4")
  (tmp_path / "a_file").write_text("mine")
  (tmp_path / "folder.mp4").mkdir()
  (tmp_path / "folder.mp4" / "x.txt").write_text("mine")
  return {
      "frames folder without marker": (tmp_path / "extracted", "has no .diffst-jax marker"),
      "our folder with a user file": (tmp_path / "ours_plus_notes", "holds notes.txt, which diffst-jax did not write"),
      "video not written by us": (tmp_path / "their.mp4", "was not written by diffst-jax"),
      "file where a folder goes": (tmp_path / "a_file", "exists and is a file"),
      "folder where a file goes": (tmp_path / "folder.mp4", "exists and is a folder"),
  }


@pytest.mark.parametrize("case", ["frames folder without marker", "our folder with a user file",
                                  "video not written by us", "file where a folder goes", "folder where a file goes"])
def test_overwrite_keeps_what_diffst_did_not_write(tmp_path, capfd, case):
  output, message = _foreign_outputs(tmp_path)[case]
  before = snapshot(tmp_path)
  line = error_line(in_process(capfd, "infer.py", "--input", CLIP, "--output", output, "--overwrite"))
  assert line.startswith(f"infer.py: error: {output}: ") and message in line
  assert_kept(before, tmp_path)
  assert set(snapshot(tmp_path)) == set(before)


def test_overwrite_replaces_a_previous_output_and_cleans_what_a_killed_run_left(tmp_path, capfd):
  source = _png_folder(tmp_path / "in", video.read_video(CLIP)[0][:3, :16, :16])  # the smallest program
  output = tmp_path / "out"
  args = ["--input", source, "--output", output, "--space-scale", "1"]
  first = in_process(capfd, "infer.py", *args)
  assert first.returncode == 0, first.stderr
  assert sorted(p.name for p in output.iterdir()) == [outputs.MARKER] + [f"{i:06d}.png" for i in range(5)]
  killed = tmp_path / ".out.partial-0123abcd"  # what a run killed while writing leaves
  shutil.copytree(output, killed)
  lookalike = tmp_path / ".out.partial-89abcdef"  # named like one, but holding a file of the user's
  lookalike.mkdir()
  (lookalike / "notes.txt").write_text("mine")
  (output / "000001.png").write_bytes(b"stale")
  before = snapshot(tmp_path)

  second = in_process(capfd, "infer.py", *args, "--overwrite")
  assert second.returncode == 0, second.stderr
  assert (output / "000001.png").read_bytes() != b"stale" and len(list(output.glob("*.png"))) == 5
  assert not killed.exists() and (lookalike / "notes.txt").read_text() == "mine"
  assert f"warning: {lookalike}: left in place" in second.stderr
  assert_kept({name: data for name, data in before.items() if not name.startswith((".out.partial-0", "out/"))},
              tmp_path)


def _cut_short_mp4(path):
  """An .mp4 of 9 frames of 16x16 whose index comes first (faststart) and whose last frames' data is missing: the file
  ends in the middle of the 5th frame's data, so 4 of its 9 frames decode."""
  frames = np.ascontiguousarray(video.read_video(CLIP)[0][:, :16, :16])
  whole = path.with_name("whole.mp4")
  with av.open(str(whole), "w", format="mp4", options={"movflags": "faststart"}) as container:
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt, stream.options = 16, 16, "yuv420p", {"g": "1"}  # all key frames
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  with av.open(str(whole)) as container:
    packets = sorted((packet.pts, packet.pos, packet.size) for packet in container.demux(container.streams.video[0])
                     if packet.size)
  assert len(packets) == 9
  _, position, size = packets[4]
  path.write_bytes(whole.read_bytes()[:position + size // 2])
  whole.unlink()
  return path


def test_a_cut_short_video_is_said_with_both_counts(tmp_path, capfd):
  source = _cut_short_mp4(tmp_path / "cut.mp4")
  # 4 frames of 16x16 at --space-scale 1: the program of tests/test_faults.py's frame folders
  result = in_process(capfd, "infer.py", "--input", source, "--output", tmp_path / "out", "--space-scale", "1")
  assert result.returncode == 0, result.stderr
  assert f"warning: {source}: the file declares 9 frames but only 4 decode" in result.stderr
  assert len(list((tmp_path / "out").glob("*.png"))) == 2 * 4 - 1


def test_an_odd_size_mp4_is_said_and_reported_as_written(tmp_path, capfd):
  # 13x15 frames, which the model takes padded to 16x16: the program of the overwrite test above
  source = _png_folder(tmp_path / "in", video.read_video(CLIP)[0][:3, :15, :13])
  result = in_process(capfd, "infer.py", "--input", source, "--output", tmp_path / "out.mp4", "--space-scale", "1")
  assert result.returncode == 0, result.stderr
  assert "the 13x15 output is written at 14x16" in result.stderr
  assert "wrote" in result.stderr and "5 frames, 14x16" in result.stderr
  written = video.probe(tmp_path / "out.mp4")
  assert (written.frames, written.width, written.height) == (5, 14, 16)


def _damaged_checkpoint(tmp_path, damage):
  checkpoint = tmp_path / "checkpoint"
  shutil.copytree(TINY, checkpoint)
  data_files = sorted((checkpoint / "params").rglob("d/*"), key=lambda p: p.stat().st_size)
  if damage == "model.json":
    (checkpoint / "model.json").write_text('{"format": "diffst-jax/1", "model": ')
  elif damage == "truncated":
    data_files[-1].write_bytes(data_files[-1].read_bytes()[:100])
  else:
    data_files[-1].unlink()
  return checkpoint


def _bad_input(tmp_path, case):
  """{case: (tool, arguments, the start of the line, what else it says)} of bad inputs the tools name in one line."""
  out = tmp_path / "out"
  if case in ("corrupt model.json", "truncated params file", "missing params file"):
    checkpoint = _damaged_checkpoint(tmp_path, {"corrupt model.json": "model.json",
                                                "truncated params file": "truncated"}.get(case, "missing"))
    where = checkpoint / ("model.json" if case == "corrupt model.json" else "params")
    return ("infer.py", ["--input", CLIP, "--output", out, "--checkpoint", checkpoint], f"infer.py: error: {where}",
            "again")
  if case == "mixed frame sizes":
    frames = video.read_video(CLIP)[0]
    folder = _png_folder(tmp_path / "frames", [frames[0], frames[1]])
    Image.fromarray(frames[2][:40]).save(folder / "000002.png")
    return ("infer.py", ["--input", folder, "--output", out], f"infer.py: error: {folder / '000002.png'}",
            "is 64x40 pixels, but 000000.png")
  if case == "crf out of range":
    return ("infer.py", ["--input", CLIP, "--output", tmp_path / "o.mp4", "--crf", "60"], "infer.py: error: --crf 60",
            "0-51")
  if case == "truncated safetensors":
    source = tmp_path / "vae.safetensors"
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file({"encoder.conv1.weight": np.ones((96, 3, 3, 3, 3), np.float32)}, str(source))
    source.write_bytes(source.read_bytes()[:600])
    return ("convert_torch_weights.py", ["--vae", source, "--out", out], f"convert_torch_weights.py: error: {source}",
            "cut short")
  if case == "converter out is a file":
    (tmp_path / "taken").write_text("mine")
    taken = tmp_path / "taken"
    return ("convert_torch_weights.py", ["--vae", TINY, "--out", taken], f"convert_torch_weights.py: error: {taken}",
            "is a file")
  if case == "corrupt train config.json":
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"seed": ')
    return ("train.py", ["--config", ROOT / "configs" / "tiny_vae.py", "--workdir", workdir,
                         f"--config.data.videos={tmp_path}"], "train.py: error: " + str(workdir / "config.json"),
            "not valid JSON")
  if case == "sweep syntax error":
    (tmp_path / "sweep.py").write_text("def get_sweep():\n  return dict(config='c.py'\n")
    return ("diffst_jax.sweep", ["--sweep", tmp_path / "sweep.py", "--workdir", out],
            f"diffst_jax.sweep: error: {tmp_path / 'sweep.py'}:2: not valid Python", "fix the sweep file")
  if case == "sweep workdir of the user's":
    (tmp_path / "sweep.py").write_text("def get_sweep():\n  return dict(config='c.py', evaluate={'gt': 'g'})\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("mine")
    return ("diffst_jax.sweep", ["--sweep", tmp_path / "sweep.py", "--workdir", tmp_path / "mine"],
            f"diffst_jax.sweep: error: {tmp_path / 'mine'}: holds 'thesis.tex'", "use a new --workdir")
  if case == "evaluation clip too short":
    (tmp_path / "gt").mkdir()
    shutil.copy(CLIP, tmp_path / "gt" / "long.mp4")
    video.write_video(tmp_path / "gt" / "short.mp4", video.read_video(CLIP)[0][:2], 25)
    return ("evaluate.py", ["--gt", tmp_path / "gt", "--out", out, "--checkpoint", TINY, "--no-dists"],
            f"evaluate.py: error: {tmp_path / 'gt' / 'short.mp4'}: 2 frames", "at least 3 frames")
  if case == "evaluation out is a file":
    (tmp_path / "gt").mkdir()
    (tmp_path / "taken").write_text("mine")
    return ("evaluate.py", ["--gt", tmp_path / "gt", "--out", tmp_path / "taken", "--checkpoint", TINY],
            f"evaluate.py: error: {tmp_path / 'taken'}: exists and is a file", "new folder")
  raise AssertionError(case)


BAD_INPUTS = ["corrupt model.json", "truncated params file", "missing params file", "mixed frame sizes",
              "crf out of range", "truncated safetensors", "converter out is a file", "corrupt train config.json",
              "sweep syntax error", "sweep workdir of the user's", "evaluation clip too short",
              "evaluation out is a file"]
# Run as a subprocess of the tool: a damaged checkpoint (reads it abandons could print after the line), train.py
# (absl's flags and logging are the process's), and one case of each other tool, whose process prints the line alone.
AS_A_PROCESS = {"corrupt model.json", "truncated params file", "missing params file", "converter out is a file",
                "corrupt train config.json", "sweep syntax error", "sweep workdir of the user's",
                "evaluation out is a file"}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_bad_input_is_one_line_naming_the_file(tmp_path, capfd, case):
  tool, args, start, says = _bad_input(tmp_path, case)
  before, tiny_before = snapshot(tmp_path), snapshot(TINY)
  line = error_line(_run(tool, *args) if case in AS_A_PROCESS else in_process(capfd, tool, *args))
  assert line.startswith(start) and says in line, line
  assert_kept(before, tmp_path)
  assert set(snapshot(tmp_path)) == set(before)  # nothing written: no output, no partial, no run directory
  assert snapshot(TINY) == tiny_before
