"""The empty-prompt text embedding the DiT's cross-attention reads (`init.null_context`).

Wan2.1 encodes a prompt with umT5, keeps the rows of its real tokens (for "" one row, the end-of-sequence token's)
and zero-pads them to the DiT's text length, 512 (Wan2.1 `t5.py` T5EncoderModel, `model.py` WanModel.forward);
DOVE loads such a precomputed empty-prompt embedding. tools/empty_prompt_embedding.py computes it from a umT5
checkpoint.
"""

import pathlib

import ml_dtypes
import numpy as np

from diffst_jax.convert import torch_io


def load(path: str | pathlib.Path, context_tokens: int, text_dim: int) -> np.ndarray:
  """The embedding in `path` (.npy, .safetensors or weights-only torch file; (L, text_dim) or (1, L, text_dim),
  L <= context_tokens, floating point), zero-padded as Wan pads to (1, context_tokens, text_dim) float32."""
  embedding = torch_io.read_tensor(path)
  shape = tuple(embedding.shape)
  if not (np.issubdtype(embedding.dtype, np.floating) or embedding.dtype == ml_dtypes.bfloat16):
    raise ValueError(f"init.null_context = {path}: holds {embedding.dtype} values; expected floating point (an "
                     "embedding from tools/empty_prompt_embedding.py)")
  if embedding.ndim == 3 and embedding.shape[0] == 1:
    embedding = embedding[0]
  if embedding.ndim != 2 or embedding.shape[1] != text_dim or not 1 <= embedding.shape[0] <= context_tokens:
    raise ValueError(f"init.null_context = {path}: shape {shape}; expected "
                     f"(L, {text_dim}) or (1, L, {text_dim}) with 1 <= L <= {context_tokens} (model.context_tokens, "
                     "model.dit.text_dim)")
  padded = np.zeros((1, context_tokens, text_dim), np.float32)
  padded[0, :len(embedding)] = embedding.astype(np.float32)
  return padded
