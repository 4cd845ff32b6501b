"""train.py end to end on a real clip: losses logged, SIGTERM saves and stops, resuming reproduces the losses (and
the parameters' moving average) of an uninterrupted run exactly (on another mesh: to fp32 rounding), an export cut
short is written again, and bad data folders fail with one line."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from diffst_jax import config_files
from diffst_jax.convert.vae import load_vae
from diffst_jax.models import diffst

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSET = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"
STEPS = 6
FLAGS = ["--config", str(ROOT / "configs" / "tiny_vae.py"), "--config.data.batch_size=1", "--config.log_every=1",
         "--config.checkpoint_every=2",
         f"--config.stages.stage1.steps={STEPS}", "--config.stages.stage1.warmup_steps=2",
         "--config.stages.stage2.steps=0", "--config.conv_implementation=xla",
         "--config.stages.stage1.loss.perceptual=0.0", "--config.stages.stage1.loss.consistency=1.0",
         "--config.model.vae.num_res_blocks=1"]  # what is tested is the loop: the smallest VAE compiles fastest


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  folder = tmp_path_factory.mktemp("videos")
  shutil.copy(ASSET, folder / ASSET.name)
  return folder


def _env(tmp: pathlib.Path) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp / "xla_cache")  # shared, so the later runs skip compiling
  return env


def _train(workdir, videos, env, extra=(), **kwargs):
  command = [sys.executable, str(ROOT / "train.py"), *FLAGS, f"--workdir={workdir}", f"--config.data.videos={videos}",
             *extra]
  return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _losses(workdir: pathlib.Path) -> dict[int, float]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return {record["step"]: record["loss"] for record in map(json.loads, lines)}


def _parameters(tree) -> dict[str, np.ndarray]:
  """"a/0/b" -> array, without nnx's "value" level, of a model's or a raw checkpoint's parameter tree (whose list
  indices are strings)."""
  keys = lambda path: [str(getattr(key, "key", getattr(key, "idx", key))) for key in path]  # noqa: E731
  return {"/".join(k for k in keys(path) if k != "value"): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _uninterrupted_run(videos, tmp_path, env, extra=()) -> dict[int, float]:
  full = _train(tmp_path / "full", videos, env, extra)
  output, _ = full.communicate(timeout=600)
  assert full.returncode == 0, output
  return _losses(tmp_path / "full")


def _tensorboard_images(workdir: pathlib.Path) -> dict[int, tuple[int, int]]:
  """step -> (height, width) of the images in a run's TensorBoard event files (TFRecords of Event protos)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel

  images = {}
  for path in (workdir / "tensorboard").glob("events.out.tfevents.*"):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], "little")
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        if value.HasField("image"):
          images[event.step] = (value.image.height, value.image.width)
  return images


