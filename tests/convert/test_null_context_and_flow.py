"""init.null_context and init.flow: tools/empty_prompt_embedding.py against transformers' umT5 (both key layouts),
the embedding's file formats, shapes and errors, and a DiffST built and exported with both: the context zero-padded
as Wan2.1 pads it, the flow weights unchanged and frozen."""

import pathlib
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from diffst_jax import config_files
from diffst_jax.convert import null_context, spynet
from diffst_jax.models import diffst
from diffst_jax.models.flow import SpyNet
from diffst_jax.train import loop, tasks

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import empty_prompt_embedding  # noqa: E402  # pylint: disable=wrong-import-position

# Wan2.1 t5.py's names for transformers' UMT5 encoder weights (T5SelfAttention: norm1, attn, norm2, ffn with
# gate = GELU(Linear), fc1, fc2; per-block relative position embeddings, as umT5 has shared_pos=False).
WAN_NAMES = {"shared.weight": "token_embedding.weight", "encoder.final_layer_norm.weight": "norm.weight"}
WAN_BLOCK_NAMES = {"layer.0.layer_norm": "norm1", "layer.0.SelfAttention.q": "attn.q",
                   "layer.0.SelfAttention.k": "attn.k", "layer.0.SelfAttention.v": "attn.v",
                   "layer.0.SelfAttention.o": "attn.o",
                   "layer.0.SelfAttention.relative_attention_bias": "pos_embedding.embedding",
                   "layer.1.layer_norm": "norm2", "layer.1.DenseReluDense.wi_0": "ffn.gate.0",
                   "layer.1.DenseReluDense.wi_1": "ffn.fc1", "layer.1.DenseReluDense.wo": "ffn.fc2"}


def _wan_state_dict(model) -> dict:
  state = {}
  for key, value in model.state_dict().items():
    if key == "encoder.embed_tokens.weight":
      continue  # tied to shared.weight
    if key in WAN_NAMES:
      state[WAN_NAMES[key]] = value
      continue
    _, _, block, rest = key.split(".", 3)
    name, leaf = rest.rsplit(".", 1)
    state[f"blocks.{block}.{WAN_BLOCK_NAMES[name]}.{leaf}"] = value
  return state


@pytest.fixture(scope="module")
def umt5(tmp_path_factory):
  """A small random umT5 encoder saved both ways, and transformers' output for the empty prompt."""
  torch.manual_seed(0)
  config = transformers.UMT5Config(vocab_size=40, d_model=24, d_kv=6, d_ff=40, num_layers=3, num_heads=4,
                                   relative_attention_num_buckets=8, feed_forward_proj="gated-gelu")
  model = transformers.UMT5EncoderModel(config).eval()
  for param in model.parameters():  # away from the initialization's ones and zeros
    param.data.normal_(0.0, 0.5)
  folder = tmp_path_factory.mktemp("umt5")
  model.save_pretrained(folder / "transformers")
  torch.save(_wan_state_dict(model), folder / "wan_umt5.pth")
  with torch.no_grad():
    expected = model(input_ids=torch.tensor([[config.eos_token_id]])).last_hidden_state[0].numpy()
  return folder, expected


