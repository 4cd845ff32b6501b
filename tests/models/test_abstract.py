"""Models made abstractly (models/abstract.py) are flax's `nnx.eval_shape` models, made without building the tracer
error messages flax's RNG updates ask for; JAX's messages are whole again afterwards."""

import jax
from flax import nnx
from jax._src.interpreters import partial_eval

from diffst_jax.models import diffst
from diffst_jax.models.abstract import abstract


def test_abstract_models_are_flax_eval_shape_models_and_jax_is_left_as_it_was(tiny_config):
  config = diffst.DiffSTConfig.from_dict(tiny_config.to_dict())
  origin_message = partial_eval.DynamicJaxprTracer._origin_msg  # pylint: disable=protected-access
  ours = abstract(lambda rngs: diffst.DiffST(config, rngs=rngs))
  flax_made = nnx.eval_shape(lambda: diffst.DiffST(config, rngs=nnx.Rngs(0)))
  assert nnx.graphdef(ours) == nnx.graphdef(flax_made)
  described = lambda model: jax.tree.map(lambda a: (a.shape, a.dtype), nnx.to_pure_dict(nnx.state(model)))  # noqa: E731
  assert described(ours) == described(flax_made)
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(ours)))
  assert partial_eval.DynamicJaxprTracer._origin_msg is origin_message  # pylint: disable=protected-access