@pytest.mark.slow  # 2 min on 2 cores; the default run stops, resumes and exports the real recipe at tiny widths
# (tests/train/test_real_recipe.py, work directory as a file:// URI) and a two-process run (test_multihost_stop.py)
def test_sigterm_then_resume_reproduces_an_uninterrupted_run(videos, tmp_path):
  env, average = _env(tmp_path), ["--config.optimizer.ema_decay=0.5"]
  expected = _uninterrupted_run(videos, tmp_path, env, average + ["--config.strip_every=3"])
  assert sorted(expected) == list(range(1, STEPS + 1))
  assert all(loss == loss and loss > 0 for loss in expected.values())  # finite (NaN != NaN)
  assert (tmp_path / "full" / "model" / "model.json").is_file()
  assert (tmp_path / "full" / "loss.png").stat().st_size > 10_000  # the loss curves, plotted at the end
  # a strip every 3 steps: the 32x32 crop's reconstruction beside it at 3 frames, under a one-line header
  strip = (12 + 4 + 3 * 32 + 2 * 4, 36 + 2 * 32 + 4)
  assert _tensorboard_images(tmp_path / "full") == {3: strip, 6: strip}

  # The interrupted run names its folders as file:// URIs, as a run in object storage would (gs://, io/paths.py).
  workdir = tmp_path / "interrupted"
  workdir_uri, videos_uri = f"file://{workdir}", f"file://{videos}"
  interrupted = _train(workdir_uri, videos_uri, env, average)
  while not (workdir / "metrics.jsonl").exists() or not _losses(workdir):
    assert interrupted.poll() is None, interrupted.stdout.read()
    time.sleep(0.05)
  interrupted.send_signal(signal.SIGTERM)
  output, _ = interrupted.communicate(timeout=300)
  assert interrupted.returncode == 0, output
  stopped_at = max(_losses(workdir))
  assert stopped_at < STEPS and "run the same command again to resume" in output
  assert not (workdir / "model").exists()

  # --export_to writes the model of the latest checkpoint (the moving average) without training on, and leaves the
  # run's files (config.json, metrics, checkpoints) as they are
  recorded_config = (workdir / "config.json").read_bytes()
  export = subprocess.run([sys.executable, str(ROOT / "train.py"), *FLAGS, *average, f"--workdir={workdir_uri}",
                           f"--config.data.videos={videos_uri}", f"--export_to={tmp_path / 'exported'}"],
                          env=env, capture_output=True, text=True, check=False)
  assert export.returncode == 0 and f"wrote the model of step {stopped_at}" in export.stdout, export.stderr
  at_stop, _ = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(stopped_at) / "state")
  exported_early = _parameters(nnx.to_pure_dict(nnx.state(load_vae(tmp_path / "exported"))))
  assert all(np.array_equal(exported_early[k], v) for k, v in _parameters(at_stop["opt_state"][2]["average"]).items())
  assert max(_losses(workdir)) == stopped_at and not (workdir / "model").exists()
  assert (workdir / "config.json").read_bytes() == recorded_config

  resumed = _train(workdir_uri, videos_uri, env, average)
  output, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, output
  assert f"at step {stopped_at}" in output
  assert _losses(workdir) == expected  # bit-identical losses: parameters, optimizer and data position restored

  # The exported model is the parameters' moving average (kept in the optimizer state after Adam's), not the last
  # parameters, and the resumed run's is bit-identical to the uninterrupted run's.
  last, _ = ocp.StandardCheckpointer().restore(tmp_path / "full" / "checkpoints" / str(STEPS) / "state")
  exported = _parameters(nnx.to_pure_dict(nnx.state(load_vae(tmp_path / "full" / "model"))))
  assert exported.keys() == _parameters(last["trainable"]).keys()
  assert all(np.array_equal(exported[k], v) for k, v in _parameters(last["opt_state"][2]["average"]).items())
  assert not all(np.array_equal(exported[k], v) for k, v in _parameters(last["trainable"]).items())
  resumed_export = _parameters(nnx.to_pure_dict(nnx.state(load_vae(workdir / "model"))))
  assert all(np.array_equal(exported[k], v) for k, v in resumed_export.items())

  # A run killed while exporting leaves model/ without model.json; the same command writes the model again.
  (tmp_path / "full" / "model" / "model.json").unlink()
  again = _train(tmp_path / "full", videos, env, average)
  output, _ = again.communicate(timeout=600)
  assert again.returncode == 0 and "the export of the trained model was cut short" in output, output
  rewritten = _parameters(nnx.to_pure_dict(nnx.state(load_vae(tmp_path / "full" / "model"))))
  assert rewritten.keys() == exported.keys() and all(np.array_equal(exported[k], v) for k, v in rewritten.items())


@pytest.mark.slow  # two more train.py runs (2 min on 2 cores): `pytest -m slow`
def test_a_checkpoint_continues_on_another_mesh(videos, tmp_path):
  env = _env(tmp_path)
  expected = _uninterrupted_run(videos, tmp_path, env)
  # The one-device checkpoint of step 4 continues on a 4-device mesh (rows of each clip spread over `context`).
  other_mesh = tmp_path / "other_mesh"
  shutil.copytree(tmp_path / "full", other_mesh, ignore=shutil.ignore_patterns("6", "model", "metrics.jsonl"))
  four_devices = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  resumed = _train(other_mesh, videos, four_devices, extra=["--mesh", "context=4"])
  output, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0 and "at step 4" in output, output
  continued = _losses(other_mesh)
  assert sorted(continued) == [5, 6]
  np.testing.assert_allclose([continued[5], continued[6]], [expected[5], expected[6]], rtol=1e-5)


