"""The floating-point operations of a program counted from its jaxpr, the model's own operations: every matrix
product and convolution (2 per multiply-add; every tap of a padded convolution, as the chips compute them), scan
bodies times their length, the larger branch of a conditional. Elementwise work, normalizations and softmax are
left out, as model-FLOPs utilization counts them (MaxText, PaLM's MFU). Unlike a compiler's count, nothing the
compiler adds (rematerialization, padding, collectives) is in it, so trace the program without rematerialization
and without a mesh."""

import math
from collections.abc import Callable

import jax
from jax.extend import core


def _equation_flops(eqn, count_inner: Callable[[core.Jaxpr], int]) -> int:
  name = eqn.primitive.name
  if name == "dot_general":
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[axis] for axis in lhs_contracting)
  if name == "conv_general_dilated":
    rhs_shape = eqn.invars[1].aval.shape
    out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2 * math.prod(eqn.outvars[0].aval.shape) * (math.prod(rhs_shape) // out_features)
  counts = [count_inner(sub) for sub in core.jaxprs_in_params(eqn.params)]
  if not counts:
    return 0
  if name == "cond":
    return max(counts)
  return sum(counts) * (eqn.params["length"] if name == "scan" else 1)


def jaxpr_flops(jaxpr: core.Jaxpr) -> int:
  return sum(_equation_flops(eqn, jaxpr_flops) for eqn in jaxpr.eqns)


def _scoped_flops(jaxpr: core.Jaxpr, scope: str, inside: bool = False) -> int:
  """The FLOPs of `jaxpr`'s operations traced under `jax.named_scope(scope)` (their gradients included: JAX keeps
  the scope in their name stacks)."""
  total = 0
  for eqn in jaxpr.eqns:
    here = inside or scope in str(eqn.source_info.name_stack)
    if list(core.jaxprs_in_params(eqn.params)):
      total += _equation_flops(eqn, lambda sub, here=here: _scoped_flops(sub, scope, here))
    elif here:
      total += _equation_flops(eqn, jaxpr_flops)
  return total


def count(function: Callable, *args) -> int:
  """The FLOPs of `function(*args)` (arrays or jax.ShapeDtypeStructs: nothing is computed)."""
  return jaxpr_flops(jax.make_jaxpr(function)(*args).jaxpr)


def in_scope(jaxpr: core.Jaxpr, scope: str) -> int:
  """The FLOPs of `jaxpr`'s operations traced under `jax.named_scope(scope)`: e.g. the attention a TPU program runs
  in splash kernels, which the compiler's cost analysis does not count."""
  return _scoped_flops(jaxpr, scope)


def count_by_function(function: Callable, *args) -> dict[str, int]:
  """`count`, split by the outermost jit-compiled functions the program calls (their names; "other" for the rest):
  e.g. the VAE's `_encode` and `_decode` beside the DiT."""
  return by_function(jax.make_jaxpr(function)(*args).jaxpr)


def by_function(jaxpr: core.Jaxpr) -> dict[str, int]:
  """`count_by_function` of a traced program."""
  parts: dict[str, int] = {}

  def walk(jaxpr):
    wrapper = len(jaxpr.eqns) == 1  # a jit-compiled `function` itself: look inside
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("pjit", "jit") and not wrapper:
        name = str(eqn.params.get("name", "other"))
        parts[name] = parts.get(name, 0) + _equation_flops(eqn, jaxpr_flops)
      elif eqn.primitive.name in ("pjit", "jit", "checkpoint", "remat"):
        walk(next(iter(core.jaxprs_in_params(eqn.params))))
      else:
        parts["other"] = parts.get("other", 0) + _equation_flops(eqn, jaxpr_flops)

  walk(jaxpr)
  return parts
