"""Computes the empty-prompt embedding a DiffST's DiT attends to (`init.null_context`) from a local umT5 encoder
checkpoint, as Wan2.1 encodes the prompt "" (Wan2.1 `t5.py`): the tokenizer gives the end-of-sequence token alone
(umT5's id 1; the padding it adds is masked out), and the encoder's output row for it is the embedding. Wan2.1 then
zero-pads it to 512 rows, which `init.null_context` does when it loads the file.

  python tools/empty_prompt_embedding.py --t5 Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth --out empty_prompt.npy
  python tools/empty_prompt_embedding.py --t5 umt5-xxl-encoder/ --out empty_prompt.npy   # a transformers directory
  python train.py --config configs/wan21_1_3b.py --config.init.null_context=empty_prompt.npy ...

--t5: Wan2.1's umT5 encoder file (`.pth`, keys `token_embedding`, `blocks.N...`), or a transformers UMT5 encoder
directory (config.json and weights, keys `encoder.block.N...`). --out: a new `.npy` file, (1, text_dim) float32.
Reading a `.pth` needs the torch extra. The one-token sequence needs no attention scores: its only key is itself.
"""

import argparse
import json
import pathlib
import re
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli  # noqa: E402
from diffst_jax.convert import torch_io  # noqa: E402
from diffst_jax.io import outputs  # noqa: E402

EOS_ID = 1  # umT5's end-of-sequence token
EPS = 1e-6  # T5's RMS norm epsilon, Wan2.1's and transformers' default
# Each role's key in Wan2.1's layout and in transformers' (`{i}`: the block).
LAYOUTS = {
    "wan": {"embedding": "token_embedding.weight", "norm1": "blocks.{i}.norm1.weight",
            "v": "blocks.{i}.attn.v.weight", "o": "blocks.{i}.attn.o.weight", "norm2": "blocks.{i}.norm2.weight",
            "gate": "blocks.{i}.ffn.gate.0.weight", "up": "blocks.{i}.ffn.fc1.weight",
            "down": "blocks.{i}.ffn.fc2.weight", "final_norm": "norm.weight"},
    "transformers": {"embedding": "shared.weight", "norm1": "encoder.block.{i}.layer.0.layer_norm.weight",
                     "v": "encoder.block.{i}.layer.0.SelfAttention.v.weight",
                     "o": "encoder.block.{i}.layer.0.SelfAttention.o.weight",
                     "norm2": "encoder.block.{i}.layer.1.layer_norm.weight",
                     "gate": "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight",
                     "up": "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight",
                     "down": "encoder.block.{i}.layer.1.DenseReluDense.wo.weight",
                     "final_norm": "encoder.final_layer_norm.weight"},
}


def layout_of(state_dict) -> str:
  for name, keys in LAYOUTS.items():
    if keys["embedding"] in state_dict or (name == "transformers" and "encoder.embed_tokens.weight" in state_dict):
      return name
  raise ValueError(f"not a umT5 encoder: none of {', '.join(k['embedding'] for k in LAYOUTS.values())} in its keys")


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
  return weight * (x / np.sqrt(np.mean(x * x) + eps))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def encode_token(state_dict, token: int = EOS_ID, eps: float = EPS) -> np.ndarray:
  """The umT5 encoder's output (text_dim,) float32 for the sequence of `token` alone."""
  keys = LAYOUTS[layout_of(state_dict)]
  weight = lambda role, i=None: np.asarray(state_dict[keys[role].format(i=i)], np.float32)  # noqa: E731
  block = re.compile(keys["norm1"].format(i=r"(\d+)").replace(".", r"\."))
  layers = sorted(int(m.group(1)) for m in map(block.fullmatch, state_dict) if m)
  if layers != list(range(len(layers))) or not layers:
    raise ValueError(f"umT5 encoder blocks {layers}: expected 0, 1, ..., N-1")
  embedding = state_dict.get(keys["embedding"])
  if embedding is None:
    embedding = state_dict["encoder.embed_tokens.weight"]
  x = np.asarray(embedding[token], np.float32)
  for i in layers:
    x = x + weight("o", i) @ (weight("v", i) @ _rms_norm(x, weight("norm1", i), eps))
    h = _rms_norm(x, weight("norm2", i), eps)
    x = x + weight("down", i) @ ((weight("up", i) @ h) * _gelu_tanh(weight("gate", i) @ h))
  return _rms_norm(x, weight("final_norm"), eps).astype(np.float32)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--t5", required=True, help="umT5 encoder: Wan2.1's .pth or a transformers directory")
  parser.add_argument("--out", required=True, help="new .npy file for the (1, text_dim) embedding")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  return cli.run("empty_prompt_embedding.py", lambda: write_embedding(pathlib.Path(args.t5), pathlib.Path(args.out)),
                 args.debug)


def write_embedding(source: pathlib.Path, out: pathlib.Path) -> str:
  """Computes the empty prompt's embedding from the umT5 encoder at `source` into the new file `out`."""
  if out.suffix != ".npy":
    raise ValueError(f"--out {out}: name a .npy file")
  out = outputs.check_destination(out, [source])
  if out.exists():
    raise ValueError(f"--out {out}: already exists; choose a new file")
  config = source / "config.json"
  settings = json.loads(config.read_text()) if config.is_file() else {}
  try:
    embedding = encode_token(torch_io.StateDict(source), settings.get("eos_token_id", EOS_ID),
                             settings.get("layer_norm_epsilon", EPS))
  except KeyError as e:
    raise ValueError(f"--t5 {source}: has no tensor {e}; not a whole umT5 encoder") from e
  with outputs.writing(out, None) as partial:
    np.save(partial, embedding[None])
  return f"wrote {out}: the empty prompt's umT5 embedding, shape (1, {embedding.shape[0]}), float32"


if __name__ == "__main__":
  sys.exit(main())