def test_changed_config_on_resume_is_refused(videos, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"seed": 123}))
  result = _train(workdir, videos, _env(tmp_path))
  output, _ = result.communicate(timeout=300)
  assert result.returncode == 2
  assert output.strip().splitlines()[-1].startswith("train.py: error: ") and "use a new --workdir" in output


def test_a_setting_added_since_the_run_started_resumes_at_its_default(tmp_path):
  from diffst_jax.train import loop  # pylint: disable=import-outside-toplevel

  config = config_files.load(ROOT / "configs" / "tiny.py")
  recorded = json.loads(json.dumps(config.to_dict(), default=list))
  # as a run recorded before they existed
  del recorded["init"]["cfca"], recorded["stages"]["stage1"]["decay"], recorded["optimizer"]["ema_decay"]
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  loop._record_config(tmp_path, config)  # pylint: disable=protected-access
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  config.stages.stage1.decay = "cosine"
  with pytest.raises(ValueError, match=r"differs in stages.stage1.decay\)"):
    loop._record_config(tmp_path, config)  # pylint: disable=protected-access


def test_a_run_recorded_before_a_setting_that_changes_what_it_does_resumes_only_as_it_ran(tmp_path):
  """pixel_range, data.degradation and a stage's fresh_optimizer were added with defaults that change a run (DOVE's
  losses and degradations); a run recorded without them ran on [-1, 1], the earlier degradations, and never reset
  its optimizer, and resumes only so."""
  from diffst_jax.train import loop  # pylint: disable=import-outside-toplevel

  config = config_files.load(ROOT / "configs" / "wan21_1_3b.py")
  recorded = json.loads(json.dumps(config.to_dict(), default=list))
  del recorded["pixel_range"], recorded["data"]["degradation"], recorded["stages"]["stage2"]["fresh_optimizer"]
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  with pytest.raises(ValueError, match=r"differs in data.degradation, pixel_range, stages.stage2.fresh_optimizer\)"):
    loop._record_config(tmp_path, config)  # pylint: disable=protected-access
  config.pixel_range, config.data.degradation, config.stages.stage2.fresh_optimizer = "symmetric", "earlier", False
  loop._record_config(tmp_path, config)  # pylint: disable=protected-access


@pytest.mark.parametrize("make_folder, message", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: tmp, "no readable video"),
])
def test_bad_data_folder_is_one_line(tmp_path, make_folder, message):
  videos = make_folder(tmp_path / "videos_parent")
  (tmp_path / "videos_parent").mkdir()
  (tmp_path / "videos_parent" / "notes.txt").write_text("not a video")
  result = _train(tmp_path / "run", videos, _env(tmp_path))
  output, _ = result.communicate(timeout=300)
  assert result.returncode == 2, output
  lines = output.strip().splitlines()  # the error alone: no INFO logging of Orbax or JAX before it
  assert len(lines) == 1 and lines[0].startswith("train.py: error: ") and message in lines[0], output


