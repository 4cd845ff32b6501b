"""Test set-up: 8 simulated CPU devices (set before jax is imported), float32, no network."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["HF_HUB_OFFLINE"] = "1"
# One persistent compilation cache per test run, shared by the xdist workers: tests that compile the same program
# (the tiny model at the same shapes) compile it once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"diffst_jax_test_xla_{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # as the commands (backend.py)

import importlib  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def coordinator_address() -> str:
  """localhost and a free port, for the coordinator of a multi-process test run."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return f"localhost:{s.getsockname()[1]}"


def load_config(name: str, arg: str | None = None):
  """`get_config(arg)` of configs/<name>.py."""
  from diffst_jax import config_files  # pylint: disable=import-outside-toplevel

  return config_files.load(ROOT / "configs" / f"{name}.py", arg)


@pytest.fixture(scope="session")
def tiny_config():
  """The tiny model config (configs/tiny.py's `model` section)."""
  return load_config("tiny").model


def rbg_rngs(seed: int):
  """Rngs on the "rbg" generator: random initialization compiles ~4x faster than with threefry on CPU."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
  """Every file under `root` (relative path -> bytes): what a command must leave as it was."""
  return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def assert_kept(before: dict[str, bytes], root: pathlib.Path) -> None:
  """Every file of the `before` snapshot of `root` still exists with the same bytes."""
  after = snapshot(root)
  missing = sorted(set(before) - set(after))
  changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
  assert not missing and not changed, f"missing: {missing}, changed: {changed}"


def error_line(result) -> str:
  """The one line a failed command printed (stdout and stderr together), after checking there is just one."""
  lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
  assert result.returncode != 0 and len(lines) == 1, (result.returncode, result.stdout + result.stderr)
  assert "Traceback" not in lines[0]
  return lines[0]


@pytest.fixture(scope="session")
def loaded() -> dict:
  """The weights "alex", "vgg" (LPIPS) or "dists", each loaded on first use."""
  from diffst_jax.models import perceptual  # pylint: disable=import-outside-toplevel

  cache = {}

  def load(weights: str):
    if weights not in cache:
      cache[weights] = perceptual.load_dists() if weights == "dists" else perceptual.load_lpips(weights)
    return cache[weights]

  return load


TOOLS = {"infer.py": "diffst_jax.commands.upscale", "evaluate.py": "diffst_jax.commands.evaluate",
         "convert_torch_weights.py": "diffst_jax.commands.convert"}
QUIET_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def in_process(capfd, script: str, *args) -> subprocess.CompletedProcess:
  """`script` (a key of TOOLS) run as `python SCRIPT ARGS` runs it, but in this process, through the `main(argv)` the
  script calls: its exit code (a SystemExit's too, e.g. argparse's 2), and on stdout and stderr what a process of its
  own would print there: what was written (Python's streams and file descriptors 1 and 2, `capfd`), each Python
  warning a fresh interpreter shows (once per place; not the kinds it ignores by default) and the log records it
  would print (WARNING and above)."""
  import jax  # pylint: disable=import-outside-toplevel

  main = importlib.import_module(TOOLS[script]).main
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  logging.getLogger().addHandler(handler)
  min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs  # the commands set their own
  capfd.readouterr()
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      try:
        code = main(list(map(str, args)))
      except SystemExit as exit_:
        code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
  finally:
    logging.getLogger().removeHandler(handler)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
  out, err = capfd.readouterr()
  shown = {(str(w.message), w.category, w.filename, w.lineno): w for w in caught
           if not issubclass(w.category, QUIET_BY_DEFAULT)}
  err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown.values())
  err += "".join(f"{record.levelname}:{record.name}:{record.getMessage()}\n" for record in records)
  return subprocess.CompletedProcess([script, *map(str, args)], code, out, err)
