"""BasicSR SpyNet weights (the `.pth` of BasicVSR / RealBasicVSR) for our `SpyNet`, both ways: the key table is
data, `basic_module.{level}.basic_module.{2 i}.{weight,bias}` -> our level's i-th convolution."""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffst_jax.convert import mapping
from diffst_jax.models.flow import SpyNet


def basicsr_key_table(model: SpyNet) -> dict[str, mapping.Entry]:
  """BasicSR SpyNet key -> our parameter: `basic_module.{level}.basic_module.{2 i}.{weight,bias}`."""
  def source_key(name):
    level, _, conv, leaf = name.split(".")[1:]
    return f"basic_module.{level}.basic_module.{2 * int(conv)}.{'weight' if leaf == 'kernel' else 'bias'}"

  layout_of = lambda name: "conv2d" if name.endswith("kernel") else "vector"  # noqa: E731
  return mapping.key_table(nnx.state(model, nnx.Param), source_key, layout_of)


def load_basicsr_weights(model: SpyNet, state_dict: Mapping[str, np.ndarray]) -> SpyNet:
  """Loads BasicSR SpyNet weights (a state dict, optionally under a "params" key) into `model`, strictly."""
  if "params" in state_dict and isinstance(state_dict["params"], Mapping):
    state_dict = state_dict["params"]
  params = mapping.from_torch(state_dict, basicsr_key_table(model), jnp.float32, "BasicSR SpyNet")
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  nnx.update(model, state)
  return model


def basicsr_state_dict(model: SpyNet) -> dict[str, np.ndarray]:
  """Our SpyNet parameters in BasicSR's key layout."""
  return mapping.to_torch(nnx.to_pure_dict(nnx.state(model, nnx.Param)), basicsr_key_table(model))
