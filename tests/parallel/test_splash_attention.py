"""The TPU attention path checked for numbers on CPU: the splash kernel, run by Pallas' interpreter inside shard_map
exactly as it runs on a TPU slice, equals XLA's attention forward and backward (fp32), with token padding hidden by a
key mask and without one, in every context-parallel mode and with the tokens not split at all."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.ops.attention import dot_product_attention
from diffst_jax.parallel import attention as context_parallel
from diffst_jax.parallel import mesh as mesh_lib
from diffst_jax.parallel import rules
from diffst_jax.parallel import plan as plan_lib

TOKENS, REAL, HEADS, DIM = 256, 230, 4, 64  # the last 26 tokens are padding, as the DiT pads for context parallelism


def _inputs():
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (2, TOKENS, HEADS, DIM)) for key in keys[:3])
  return q, k, v, jax.random.normal(keys[3], (2, TOKENS, HEADS, DIM))


def _loss_and_grads(attend, q, k, v, weights):
  loss = lambda q, k, v: jnp.sum(attend(q, k, v) * weights)  # noqa: E731
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _assert_close(got, expected):
  for ours, reference in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(ours, reference, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("masked", [True, False])
def test_splash_equals_xla_forward_and_backward(masked):
  q, k, v, weights = _inputs()
  mask = jnp.broadcast_to(jnp.arange(TOKENS) < REAL, (2, TOKENS)) if masked else None
  attend = lambda implementation: lambda q, k, v: dot_product_attention(  # noqa: E731
      q, k, v, key_mask=mask, implementation=implementation)
  expected = _loss_and_grads(attend("xla"), q, k, v, weights)
  _assert_close(_loss_and_grads(attend("splash_interpret"), q, k, v, weights), expected)


@pytest.mark.parametrize("mesh_text, mode", [("context=4", "allgather_kv"), ("context=4", "ulysses"), ("context=4", "ring"),
                                             ("data=2,context=2,tensor=2", "allgather_kv"),
                                             ("fsdp=2,tensor=2", "allgather_kv")])
def test_splash_inside_shard_map_equals_xla(mesh_text, mode):
  q, k, v, weights = _inputs()
  mask = jnp.broadcast_to(jnp.arange(TOKENS) < REAL, (2, TOKENS))
  mesh = mesh_lib.make_mesh(mesh_text, jax.devices()[:math.prod(mesh_lib.parse_mesh(mesh_text).values())])
  expected = _loss_and_grads(lambda q, k, v: dot_product_attention(q, k, v, key_mask=mask), q, k, v, weights)
  with plan_lib.activate(mesh, attention="splash_interpret", context_parallel=mode) as execution_plan:
    attend = lambda q, k, v: context_parallel.self_attention(execution_plan, q, k, v, mask)  # noqa: E731
    got = _loss_and_grads(attend, q, k, v, weights)
    program = jax.jit(attend).lower(q, k, v).as_text()
  _assert_close(got, expected)
  assert "shard_map" in program or "sdy.manual_computation" in program  # the kernel runs on each device's part


@pytest.mark.parametrize("keys", [8, 4])  # the tiny null context's tokens, VRG's guidance tokens
@pytest.mark.parametrize("mesh_text", ["context=4", "data=2,context=2,tensor=2"])
def test_splash_with_whole_keys_inside_shard_map_equals_xla(mesh_text, keys):
  """Cross-attention and guidance attention: queries split over context, keys whole on every device."""
  q, _, _, weights = _inputs()
  k, v = (jax.random.normal(key, (2, keys, HEADS, DIM)) for key in jax.random.split(jax.random.key(1)))
  mesh = mesh_lib.make_mesh(mesh_text, jax.devices()[:math.prod(mesh_lib.parse_mesh(mesh_text).values())])
  expected = _loss_and_grads(lambda q, k, v: dot_product_attention(q, k, v), q, k, v, weights)
  with plan_lib.activate(mesh, attention="splash_interpret") as execution_plan:
    attend = lambda q, k, v: context_parallel.attention(execution_plan, q, k, v)  # noqa: E731
    got = _loss_and_grads(attend, q, k, v, weights)
    program = jax.jit(attend).lower(q, k, v).as_text()
  _assert_close(got, expected)
  assert "shard_map" in program or "sdy.manual_computation" in program