def test_init_weights_come_from_config(tiny_config, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax.convert import dit as dit_convert  # pylint: disable=import-outside-toplevel
  from diffst_jax.convert import vae as vae_convert  # pylint: disable=import-outside-toplevel
  from diffst_jax.models.dit import WanDiT, WanDiTConfig  # pylint: disable=import-outside-toplevel
  from diffst_jax.models.vae import WanVAE, WanVAEConfig  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import tasks  # pylint: disable=import-outside-toplevel

  rngs = nnx.Rngs(jax.random.key(7, impl="rbg"))
  vae, dit = WanVAE(WanVAEConfig(**tiny_config.vae), rngs=rngs), WanDiT(WanDiTConfig(**tiny_config.dit), rngs=rngs)
  vae_convert.save(vae, tmp_path / "vae")  # our checkpoint, as train.py's autoencoder task writes it
  dit_convert.export_diffusers(dit, tmp_path / "dit")  # a diffusers directory, as released weights come
  config = config_files.load(ROOT / "configs" / "tiny.py")
  config.init.vae, config.init.dit = str(tmp_path / "vae"), str(tmp_path / "dit")
  model = tasks.get(config.task).build(config)

  def assert_parts_equal(model, parts):
    for part, expected in parts:
      got = jax.tree.leaves(nnx.state(getattr(model, part), nnx.Param))
      want = jax.tree.leaves(nnx.state(expected, nnx.Param))
      assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want)), part

  assert_parts_equal(model, (("vae", vae), ("dit", dit)))
  # A trained DiffST (train.py's model/, weights/tiny) gives its parts too.
  trained = diffst.init(diffst.DiffSTConfig.from_dict(config.model.to_dict()), seed=3)
  diffst.save(trained, tmp_path / "diffst")
  config.init.vae = config.init.dit = str(tmp_path / "diffst")
  model = tasks.get(config.task).build(config)
  assert_parts_equal(model, (("vae", trained.vae), ("dit", trained.dit)))
  fresh_cfca = jax.tree.leaves(nnx.state(model.cfca, nnx.Param))  # CFCA was not asked for: it is new
  assert not all(np.array_equal(f, t) for f, t in zip(fresh_cfca, jax.tree.leaves(nnx.state(trained.cfca, nnx.Param))))
  config.init.cfca = config.init.vrg = str(tmp_path / "diffst")  # fine-tuning a trained DiffST: all of it
  assert_parts_equal(tasks.get(config.task).build(config), [(part, getattr(trained, part)) for part in tasks.PARTS])
  config.init.vrg = str(tmp_path / "dit")
  with pytest.raises(ValueError, match="init.vrg = .* is not a trained DiffST"):
    tasks.get(config.task).build(config)
  config.init.vrg = str(tmp_path / "diffst")
  config.model.dit.text_dim, config.init.dit = 16, ""  # VRG's tokens are sized by the DiT's text_dim
  with pytest.raises(ValueError, match="init.vrg = .* has parameters shaped unlike model.vrg"):
    tasks.get(config.task).build(config)
  config.model.dit.text_dim, config.init.dit, config.init.cfca, config.init.vrg = 24, config.init.vae, "", ""

  config.model.dit.num_layers = 3
  with pytest.raises(ValueError, match=r"init.dit = .* \(differs in num_layers\)"):
    tasks.get(config.task).build(config)
  config.model.dit.num_layers, config.init.vae = 2, ""
  with pytest.raises(ValueError, match="needs trained VAE weights"):
    tasks.get(config.task).build(config)


def test_the_exported_model_records_its_training_clip_length(tmp_path):
  from diffst_jax.train import loop  # pylint: disable=import-outside-toplevel

  config = config_files.load(ROOT / "configs" / "tiny.py")
  model = diffst.init(diffst.DiffSTConfig.from_dict(config.model.to_dict()))
  loop._export(model, config, tmp_path / "model")  # pylint: disable=protected-access
  assert config.data.clip_frames == 9
  # infer.py's default chunk: the 5 odd frames of 9; no tile, so whole frames (as far as memory allows)
  assert diffst.trained_sizes(tmp_path / "model") == {"chunk_frames": 5}


def test_a_learning_rate_scale_for_a_part_the_run_does_not_train_is_named():
  from diffst_jax.parallel import rules  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.mesh import make_mesh  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel.plan import ExecutionPlan  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import loop, tasks  # pylint: disable=import-outside-toplevel

  config = config_files.load(ROOT / "configs" / "tiny_vae.py")
  config.optimizer.learning_rate_scale = {"cfca": 5.0}
  one_device = ExecutionPlan(make_mesh({"data": 1}, jax.devices()[:1]), rules.DEFAULT_RULES)
  model = tasks.get(config.task).abstract(config)  # shapes only, which make_program splits and does not change
  with pytest.raises(ValueError, match="names cfca, which this run does not train; the trained parts are decoder"):
    loop.make_program(config, model, one_device)
  config.optimizer.learning_rate_scale = {"decoder": 5.0}
  assert loop.make_program(config, model, one_device).tx is not None
