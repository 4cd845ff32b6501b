"""Model FLOPs counted from a jaxpr agree with XLA's own count of the same compiled program (an oracle we did not
write) for matrix products and convolutions, and multiply scan bodies by their length."""

import jax
import jax.numpy as jnp
import pytest

from diffst_jax.ops import flops

MATRIX = (jax.ShapeDtypeStruct((2, 37, 24), jnp.float32), jax.ShapeDtypeStruct((24, 40), jnp.float32))
VIDEO = (jax.ShapeDtypeStruct((1, 5, 12, 16, 6), jnp.float32), jax.ShapeDtypeStruct((3, 3, 3, 6, 10), jnp.float32))


def _conv(x, kernel, padding="VALID"):
  return jax.lax.conv_general_dilated(x, kernel, (1, 2, 1), padding, dimension_numbers=("NTHWC", "THWIO", "NTHWC"))


@pytest.mark.parametrize("function, args", [(lambda a, b: a @ b, MATRIX), (_conv, VIDEO),
                                            (lambda x, kernel: jnp.sum(_conv(x, kernel) ** 2), VIDEO)])
def test_matrix_products_and_convolutions_count_as_xla_counts_them(function, args):
  compiled = jax.jit(function).lower(*args).compile().cost_analysis()
  xla_flops = (compiled[0] if isinstance(compiled, (list, tuple)) else compiled)["flops"]
  ours = flops.count(function, *args)
  assert ours > 0
  assert ours <= xla_flops <= 1.05 * ours  # XLA adds the elementwise work (the square and the sum), ours does not


def test_padded_convolutions_count_every_tap_as_the_chips_compute_them():
  """XLA's count leaves out the taps that fall on padding; a chip multiplies them all, and so does our count."""
  x, kernel = VIDEO
  assert flops.count(lambda x, k: _conv(x, k, "SAME"), x, kernel) == 2 * (5 * 6 * 16 * 10) * (3 * 3 * 3 * 6)


def test_scan_bodies_count_once_per_iteration_and_calls_by_function():
  a, b = MATRIX

  def repeated(a, b):
    return jax.lax.scan(lambda carry, _: (carry @ b[:, :24], None), a, None, length=7)[0]

  one = flops.count(lambda a, b: a @ b[:, :24], a, b)
  assert flops.count(repeated, a, b) == 7 * one
  named = jax.jit(lambda a, b: a @ b[:, :24])
  assert flops.count_by_function(lambda a, b: named(a, b) @ b, a, b) == {"<lambda>": one,
                                                                            "other": flops.count(lambda a, b: a @ b, a, b)}


def test_attention_counts_by_its_scope_in_loops_and_their_gradients():
  """The attention's FLOPs, apart from the rest of a program: what a TPU runs in splash kernels, which its compiler
  does not price (aot.utilization)."""
  from diffst_jax.ops import attention  # pylint: disable=import-outside-toplevel

  q = jax.ShapeDtypeStruct((1, 64, 2, 8), jnp.float32)
  w = jax.ShapeDtypeStruct((8, 8), jnp.float32)

  def program(q, k, v, w):
    body = lambda carry, _: (attention.dot_product_attention(carry, k, v) @ w, None)  # noqa: E731
    return jnp.sum(jax.lax.scan(body, q, None, length=3)[0])

  scores_and_values = 2 * (2 * 64 * 64 * 2 * 8)  # q k^T and p v: 2 FLOPs per multiply-add, 2 heads of 8
  projection = 2 * 64 * 2 * 8 * 8
  forward = jax.make_jaxpr(program)(q, q, q, w).jaxpr
  assert flops.in_scope(forward, attention.SCOPE) == 3 * scores_and_values
  assert flops.jaxpr_flops(forward) == 3 * (scores_and_values + projection)
  # the gradient with respect to q, k and v: the forward's two products and four more (dp, dq, dk, dv)
  gradient = jax.make_jaxpr(jax.grad(program, argnums=(0, 1, 2)))(q, q, q, w).jaxpr
  assert flops.in_scope(gradient, attention.SCOPE) == 3 * 3 * scores_and_values
