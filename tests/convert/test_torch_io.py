"""Our safetensors reader (no torch, no safetensors package) against the safetensors package's own writer and
torch reader: every dtype a checkpoint uses, bit for bit; a damaged file is a CheckpointError."""

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffst_jax.convert import torch_io


def test_reads_what_safetensors_writes_bit_for_bit(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"w.f32": torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float32)),
             "w.bf16": torch.from_numpy(rng.standard_normal((4, 2)).astype(np.float32)).bfloat16(),
             "w.f16": torch.from_numpy(rng.standard_normal((7,)).astype(np.float16)),
             "steps": torch.arange(6, dtype=torch.int64).reshape(2, 3), "empty": torch.zeros((0, 4))}
  path = tmp_path / "model.safetensors"
  save_file(tensors, path, metadata={"format": "pt"})
  expected = load_file(path)
  got = torch_io.StateDict(path)
  assert set(got) == set(expected)
  for name, tensor in expected.items():
    array = np.asarray(got[name])
    assert array.shape == tuple(tensor.shape)
    if tensor.dtype == torch.bfloat16:
      assert array.dtype == ml_dtypes.bfloat16
      np.testing.assert_array_equal(array.view(np.int16), tensor.view(torch.int16).numpy())
    else:
      np.testing.assert_array_equal(array, tensor.numpy())
      assert array.dtype == tensor.numpy().dtype


@pytest.mark.parametrize("damage", ["cut", "header"])
def test_a_damaged_file_is_a_checkpoint_error(tmp_path, damage):
  path = tmp_path / "model.safetensors"
  save_file({"w": torch.ones((64, 64))}, path)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2] if damage == "cut" else data[:8] + b"{not json" + data[17:])
  with pytest.raises(torch_io.CheckpointError, match="not a readable safetensors file"):
    torch_io.StateDict(path)
