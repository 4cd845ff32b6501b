"""The DiT under every test mesh and context-parallel mode equals the single-device run (fp32, 1e-5 relative),
including token counts the context size does not divide."""

import functools
import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from diffst_jax.models.dit import WanDiT, WanDiTConfig
from diffst_jax.parallel import attention as context_parallel
from diffst_jax.parallel import mesh as mesh_lib
from diffst_jax.parallel import rules
from diffst_jax.parallel import plan as plan_lib
from tests.conftest import rbg_rngs

# (data, fsdp, context, tensor) = (1,1,8,1), (2,1,4,1), (1,2,2,2), (1,1,2,1) (the last on 2 of the 8 devices).
MESHES = {"cp8": "context=8", "dp2_cp4": "data=2,context=4", "fsdp2_cp2_tp2": "fsdp=2,context=2,tensor=2",
          "cp2": "context=2"}


def make_mesh(text):
  return mesh_lib.make_mesh(text, jax.devices()[:math.prod(mesh_lib.parse_mesh(text).values())])
# 8 heads so that Ulysses runs on every mesh; latent grid 3 x 4 x 6 -> 18 tokens (not a multiple of 4 or 8).
CONFIG = dict(num_attention_heads=8, attention_head_dim=6, ffn_dim=32, num_layers=2, text_dim=24, freq_dim=16)


def relative_error(ours, reference):
  """max |ours - reference| / max |reference| (0 when both are all zeros)."""
  return float(jnp.max(jnp.abs(ours - reference)) / jnp.maximum(jnp.max(jnp.abs(reference)), 1e-30))


@functools.partial(jax.jit, static_argnums=(0, 1))
def forward(graphdef, execution_plan, state, x, t, context):
  return nnx.merge(graphdef, state)(execution_plan, x, t, context)


@pytest.fixture(scope="module")
def model_and_inputs():
  model = WanDiT(WanDiTConfig(**CONFIG), rngs=rbg_rngs(0))
  keys = jax.random.split(jax.random.key(1), 2)
  x = jax.random.normal(keys[0], (2, 3, 8, 12, 16))
  context = jax.random.normal(keys[1], (2, 5, 24))
  t = jnp.array([400.0, 937.0])
  graphdef, state = nnx.split(model)
  return model, (x, t, context), forward(graphdef, plan_lib.ExecutionPlan(), state, x, t, context)


COLLECTIVE = {"allgather_kv": "all-gather", "ulysses": "all-to-all", "ring": "collective-permute"}


def sharded_forward(model, inputs, mesh, mode="allgather_kv"):
  """The output, and the compiled program's text."""
  graphdef, state = nnx.split(model)
  with plan_lib.activate(mesh, context_parallel=mode) as execution_plan:
    state = jax.device_put(state, rules.state_shardings(state, mesh))
    x, t, context = inputs
    x = rules.place(x, ("act_batch", "act_frames", None, None, None), mesh)
    program = forward.lower(graphdef, execution_plan, state, x, t, context).compile().as_text()
    return forward(graphdef, execution_plan, state, x, t, context), program


@pytest.mark.parametrize("mode", context_parallel.MODES)
@pytest.mark.parametrize("mesh_name", MESHES)
def test_dit_matches_single_device(model_and_inputs, mesh_name, mode):
  model, inputs, reference = model_and_inputs
  out, program = sharded_forward(model, inputs, make_mesh(MESHES[mesh_name]), mode)
  assert relative_error(out, reference) <= 1e-5
  assert COLLECTIVE[mode] in program  # the mode's collective really runs


@pytest.mark.parametrize("mode", context_parallel.MODES)
def test_attention_modes_pad_and_mask(mode):
  """13 tokens over 4 devices (padded to 16, masked): equals plain attention, values and gradients."""
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (2, 13, 4, 8)) for key in keys)
  mask = jnp.ones((2, 13), bool)

  def loss(q, k, v, attention):
    return jnp.sum(jnp.sin(attention(q, k, v)))

  def padded(execution_plan):
    def attend(q, k, v):
      pad = lambda a: jnp.pad(a, ((0, 0), (0, 3), (0, 0), (0, 0)))  # noqa: E731
      out = context_parallel.self_attention(execution_plan, pad(q), pad(k), pad(v), jnp.pad(mask, ((0, 0), (0, 3))))
      return out[:, :13]
    return attend

  plain = lambda q, k, v: context_parallel.self_attention(plan_lib.ExecutionPlan(), q, k, v, mask)  # noqa: E731
  reference = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v, plain)
  with plan_lib.activate(mesh_lib.make_mesh("data=2,context=4"), context_parallel=mode) as execution_plan:
    ours = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)(q, k, v, padded(execution_plan))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
    assert relative_error(a, b) <= 1e-5


def test_ulysses_needs_heads_divisible_by_context():
  q = jnp.zeros((1, 8, 3, 8))
  with plan_lib.activate(mesh_lib.make_mesh("context=2,tensor=4"), context_parallel="ulysses") as execution_plan, \
       pytest.raises(ValueError, match="ulysses"):
    jax.jit(lambda q: context_parallel.self_attention(execution_plan, q, q, q))(q)
