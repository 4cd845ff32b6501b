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
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pathlib  # noqa: E402
import socket  # noqa: E402

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
