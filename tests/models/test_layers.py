"""The two convolution implementations of `layers.convolve` agree in values and in both gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.models import layers
from diffst_jax.parallel.plan import ExecutionPlan

CASES = {  # input shape, kernel shape, stride, spatial padding
    "3d": ((2, 5, 9, 8, 3), (3, 3, 3, 3, 4), (1, 1, 1), ((1, 1), (1, 1))),
    "3d_time_stride": ((1, 7, 6, 6, 4), (3, 1, 1, 4, 2), (2, 1, 1), ((0, 0), (0, 0))),
    "2d_stride_2": ((2, 3, 9, 10, 3), (3, 3, 3, 5), (2, 2), ((0, 1), (0, 1))),
    "2d_patches": ((1, 2, 8, 8, 3), (2, 2, 3, 6), (2, 2), ((0, 0), (0, 0))),
}


def _normal(seed: int, shape) -> jax.Array:
  """Standard normal float32 values drawn by numpy: jax.random would compile a sampler for each shape, seconds
  apiece."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("case", CASES)
def test_gemm_convolution_matches_xla(case):
  x_shape, kernel_shape, stride, padding = CASES[case]
  x, kernel = _normal(0, x_shape), _normal(1, kernel_shape)
  out_shape = jax.eval_shape(lambda x, k: layers.convolve(ExecutionPlan(), x, k, stride, padding, "xla"), x, kernel)
  cotangent = _normal(2, out_shape.shape)

  def value_and_grads(implementation):
    y, vjp = jax.vjp(lambda x, k: layers.convolve(ExecutionPlan(), x, k, stride, padding, implementation), x, kernel)
    return (y, *vjp(cotangent))

  want, got = value_and_grads("xla"), value_and_grads("gemm")
  for name, w, g in zip(("output", "input gradient", "kernel gradient"), want, got):
    assert g.shape == w.shape, name
    np.testing.assert_allclose(g, w, rtol=0, atol=2e-5 * float(jnp.abs(w).max()), err_msg=name)


@pytest.mark.parametrize("kernel_case, rows_devices, expected", [
    ("3d", 8, True), ("2d_stride_2", 8, True), ("2d_7x7", 4, True),
    ("2d_7x7", 8, False),  # 3 halo rows, 2 rows per device
    ("2d_stride_2", 16, False),  # one row per device: the stride does not split
])
def test_which_convolutions_run_on_each_devices_own_rows(kernel_case, rows_devices, expected):
  from diffst_jax.parallel import convolution  # pylint: disable=import-outside-toplevel

  kernel_shape, stride, padding = KERNELS[kernel_case]
  assert convolution.applies((2, 5, 16, 8, 3), kernel_shape, stride, padding, rows_devices) is expected


def test_plan_chooses_the_convolution_implementation_at_run_time():
  assert ExecutionPlan(platform="cpu").convolutions() == "gemm"
  assert ExecutionPlan(platform="tpu").convolutions() == "xla"
  assert ExecutionPlan(platform="gpu").convolutions() == "xla"
  assert ExecutionPlan(platform="tpu", conv_implementation="gemm").convolutions() == "gemm"
  assert ExecutionPlan(platform="cpu").convolutions("xla") == "xla"
  with pytest.raises(ValueError, match="conv_implementation = 'cudnn' is unknown: use one of auto, xla, gemm"):
    ExecutionPlan(conv_implementation="cudnn")


