"""Work directories and data in object storage (io/paths.py): a gs:// bucket held in memory (fsspec's memory
filesystem registered for Google Cloud Storage) takes the run's files, metrics, TensorBoard events and loss curves;
its videos are copied to local disk and prepared there; file:// URIs are local paths. A Cloud Storage emulator on
localhost, reached through the real client (gcsfs), checks what an in-memory bucket cannot: object storage has no
folders."""

import json
import pathlib
import shutil
import socket
import subprocess
import sys

import fsspec
import ml_collections
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from diffst_jax.data import builder
from diffst_jax.io import checkpoint, outputs, paths
from diffst_jax.parallel import backend
from diffst_jax.train import curves, loop

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSET = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"


class _Bucket(MemoryFileSystem):
  protocol = ("gcs", "gs")
  store, pseudo_dirs = {}, [""]

  def __init__(self, *args, finalize_on_close=None, **kwargs):  # what epath passes gcsfs
    del finalize_on_close
    super().__init__(*args, **kwargs)


def _empty(filesystem) -> None:
  filesystem.store.clear()
  filesystem.pseudo_dirs[:] = [""]


@pytest.fixture
def bucket():
  """gs://bucket, empty, in memory."""
  previous = fsspec.registry.get("gcs")
  fsspec.register_implementation("gcs", _Bucket, clobber=True)
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  _empty(_Bucket)
  yield epath.Path("gs://bucket")
  _empty(_Bucket)
  if previous is not None:
    fsspec.register_implementation("gcs", previous, clobber=True)
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def test_paths_are_local_unless_they_name_object_storage(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve(f"file://{tmp_path}/run") == tmp_path / "run"
  assert paths.resolve("run") == tmp_path / "run" and paths.is_local(paths.resolve("run"))
  remote = paths.resolve("gs://bucket/run")
  assert isinstance(remote, epath.Path) and str(remote) == "gs://bucket/run" and not paths.is_local(remote)
  with pytest.raises(ValueError, match=r"ftp://host/run: unknown storage; expected a local path, or a URI starting "
                                       r"with file://, gs://, s3://, az://"):
    paths.resolve("ftp://host/run")


def test_a_remote_work_directory_takes_the_config_metrics_curves_and_tensorboard_events(bucket):
  workdir = paths.resolve("gs://bucket/run")
  workdir.mkdir(parents=True, exist_ok=True)
  config = ml_collections.ConfigDict({"seed": 1, "log_every": 1})
  loop._record_config(workdir, config)  # pylint: disable=protected-access
  assert json.loads((workdir / "config.json").read_text()) == {"seed": 1, "log_every": 1}
  config.seed = 2
  with pytest.raises(ValueError, match=r"gs://bucket/run holds a run with another config \(differs in seed\)"):
    loop._record_config(workdir, config)  # pylint: disable=protected-access

  logger = loop._Logger(workdir)  # pylint: disable=protected-access
  for step in (1, 2, 3):
    logger.write(step, {"loss": 1.0 / step, "loss_rec": 0.5 / step})
  logger.close()
  assert sorted(curves.read_metrics(workdir)) == [1, 2, 3]  # appended: the object rewritten whole each time
  events = list((workdir / "tensorboard").iterdir())
  assert len(events) == 1 and events[0].name.startswith("events.out.tfevents.") and events[0].stat().length > 100
  curves.plot_loss_curves([workdir], workdir / "loss.png")
  assert (workdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_remote_model_folder_is_checked_before_it_is_written(bucket):
  checkpoint.check_can_save("gs://bucket/model")  # missing: may be written
  (bucket / "model").mkdir(parents=True)
  (bucket / "model" / "notes.txt").write_text("the user's")
  with pytest.raises(outputs.OutputError, match=r"gs://bucket/model: the checkpoint directory is not empty"):
    checkpoint.check_can_save("gs://bucket/model")
  assert not checkpoint.is_incomplete("gs://bucket/model") and not checkpoint.is_checkpoint("gs://bucket/model")


def test_remote_videos_are_copied_to_local_disk_and_prepared_there(bucket, tmp_path, monkeypatch):
  monkeypatch.setattr(backend, "CACHE_DIR", tmp_path / "cache" / "diffst_jax")
  (bucket / "videos" / "street").mkdir(parents=True)
  (bucket / "videos" / "street" / ASSET.name).write_bytes(ASSET.read_bytes())
  config = ml_collections.ConfigDict({"data": {"videos": "gs://bucket/videos", "prepared": "", "clip_frames": 4}})

  prepared = loop._prepared_clips(config, paths.resolve("gs://bucket/run"))  # pylint: disable=protected-access
  assert paths.is_local(prepared) and prepared.is_relative_to(tmp_path / "cache" / "diffst_jax")
  copied = next(prepared.parent.rglob(ASSET.name))
  assert copied.read_bytes() == ASSET.read_bytes() and copied.parent.name == "street"
  clips = builder.load(prepared, 4)
  assert clips.info.metadata["videos"] == [f"street/{ASSET.name}"] and clips.info.splits["train"].num_examples == 2
  assert not (bucket / "run").exists()  # nothing of the clips is written to the bucket

  copied.write_bytes(b"cut short")  # a copy that is not whole is made again
  loop._prepared_clips(config, paths.resolve("gs://bucket/run"))  # pylint: disable=protected-access
  assert copied.read_bytes() == ASSET.read_bytes()

  config.data.prepared = "gs://bucket/clips"
  with pytest.raises(ValueError, match=r"data.prepared = gs://bucket/clips: must be a local folder"):
    loop._prepared_clips(config, paths.resolve("gs://bucket/run"))  # pylint: disable=protected-access


def test_tensorboard_writer_does_not_import_torch(tmp_path):
  probe = ("import sys\nfrom diffst_jax.io import tensorboard\n"
           "writer = tensorboard.summary_writer_class()(sys.argv[1])\n"
           "writer.add_scalar('loss', 1.0, 0)\nwriter.close()\nprint('torch' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "False"
  assert list(tmp_path.glob("events.out.tfevents.*"))


@pytest.fixture
def emulated_bucket(monkeypatch):
  """gs://diffst-test on a Google Cloud Storage emulator on localhost (gcp-storage-emulator), reached through the real
  client a user's run has (etils.epath -> gcsfs -> the JSON API), not an in-memory stand-in."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=import-outside-toplevel
  import gcsfs  # pylint: disable=import-outside-toplevel

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  server = create_server("localhost", port, in_memory=True, default_bucket="diffst-test")
  server.start()
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://localhost:{port}")
  gcsfs.GCSFileSystem.clear_instance_cache()
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  yield epath.Path("gs://diffst-test")
  server.stop()
  gcsfs.GCSFileSystem.clear_instance_cache()
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def test_a_real_bucket_client_takes_a_new_run_its_record_and_its_videos(emulated_bucket, tmp_path, monkeypatch):
  """In a bucket a folder exists only once something is written under it: a new --workdir is not a folder yet, and a
  walk names folders without the scheme. Both broke runs in object storage that the in-memory bucket let through."""
  monkeypatch.setattr(backend, "CACHE_DIR", tmp_path / "cache" / "diffst_jax")
  workdir = paths.resolve("gs://diffst-test/run")
  assert not workdir.exists() and paths.entries(workdir) == []
  config = ml_collections.ConfigDict({"seed": 1, "log_every": 1})
  loop._record_config(workdir, config)  # pylint: disable=protected-access
  assert json.loads((workdir / "config.json").read_text()) == {"seed": 1, "log_every": 1}
  loop._remove_if_no_checkpoint(workdir, None)  # a run that failed before its first checkpoint leaves nothing
  assert paths.entries(workdir) == [] and not workdir.exists()

  (emulated_bucket / "videos" / "street").mkdir(parents=True)
  (emulated_bucket / "videos" / "street" / ASSET.name).write_bytes(ASSET.read_bytes())
  assert paths.files_under(emulated_bucket / "videos") == [emulated_bucket / "videos" / "street" / ASSET.name]
  copied = paths.local_copy(emulated_bucket / "videos", tmp_path / "videos")
  assert (copied / "street" / ASSET.name).read_bytes() == ASSET.read_bytes()
