"""The two convolution implementations of `layers.convolve` agree in values and in both gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.models import layers

CASES = {  # input shape, kernel shape, stride, spatial padding
    "3d": ((2, 5, 9, 8, 3), (3, 3, 3, 3, 4), (1, 1, 1), ((1, 1), (1, 1))),
    "3d_time_stride": ((1, 7, 6, 6, 4), (3, 1, 1, 4, 2), (2, 1, 1), ((0, 0), (0, 0))),
    "2d_stride_2": ((2, 3, 9, 10, 3), (3, 3, 3, 5), (2, 2), ((0, 1), (0, 1))),
    "2d_patches": ((1, 2, 8, 8, 3), (2, 2, 3, 6), (2, 2), ((0, 0), (0, 0))),
}


@pytest.mark.parametrize("case", CASES)
def test_gemm_convolution_matches_xla(case):
  x_shape, kernel_shape, stride, padding = CASES[case]
  x = jax.random.normal(jax.random.key(0), x_shape)
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  cotangent_key = jax.random.key(2)

  def value_and_grads(implementation):
    y, vjp = jax.vjp(lambda x, k: layers.convolve(x, k, stride, padding, implementation), x, kernel)
    return (y, *vjp(jax.random.normal(cotangent_key, y.shape)))

  want, got = value_and_grads("xla"), value_and_grads("gemm")
  for name, w, g in zip(("output", "input gradient", "kernel gradient"), want, got):
    assert g.shape == w.shape, name
    np.testing.assert_allclose(g, w, rtol=0, atol=2e-5 * float(jnp.abs(w).max()), err_msg=name)


def test_unknown_implementation_is_refused():
  from diffst_jax.models.vae import WanVAEConfig  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match="conv_implementation = 'cudnn' is unknown: use one of xla, gemm"):
    WanVAEConfig(conv_implementation="cudnn")


@pytest.mark.parametrize("kernel_shape", [(3, 3, 3, 3, 4), (3, 3, 3, 4)], ids=["3d", "2d"])
def test_kernel_gradient_with_rows_over_context_and_a_replicated_axis(kernel_shape):
  """Rows over context with the clip replicated over tensor: XLA's partitioner alone would double the kernel
  gradient here (see `layers.convolve`)."""
  from diffst_jax.parallel import mesh as mesh_lib, rules  # pylint: disable=import-outside-toplevel

  x = jax.random.normal(jax.random.key(0), (2, 5, 8, 8, 3))
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  cotangent = jax.random.normal(jax.random.key(2), (2, 3 if len(kernel_shape) == 5 else 5, 8, 8, 4))
  stride = (1,) * (len(kernel_shape) - 2)
  # A new function each time: the mesh is read when the function is traced.
  gradients = lambda: jax.jit(jax.grad(  # noqa: E731
      lambda x, k: jnp.sum(layers.convolve(x, k, stride, ((1, 1), (1, 1))) * cotangent), argnums=(0, 1)))
  want = gradients()(x, kernel)
  mesh = mesh_lib.make_mesh({"fsdp": 2, "context": 2, "tensor": 2})
  with rules.activate(mesh):
    rows_over_context = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None, "context"))
    got = gradients()(jax.device_put(x, rows_over_context), kernel)
  for name, w, g in zip(("input gradient", "kernel gradient"), want, got):
    np.testing.assert_allclose(g, w, rtol=0, atol=2e-5 * float(jnp.abs(w).max()), err_msg=name)