def test_a_program_traced_under_one_plan_is_not_reused_under_another():
  """The models' jitted entry points take the execution plan as a static argument: the same VAE and input under
  another convolution implementation compile a second program, which convolves another way to the same result."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from diffst_jax.models import vae as vae_lib  # pylint: disable=import-outside-toplevel
  from tests.conftest import rbg_rngs  # pylint: disable=import-outside-toplevel

  vae = vae_lib.WanVAE(vae_lib.WanVAEConfig(base_dim=4, dim_mult=(1, 2, 4), temperal_downsample=(True, True)),
                       rngs=rbg_rngs(0))  # "rbg": its initialization compiles ~4x faster than threefry's
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 5, 16, 16, 3)), jnp.float32)
  programs, latents = [], []
  for implementation in ("xla", "gemm"):
    plan = ExecutionPlan(conv_implementation=implementation)
    latents.append(np.asarray(vae.encode(plan, x)))
    graphdef, state = nnx.split(vae)
    programs.append(vae_lib._encode.lower(graphdef, plan, state, x).as_text())  # pylint: disable=protected-access
  assert programs[0] != programs[1]
  np.testing.assert_allclose(latents[0], latents[1], rtol=1e-4, atol=1e-5)


LAYOUTS = {  # mesh, clips per batch; rows of the input over context
    "fsdp2_context4_filled": ({"fsdp": 2, "context": 4}, 2),
    "fsdp2_context4_one_clip": ({"fsdp": 2, "context": 4}, 1),  # the clip is replicated over fsdp
    "context8": ({"context": 8}, 1),
    "fsdp2_context2_tensor2": ({"fsdp": 2, "context": 2, "tensor": 2}, 2),  # replicated over tensor
}
KERNELS = {  # kernel shape, stride, spatial padding
    "3d": ((3, 3, 3, 3, 4), (1, 1, 1), ((1, 1), (1, 1))),
    "2d": ((3, 3, 3, 4), (1, 1), ((1, 1), (1, 1))),
    "2d_stride_2": ((3, 3, 3, 4), (2, 2), ((0, 1), (0, 1))),
    "2d_7x7": ((7, 7, 3, 4), (1, 1), ((3, 3), (3, 3))),
}


def _gradients(conv, mesh=None, batch=2, kernel_case="3d"):
  """Input and kernel gradients of sum(conv(plan, x, kernel) * cotangent), on one device or with x's rows over
  context."""
  from diffst_jax.parallel import mesh as mesh_lib, rules  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import plan as plan_lib  # pylint: disable=import-outside-toplevel

  kernel_shape, stride, padding = KERNELS[kernel_case]
  x, kernel = _normal(0, (batch, 5, 16, 8, 3)), _normal(1, kernel_shape)
  out_shape = jax.eval_shape(lambda x, k: conv(ExecutionPlan(), x, k, stride, padding), x, kernel).shape
  cotangent = _normal(2, out_shape)
  gradients = lambda execution_plan: jax.jit(jax.grad(  # noqa: E731
      lambda x, k: jnp.sum(conv(execution_plan, x, k, stride, padding) * cotangent), argnums=(0, 1)))
  if mesh is None:
    return gradients(ExecutionPlan())(x, kernel)
  mesh = mesh_lib.make_mesh(mesh)
  with plan_lib.activate(mesh) as execution_plan:
    return gradients(execution_plan)(rules.place(x, ("act_batch", None, "act_rows", None, None), mesh), kernel)


def _xla_native(plan, x, kernel, stride, padding):  # pylint: disable=unused-argument
  return layers._native_conv(x, kernel, stride, padding)  # pylint: disable=protected-access


@pytest.mark.parametrize("kernel_case", KERNELS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernel_gradient_exact_with_rows_over_context(layout, kernel_case):
  """`layers.convolve` under context parallelism, forward and backward: each device on its own rows plus its
  neighbours' edge rows (parallel/convolution.py), including the layouts where XLA's own partitioning gets the kernel
  gradient wrong; where a neighbour's rows are not enough (7x7 over 2 rows per device), XLA's partitioning, tap by
  tap where some device axis holds copies of the input. Exact every way."""
  mesh, batch = LAYOUTS[layout]
  want = _gradients(layers.convolve, batch=batch, kernel_case=kernel_case)
  got = _gradients(layers.convolve, mesh, batch, kernel_case)
  for name, w, g in zip(("input gradient", "kernel gradient"), want, got):
    np.testing.assert_allclose(g, w, rtol=0, atol=2e-5 * float(jnp.abs(w).max()), err_msg=name)


def test_plan_takes_kernel_gradients_by_taps_only_where_a_device_axis_holds_copies():
  from diffst_jax.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import plan as plan_lib  # pylint: disable=import-outside-toplevel

  expected = {"fsdp2_context4_filled": False, "fsdp2_context4_one_clip": True, "context8": False,
              "fsdp2_context2_tensor2": True}
  for layout, (mesh, batch) in LAYOUTS.items():
    by_taps = plan_lib.ExecutionPlan(mesh_lib.make_mesh(mesh)).kernel_gradient_by_taps((batch, 5, 16, 8, 3))
    assert by_taps == expected[layout], layout
  assert not plan_lib.ExecutionPlan(mesh_lib.make_mesh({"fsdp": 2, "context": 4})).kernel_gradient_by_taps(
      (1, 5, 6, 8, 3)), "rows that do not split over context stay whole: nothing to work around"


@pytest.mark.parametrize("layout", ["fsdp2_context4_one_clip", "fsdp2_context2_tensor2"])
def test_xla_kernel_gradient_defect_the_plan_works_around(layout):
  """XLA's own kernel gradient with rows over context and the input replicated over another axis comes out
  multiplied by the copies (jax 0.10.2). If this starts failing, XLA is fixed: `kernel_gradient_by_taps` can go."""
  mesh, batch = LAYOUTS[layout]
  want = _gradients(_xla_native, batch=batch)
  got = _gradients(_xla_native, mesh, batch)
  np.testing.assert_allclose(got[1], 2 * want[1], rtol=1e-4, atol=1e-4)
