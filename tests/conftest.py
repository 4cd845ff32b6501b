"""Test set-up: 8 simulated CPU devices (set before jax is imported), float32, no network."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["HF_HUB_OFFLINE"] = "1"

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_config(name: str, arg: str | None = None):
  """`get_config(arg)` of configs/<name>.py."""
  from diffst_jax.train import defaults  # pylint: disable=import-outside-toplevel

  return defaults.load_config_file(ROOT / "configs" / f"{name}.py", arg)


@pytest.fixture(scope="session")
def tiny_config():
  """The tiny model config (configs/tiny.py's `model` section)."""
  return load_config("tiny").model


def rbg_rngs(seed: int):
  """Rngs on the "rbg" generator: random initialization compiles ~4x faster than with threefry on CPU."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  return nnx.Rngs(jax.random.key(seed, impl="rbg"))
