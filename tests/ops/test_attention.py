"""The attention entry point: implementations agree, masks hide keys, accelerator kernels never break CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.ops.attention import dot_product_attention, resolve_implementation


def _qkv(sq=37, sk=53, heads=3, dim=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(keys[0], (2, sq, heads, dim)), jax.random.normal(keys[1], (2, sk, heads, dim)),
          jax.random.normal(keys[2], (2, sk, heads, dim)))


def test_xla_matches_numpy_reference():
  q, k, v = _qkv()
  qn, kn, vn = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("bqnd,bknd->bnqk", qn, kn) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("bnqk,bknd->bqnd", weights, vn)
  np.testing.assert_allclose(dot_product_attention(q, k, v), expected, atol=1e-5)


@pytest.mark.parametrize("block_size", [8, 16, 53, 512])
def test_blockwise_equals_plain(block_size):
  q, k, v = _qkv()
  np.testing.assert_allclose(dot_product_attention(q, k, v, implementation="blockwise", block_size=block_size),
                             dot_product_attention(q, k, v), atol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "blockwise"])
def test_key_mask_equals_dropping_the_keys(implementation):
  q, k, v = _qkv()
  valid = 40  # padding at the end, as context-parallel padding is
  mask = jnp.broadcast_to(jnp.arange(k.shape[1]) < valid, (2, k.shape[1]))
  got = dot_product_attention(q, k, v, key_mask=mask, implementation=implementation, block_size=16)
  np.testing.assert_allclose(got, dot_product_attention(q, k[:, :valid], v[:, :valid]), atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_blockwise_gradients_equal_plain(masked):
  q, k, v = _qkv(sq=20, sk=30)
  mask = jnp.broadcast_to(jnp.arange(30) < 23, (2, 30)) if masked else None
  cotangent = jax.random.normal(jax.random.key(7), q.shape)
  loss = lambda impl: lambda q, k, v: jnp.sum(  # noqa: E731
      dot_product_attention(q, k, v, key_mask=mask, implementation=impl, block_size=8) * cotangent)
  for got, expected in zip(jax.grad(loss("blockwise"), (0, 1, 2))(q, k, v), jax.grad(loss("xla"), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_blockwise_backward_memory_is_linear_in_length():
  """The backward keeps one key block of scores at a time: doubling the tokens doubles its temporaries (XLA's
  attention quadruples them, and autodiff of the forward scan, which keeps every block's partial output, grows them
  2.75x from 4,096 to 8,192 tokens)."""

  def temporaries(length):
    q = k = v = jax.ShapeDtypeStruct((1, length, 2, 64), jnp.float32)
    loss = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, implementation="blockwise", block_size=256))  # noqa
    return jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

  assert temporaries(8192) / temporaries(4096) < 2.2


def test_implementations_resolve_by_backend():
  assert resolve_implementation("auto", "cpu") == "xla"
  assert resolve_implementation("auto", "gpu") == "cudnn"
  assert resolve_implementation("auto", "tpu") == "splash"
  with pytest.raises(ValueError, match="needs a gpu backend"):
    resolve_implementation("cudnn", "cpu")
  with pytest.raises(ValueError, match="unknown"):
    resolve_implementation("flash", "cpu")
  with pytest.raises(ValueError, match="resolved for the platform"):  # "auto" is the plan's to resolve
    dot_product_attention(*_qkv(), implementation="auto")


def test_float64_is_not_rounded_to_float32():
  with jax.enable_x64(True):
    q, k, v = (a.astype(jnp.float64) for a in _qkv())
    out = dot_product_attention(q, k, v)
    blockwise = dot_product_attention(q, k, v, implementation="blockwise", block_size=16)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(blockwise, out, rtol=1e-12, atol=1e-12)
