"""Models made abstractly: shapes, dtypes and logical axes, no values (nnx.eval_shape), as every checkpoint load,
conversion and ahead-of-time compile starts."""

import contextlib
from collections.abc import Callable
from typing import TypeVar

from flax import nnx

try:  # JAX's private module; where it moved, models are made as flax makes them
  from jax._src.interpreters import partial_eval
except ImportError:  # pragma: no cover
  partial_eval = None

Module = TypeVar("Module", bound=nnx.Module)


def abstract(make: Callable[[nnx.Rngs], Module]) -> Module:
  """`make(rngs)` made abstractly."""
  with _no_tracer_origins():
    return nnx.eval_shape(lambda: make(nnx.Rngs(0)))


@contextlib.contextmanager
def _no_tracer_origins():
  """flax updates each RNG counter through a check that asks the new value for its `.sharding`; JAX answers a tracer's
  with an AttributeError whose message it builds by walking the trace so far, so making a model abstractly took time
  that grows with the model: 2.6 s for the 1.3B DiffST, 0.67 s without that walk (docs/BENCHMARKS.md). The message is
  left without where the tracer came from while a model is made; nothing else changes."""
  tracer = getattr(partial_eval, "DynamicJaxprTracer", None)
  if tracer is None or not hasattr(tracer, "_origin_msg"):
    yield
    return
  original = tracer._origin_msg  # pylint: disable=protected-access
  tracer._origin_msg = lambda self: ""  # pylint: disable=protected-access
  try:
    yield
  finally:
    tracer._origin_msg = original  # pylint: disable=protected-access
