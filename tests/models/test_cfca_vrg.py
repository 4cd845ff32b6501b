"""CFCA, SpyNet and VRG: the untrained modules are exactly linear interpolation and no guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from diffst_jax.convert import CheckpointError
from diffst_jax.convert.spynet import basicsr_state_dict, load_basicsr_weights
from diffst_jax.models.cfca import CFCA, CFCAConfig, linear_blend
from diffst_jax.models.dit import WanDiT, WanDiTConfig
from diffst_jax.models.flow import SpyNet
from diffst_jax.models.vrg import VRG, VRGConfig
from diffst_jax.parallel.plan import ExecutionPlan

ONE_DEVICE = ExecutionPlan()


def _uniform(seed: int, shape) -> jax.Array:
  """Values in [-1, 1) drawn by numpy: jax.random would compile a sampler for each shape, seconds apiece."""
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def _normal(seed: int, shape) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("time_scale", [2, 4])
def test_untrained_cfca_is_linear_blending_and_keeps_keyframes(time_scale):
  cfca = CFCA(CFCAConfig(time_scale=time_scale, fusion_channels=8), rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  # jax.random's values (multiples of 2^-22) keep the blend's products exact whichever way the compiled program
  # rounds them; numpy's would not (a last-bit difference at time_scale 4).
  frames = jax.random.uniform(jax.random.key(1), (2, 4, 18, 26, 3), minval=-1, maxval=1)
  out = nnx.jit(CFCA.__call__, static_argnums=1)(cfca, ONE_DEVICE, frames)  # one compiled program: faster than op by op
  assert out.shape == (2, time_scale * 3 + 1, 18, 26, 3)
  np.testing.assert_array_equal(out, linear_blend(frames, time_scale))
  np.testing.assert_array_equal(out[:, ::time_scale], frames)
  alpha = 1 / time_scale
  np.testing.assert_allclose(out[:, 1], (1 - alpha) * frames[:, 0] + alpha * frames[:, 1], atol=1e-6)

  # The zero-initialized fusion output still learns (only the fusion's gradient is taken: it is all this checks).
  fusion_only = nnx.DiffState(0, nnx.All(nnx.Param, nnx.PathContains("fusion")))
  grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(ONE_DEVICE, frames) ** 2), argnums=fusion_only))(cfca)
  assert float(jnp.abs(grads.fusion.conv_out.kernel[...]).max()) > 0


def test_cfca_keyframes_pass_through_after_training_too():
  cfca = CFCA(CFCAConfig(fusion_channels=8), rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  kernel = cfca.fusion.conv_out.kernel
  kernel[...] = jax.random.normal(jax.random.key(3), kernel.shape)  # as if trained
  # The untrained test's clip and time scale: the same program (the weights are its arguments), compiled once.
  frames = _uniform(1, (2, 4, 18, 26, 3))
  out = nnx.jit(CFCA.__call__, static_argnums=1)(cfca, ONE_DEVICE, frames)
  np.testing.assert_array_equal(out[:, ::2], frames)
  assert not np.allclose(out[:, 1::2], linear_blend(frames, 2)[:, 1::2])


def test_spynet_converts_basicsr_weights_strictly():
  spynet = SpyNet(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  state = basicsr_state_dict(spynet)
  assert set(state) == {f"basic_module.{lvl}.basic_module.{i}.{leaf}" for lvl in range(6) for i in (0, 2, 4, 6, 8)
                        for leaf in ("weight", "bias")}
  assert state["basic_module.3.basic_module.0.weight"].shape == (32, 8, 7, 7)
  loaded = load_basicsr_weights(SpyNet(rngs=nnx.Rngs(jax.random.key(1, impl="rbg"))),
                                {"params": {k: torch.from_numpy(v).numpy() for k, v in state.items()}})
  for a, b in zip(jax.tree.leaves(nnx.state(spynet)), jax.tree.leaves(nnx.state(loaded)), strict=True):
    np.testing.assert_array_equal(a, b)
  del state["basic_module.5.basic_module.8.bias"]
  with pytest.raises(CheckpointError, match="basic_module.5.basic_module.8.bias"):
    load_basicsr_weights(spynet, state)


def test_spynet_flow_shape_and_identity():
  spynet = SpyNet(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  frame = _uniform(1, (2, 36, 44, 3))
  # one compiled program: faster than op by op
  flow = nnx.jit(SpyNet.__call__, static_argnums=1)(spynet, ONE_DEVICE, frame, jnp.roll(frame, 1, axis=2))
  assert flow.shape == (2, 36, 44, 2) and bool(jnp.all(jnp.isfinite(flow)))


def test_untrained_vrg_leaves_the_dit_unchanged(tiny_config):
  dit = WanDiT(WanDiTConfig(**tiny_config.dit), rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  vrg = VRG(VRGConfig(**tiny_config.vrg), dit.config.text_dim, rngs=nnx.Rngs(jax.random.key(1, impl="rbg")))
  frames = _uniform(2, (2, 5, 20, 28, 3))
  tokens, gate = nnx.jit(VRG.__call__, static_argnums=1)(vrg, ONE_DEVICE, frames)
  assert tokens.shape == (2, tiny_config.vrg.num_tokens, dit.config.text_dim)
  z = _normal(3, (2, 3, 4, 6, 16))
  context = _normal(4, (2, 7, dit.config.text_dim))
  t = jnp.full((2,), 400.0)
  run_dit = nnx.jit(WanDiT.__call__, static_argnums=1)
  np.testing.assert_array_equal(run_dit(dit, ONE_DEVICE, z, t, context, (tokens, gate)),
                                run_dit(dit, ONE_DEVICE, z, t, context))
  loss = lambda dit, g: jnp.sum(dit(ONE_DEVICE, z, t, context, (tokens, g)) ** 2)  # noqa: E731
  grads = nnx.jit(lambda dit, g: jax.grad(lambda g: loss(dit, g))(g))(dit, gate)
  assert float(jnp.abs(grads).min()) > 0  # every token's gate can open