def test_the_tool_computes_the_empty_prompt_as_transformers_does_from_either_layout(umt5, tmp_path):
  folder, expected = umt5
  assert expected.shape == (1, 24)
  for source in (folder / "transformers", folder / "wan_umt5.pth"):
    out = tmp_path / f"{source.stem}.npy"
    assert empty_prompt_embedding.main(["--t5", str(source), "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)
  # kept: an existing output is bad input (diffst_jax/cli.py)
  assert empty_prompt_embedding.main(["--t5", str(folder / "wan_umt5.pth"), "--out", str(out)]) == 2
  np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)


def test_the_tool_names_a_file_that_is_not_a_umt5_encoder(tmp_path, capsys):
  torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
  assert empty_prompt_embedding.main(["--t5", str(tmp_path / "other.pth"), "--out", str(tmp_path / "e.npy")]) == 2
  assert "not a umT5 encoder" in capsys.readouterr().err
  assert not (tmp_path / "e.npy").exists()


def test_the_embedding_loads_from_each_format_zero_padded(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  rows = np.random.default_rng(0).normal(size=(3, 24)).astype(np.float32)
  np.save(tmp_path / "rows.npy", rows)
  np.save(tmp_path / "batched.npy", rows[None])
  save_file({"prompt_embeds": rows[None]}, tmp_path / "rows.safetensors")
  torch.save(torch.from_numpy(rows).to(torch.bfloat16), tmp_path / "rows.pt")
  torch.save({"prompt_embeds": torch.from_numpy(rows)}, tmp_path / "dict.pt")
  for name in ("rows.npy", "batched.npy", "rows.safetensors", "dict.pt"):
    padded = null_context.load(tmp_path / name, context_tokens=8, text_dim=24)
    assert padded.shape == (1, 8, 24) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[0, :3], rows)
    assert not padded[0, 3:].any()
  bf16 = null_context.load(tmp_path / "rows.pt", context_tokens=3, text_dim=24)
  np.testing.assert_allclose(bf16[0], rows, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("array, message", [
    (np.zeros((9, 24), np.float32), r"shape \(9, 24\); expected \(L, 24\) or \(1, L, 24\) with 1 <= L <= 8"),
    (np.zeros((2, 16), np.float32), r"shape \(2, 16\)"),
    (np.zeros((2, 2, 24), np.float32), r"shape \(2, 2, 24\)"),
    (np.zeros((2, 24), np.int32), "holds int32 values; expected floating point"),
])
def test_a_wrong_embedding_is_one_line_naming_the_file(tmp_path, array, message):
  np.save(tmp_path / "bad.npy", array)
  with pytest.raises(ValueError, match=f"init.null_context = .*bad.npy: {message}"):
    null_context.load(tmp_path / "bad.npy", context_tokens=8, text_dim=24)


def test_a_diffst_built_with_both_exports_the_padded_context_and_the_frozen_flow(tmp_path):
  config = config_files.load(ROOT / "configs" / "tiny.py")
  config.init.vae = str(ROOT / "weights" / "tiny")
  config.model.vae.update(dim_mult=(1, 2, 4), temperal_downsample=(True, True))  # weights/tiny's VAE
  rows = np.random.default_rng(1).normal(size=(5, config.model.dit.text_dim)).astype(np.float32)
  np.save(tmp_path / "empty_prompt.npy", rows)
  released = SpyNet(rngs=nnx.Rngs(jax.random.key(5)))
  weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in spynet.basicsr_state_dict(released).items()}
  weights.update(mean=torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),  # BasicSR's normalization buffers
                 std=torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
  torch.save({"params": weights}, tmp_path / "spynet.pth")  # BasicSR's layout
  config.init.null_context, config.init.flow = str(tmp_path / "empty_prompt.npy"), str(tmp_path / "spynet.pth")

  model = tasks.get("diffst").build(config)
  _, trainable, frozen = nnx.split(model, tasks.get("diffst").trainable(tasks.trains_flow(config)), ...)
  assert not any("flow" in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(trainable))
  assert any("flow" in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(frozen))
  config.init.train_flow = True
  _, trainable = nnx.split(model, tasks.get("diffst").trainable(tasks.trains_flow(config)), ...)[:2]
  assert any("flow" in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(trainable))

  loop._export(model, config, tmp_path / "model")  # pylint: disable=protected-access
  exported = diffst.load(tmp_path / "model")
  context = np.asarray(exported.null_context[...])
  assert context.shape == (1, config.model.context_tokens, config.model.dit.text_dim)
  np.testing.assert_array_equal(context[0, :5], rows)
  assert not context[0, 5:].any()
  for got, want in zip(jax.tree.leaves(nnx.state(exported.cfca.flow, nnx.Param)),
                       jax.tree.leaves(nnx.state(released, nnx.Param))):
    np.testing.assert_array_equal(got, want)

  config.init.flow = str(tmp_path / "empty_prompt.npy")
  with pytest.raises(ValueError, match="init.flow = .*empty_prompt.npy: .*expected BasicSR SpyNet weights"):
    tasks.get("diffst").build(config)
