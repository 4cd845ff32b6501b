"""Safe reading of PyTorch checkpoints: `.pth`/`.pt`/`.bin` (weights only), `.safetensors` (one file or shards),
and diffusers model directories. Tensors come back as numpy arrays (bfloat16 as ml_dtypes.bfloat16).

torch is imported only here and only when a torch file (.pth, .pt, .bin, .ckpt) is read; safetensors files are read
without it.
"""

import collections.abc
import hashlib
import json
import pathlib
from typing import Any

import ml_dtypes
import numpy as np

from diffst_jax.io import paths

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
  """A numpy view of a CPU tensor; bfloat16 becomes ml_dtypes.bfloat16 (numpy has none), without a float32 copy."""
  import torch  # pylint: disable=import-outside-toplevel

  tensor = tensor.detach().cpu()
  if tensor.dtype == torch.bfloat16:
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()


def _read_torch_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  state = _load_torch(path)
  import torch  # pylint: disable=import-outside-toplevel  # there: _load_torch has imported it
  for wrapper in ("state_dict", "params"):  # training checkpoints; BasicSR's released weights
    if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
      state = state[wrapper]
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise CheckpointError(f"{path}: expected a state dict of tensors")
  return {k: _to_numpy(v) for k, v in state.items()}


def _load_torch(path: pathlib.Path):
  """What a weights-only `torch.load` gives for `path` (memory-mapped where the file allows)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise CheckpointError(f"{path}: reading a torch checkpoint needs torch; pip install 'diffst-jax[torch]'") from e
  try:
    try:
      state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
      if "mmap" not in str(e):
        raise
      state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mapped
  except Exception as e:  # torch raises many types for corrupt or unsafe files
    raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint ({type(e).__name__}: {e})") from e
  return state


def read_tensor(path: str | pathlib.Path) -> np.ndarray:
  """The one tensor a file holds: `.npy`, `.safetensors` with one tensor, or a weights-only torch file of a tensor
  or a dict of one tensor."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  if path.suffix == ".npy":
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise CheckpointError(f"{path}: not a readable .npy array ({e})") from e
  if path.suffix in TORCH_SUFFIXES:
    loaded = _load_torch(path)
    import torch  # pylint: disable=import-outside-toplevel  # there: _load_torch has imported it
    if isinstance(loaded, torch.Tensor):
      return _to_numpy(loaded)
    tensors = loaded
  elif path.suffix == ".safetensors":
    tensors = _SafetensorsFile(path)
  else:
    raise CheckpointError(f"{path}: unknown file type {path.suffix!r}; expected .npy, .safetensors or one of "
                          f"{TORCH_SUFFIXES}")
  if not isinstance(tensors, collections.abc.Mapping) or len(tensors) != 1:
    count = len(tensors) if isinstance(tensors, collections.abc.Mapping) else type(tensors).__name__
    raise CheckpointError(f"{path}: expected one tensor, found {count}")
  (tensor,) = tensors.values()
  return tensor if isinstance(tensor, np.ndarray) else _to_numpy(tensor)


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
                       "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "I64": np.int64,
                       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


class _SafetensorsFile(collections.abc.Mapping):
  """The tensors of one safetensors file as numpy arrays mapped from disk, read without torch or the safetensors
  package (the format is an 8-byte little-endian header size, a JSON header of dtype, shape and byte offsets per
  tensor, then the bytes); bfloat16 and float8 come back as ml_dtypes arrays."""

  def __init__(self, path: pathlib.Path):
    try:
      with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        data_start = 8 + header_size
        if header_size < 2 or data_start > path.stat().st_size:
          raise ValueError(f"a header of {header_size} bytes in a file of {path.stat().st_size}")
        header = json.loads(f.read(header_size))
      self._entries = {name: self._entry(name, entry, data_start, path.stat().st_size)
                       for name, entry in header.items() if name != "__metadata__"}
    except (OSError, ValueError, TypeError, KeyError) as e:
      raise CheckpointError(f"{path}: not a readable safetensors file, damaged or cut short ({e}); download or copy "
                            "it again") from e
    self._path = path

  @staticmethod
  def _entry(name: str, entry: dict, data_start: int, file_size: int) -> tuple[np.dtype, tuple[int, ...], int]:
    dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
    shape = tuple(int(size) for size in entry["shape"])
    begin, end = (data_start + int(offset) for offset in entry["data_offsets"])
    if end - begin != int(np.prod(shape)) * dtype.itemsize or end > file_size:
      raise ValueError(f"tensor {name}: {end - begin} bytes for shape {shape} of {entry['dtype']}")
    return dtype, shape, begin

  def __getitem__(self, key: str) -> np.ndarray:
    dtype, shape, offset = self._entries[key]
    if not np.prod(shape):
      return np.zeros(shape, dtype)
    return np.memmap(self._path, dtype, "r", offset, shape)

  def __iter__(self):
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)


def weight_files(path: pathlib.Path) -> list[pathlib.Path]:
  """The weight files of a source: the file itself, the shards an index .json names, or a directory's
  safetensors (else torch .bin) files."""
  if path.is_file() and path.name.endswith(".index.json"):
    try:
      shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{path}: not a safetensors index (no weight_map)") from e
    return [paths.inside(path.parent, shard, path) for shard in shards]
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such file or directory")
  files = sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.suffix in TORCH_SUFFIXES)
  if not files:
    raise CheckpointError(f"{path}: the directory holds no .safetensors or torch weight files")
  return files


class StateDict(collections.abc.Mapping):
  """The tensors of all weight files of a source as numpy arrays, read lazily (safetensors) or memory-mapped
  (torch files), so converting holds about one tensor of the source in memory at a time."""

  def __init__(self, path: str | pathlib.Path):
    self._parts: dict[str, collections.abc.Mapping] = {}
    for file in weight_files(pathlib.Path(path)):
      if file.suffix == ".safetensors":
        part = _SafetensorsFile(file)
      elif file.suffix in TORCH_SUFFIXES:
        part = _read_torch_file(file)
      else:
        raise CheckpointError(f"{file}: unknown weight file type; expected .safetensors or one of {TORCH_SUFFIXES}")
      for key in part:
        if key in self._parts:
          raise CheckpointError(f"{file}: key {key!r} also appears in another shard")
        self._parts[key] = part

  def __getitem__(self, key: str) -> np.ndarray:
    return self._parts[key][key]

  def __iter__(self):
    return iter(self._parts)

  def __len__(self) -> int:
    return len(self._parts)


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
