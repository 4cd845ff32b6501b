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


def _equation_flops(eqn) -> int:
  name = eqn.primitive.name
  if name == "dot_general":
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[axis] for axis in lhs_contracting)
  if name == "conv_general_dilated":
    rhs_shape = eqn.invars[1].aval.shape
    out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2 * math.prod(eqn.outvars[0].aval.shape) * (math.prod(rhs_shape) // out_features)
  counts = [jaxpr_flops(sub) for sub in core.jaxprs_in_params(eqn.params)]
  if not counts:
    return 0
  if name == "cond":
    return max(counts)
  return sum(counts) * (eqn.params["length"] if name == "scan" else 1)


def jaxpr_flops(jaxpr: core.Jaxpr) -> int:
  return sum(_equation_flops(eqn) for eqn in jaxpr.eqns)


def count(function: Callable, *args) -> int:
  """The FLOPs of `function(*args)` (arrays or jax.ShapeDtypeStructs: nothing is computed)."""
  return jaxpr_flops(jax.make_jaxpr(function)(*args).jaxpr)


def count_by_function(function: Callable, *args) -> dict[str, int]:
  """`count`, split by the outermost jit-compiled functions the program calls (their names; "other" for the rest):
  e.g. the VAE's `_encode` and `_decode` beside the DiT."""
  parts: dict[str, int] = {}

  def walk(jaxpr):
    wrapper = len(jaxpr.eqns) == 1  # a jit-compiled `function` itself: look inside
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("pjit", "jit") and not wrapper:
        name = str(eqn.params.get("name", "other"))
        parts[name] = parts.get(name, 0) + _equation_flops(eqn)
      elif eqn.primitive.name in ("pjit", "jit", "checkpoint", "remat"):
        walk(next(iter(core.jaxprs_in_params(eqn.params))))
      else:
        parts["other"] = parts.get("other", 0) + _equation_flops(eqn)

  walk(jax.make_jaxpr(function)(*args).jaxpr)
  return parts
