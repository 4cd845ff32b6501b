"""Safe reading of PyTorch checkpoints: `.pth`/`.pt`/`.bin` (weights only), `.safetensors` (one file or shards),
and diffusers model directories. Tensors come back as numpy arrays (bfloat16 and float16 as float32).

torch is imported only here and only when a torch file is read; safetensors files need the `safetensors` package.
"""

import hashlib
import json
import pathlib
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class CheckpointError(ValueError):
  """A checkpoint that cannot be converted: unreadable, or with an unmapped, missing or misshaped key."""


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 24), b""):
      digest.update(block)
  return digest.hexdigest()


def _to_numpy(tensor) -> np.ndarray:
  import torch  # pylint: disable=import-outside-toplevel

  if tensor.dtype in (torch.bfloat16, torch.float16):
    tensor = tensor.float()
  return tensor.detach().cpu().numpy()


def _read_torch_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise CheckpointError(f"{path}: reading a torch checkpoint needs torch; pip install 'diffst-jax[torch]'") from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or unsafe files
    raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint ({type(e).__name__}: {e})") from e
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise CheckpointError(f"{path}: expected a state dict of tensors")
  return {k: _to_numpy(v) for k, v in state.items()}


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise CheckpointError(f"{path}: reading safetensors needs the safetensors package; "
                          "pip install 'diffst-jax[torch]'") from e
  out = {}
  try:
    with safe_open(path, framework="pt") as f:
      for key in f.keys():
        out[key] = _to_numpy(f.get_tensor(key))
  except (OSError, ValueError, RuntimeError) as e:
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
  return out


def weight_files(path: pathlib.Path) -> list[pathlib.Path]:
  """The weight files of a source: the file itself, or a directory's safetensors (else torch .bin) files."""
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such file or directory")
  files = sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.suffix in TORCH_SUFFIXES)
  if not files:
    raise CheckpointError(f"{path}: the directory holds no .safetensors or torch weight files")
  return files


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a weight file or directory, merged; a key present in two shards is an error."""
  state: dict[str, np.ndarray] = {}
  for file in weight_files(pathlib.Path(path)):
    if file.suffix == ".safetensors":
      part = _read_safetensors(file)
    elif file.suffix in TORCH_SUFFIXES:
      part = _read_torch_file(file)
    else:
      raise CheckpointError(f"{file}: unknown weight file type; expected .safetensors or one of {TORCH_SUFFIXES}")
    for key in part:
      if key in state:
        raise CheckpointError(f"{file}: key {key!r} also appears in another shard")
    state.update(part)
  return state


def read_diffusers_config(path: str | pathlib.Path) -> dict[str, Any] | None:
  """The config.json of a diffusers model directory, or None for a single file or a directory without one."""
  config = pathlib.Path(path) / "config.json"
  if not config.is_file():
    return None
  try:
    return json.loads(config.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config}: not valid JSON ({e})") from e


def source_hashes(path: str | pathlib.Path) -> dict[str, str]:
  """sha256 of every weight file of a source, by file name."""
  return {f.name: sha256(f) for f in weight_files(pathlib.Path(path))}
