"""ExecutionPlan.scan: with `unroll_loops`, the same numbers as `jax.lax.scan`, and no loop in the program or in its
gradient (what libtpu's estimate needs: it counts a loop's body once)."""

import jax
import jax.numpy as jnp
import numpy as np

from diffst_jax.parallel.plan import ExecutionPlan


def _run(plan, weights, xs):
  body = lambda carry, x: (jnp.tanh(carry @ weights + x), jnp.sum(carry * x))  # noqa: E731
  carry, ys = plan.scan(body, jnp.ones((3,)), xs)
  return jnp.sum(carry) + jnp.sum(ys**2)


def test_an_unrolled_scan_computes_the_same_and_leaves_no_loop_even_in_its_gradient():
  weights = jax.random.normal(jax.random.key(0), (3, 3)) / 2
  xs = jax.random.normal(jax.random.key(1), (5, 3))
  rolled, unrolled = ExecutionPlan(), ExecutionPlan(unroll_loops=True)
  np.testing.assert_allclose(_run(unrolled, weights, xs), _run(rolled, weights, xs), rtol=1e-6)
  gradient = jax.grad(_run, argnums=(1, 2))
  for expected, got in zip(gradient(rolled, weights, xs), gradient(unrolled, weights, xs)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

  def loops(plan):
    text = jax.jit(gradient, static_argnums=0).lower(plan, weights, xs).as_text()
    return text.count("stablehlo.while")

  assert loops(rolled) >= 2 and loops(unrolled) == 0  # forward and backward loops; none unrolled
