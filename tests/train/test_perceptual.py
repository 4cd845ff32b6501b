"""L_perc, the perceptual distance between clips as a training loss: zero at the target, finite gradients, the mean
over frames, the same under a mesh as on one device. The networks' own tests: tests/models/test_perceptual.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.models import perceptual as networks
from diffst_jax.parallel import mesh as parallel_mesh
from diffst_jax.parallel import plan as plan_lib
from diffst_jax.train import perceptual

ONE_DEVICE = plan_lib.ExecutionPlan()

@pytest.mark.parametrize("kind,weights", [("lpips", "vgg"), ("dists", "dists")])
def test_loss_is_zero_at_the_target_and_has_finite_gradients_under_jit(loaded, kind, weights):
  rng = np.random.default_rng(1)
  output, target = (jnp.asarray(rng.uniform(-1, 1, (1, 2, 32, 32, 3)), jnp.float32) for _ in range(2))
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda o, t, params: perceptual.perceptual_loss(ONE_DEVICE, kind, params, o, t)))
  loss, grad = loss_and_grad(output, target, loaded(weights))
  assert float(loss) > 0.05 and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
  loss, grad = loss_and_grad(target, target, loaded(weights))
  assert abs(float(loss)) < 1e-6 and bool(jnp.all(jnp.isfinite(grad)))


def test_clip_loss_is_the_mean_over_frames_and_symmetric(loaded):
  rng = np.random.default_rng(2)
  output, target = (jnp.asarray(rng.uniform(-1, 1, (2, 3, 32, 32, 3)), jnp.float32) for _ in range(2))
  params, frame_score = loaded("alex"), jax.jit(networks.lpips, static_argnums=0)
  per_frame = [frame_score(ONE_DEVICE, params, output[b, t][None], target[b, t][None]) for b in range(2)
               for t in range(3)]
  loss = jax.jit(perceptual.perceptual_loss, static_argnums=(0, 1))
  np.testing.assert_allclose(loss(ONE_DEVICE, "lpips", params, output, target), np.mean(per_frame), rtol=1e-5)
  np.testing.assert_allclose(loss(ONE_DEVICE, "lpips", params, target, output), np.mean(per_frame), rtol=1e-5)


def test_bad_arguments_are_named(loaded):
  clip = jnp.zeros((1, 2, 32, 32, 3))
  with pytest.raises(ValueError, match="unknown kind 'ssim'"):
    perceptual.perceptual_loss(ONE_DEVICE, "ssim", loaded("alex"), clip, clip)
  with pytest.raises(ValueError, match=r"needs load\('dists'\)"):
    perceptual.perceptual_loss(ONE_DEVICE, "dists", loaded("alex"), clip, clip)
  with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
    perceptual.perceptual_loss(ONE_DEVICE, "lpips", loaded("alex"), clip[0], clip[0])
  with pytest.raises(ValueError, match="at least 32x32"):
    networks.lpips(ONE_DEVICE, loaded("alex"), clip[0, :, :16], clip[0, :, :16])
  with pytest.raises(ValueError, match="unknown net 'squeeze'"):
    perceptual.load_lpips("squeeze")


def test_training_loss_kinds_pick_their_network():
  assert perceptual.load("lpips").net == "vgg"
  assert perceptual.load("lpips_alex").net == "alex"
  with pytest.raises(ValueError, match="unknown perceptual loss 'ssim'"):
    perceptual.load("ssim")


@pytest.mark.parametrize("mesh_shape", ["fsdp=2,context=2,tensor=2", "data=2,context=4", "context=8"])
def test_loss_and_gradient_under_a_mesh_equal_one_device(loaded, mesh_shape):
  """The frames spread over every batch and context device (7 frames of 2 clips over 4 or 8 devices: padded), rows
  of each frame whole; the clips come in laid out as the decoder leaves them, rows over context."""
  rng = np.random.default_rng(2)
  output, target = (jnp.asarray(rng.uniform(-1, 1, (2, 7, 32, 48, 3)), jnp.float32) for _ in range(2))
  loss_and_grad = lambda execution_plan: lambda o, t, params: jax.value_and_grad(  # noqa: E731
      lambda o: perceptual.perceptual_loss(execution_plan, "lpips_alex", params, o, t))(o)
  expected = jax.jit(loss_and_grad(ONE_DEVICE))(output, target, loaded("alex"))
  mesh = parallel_mesh.make_mesh(mesh_shape)
  with plan_lib.activate(mesh) as execution_plan:
    clips = jax.sharding.NamedSharding(mesh, execution_plan.spec(("act_batch", None, "act_rows"), output.shape))
    sharded = jax.jit(loss_and_grad(execution_plan))(jax.device_put(output, clips), jax.device_put(target, clips),
                                                     loaded("alex"))
  np.testing.assert_allclose(sharded[0], expected[0], rtol=1e-5)
  np.testing.assert_allclose(sharded[1], expected[1], rtol=0, atol=1e-5 * float(jnp.abs(expected[1]).max()))


def test_per_image_plan_spreads_images_over_batch_and_context_axes():
  images = plan_lib.ExecutionPlan(parallel_mesh.make_mesh("data=2,context=2,tensor=2")).for_images()
  assert images.axis_size("act_batch") == 4 and images.axis_size("act_rows") == 1
  assert images.spec(("act_batch",), (8,)) == jax.sharding.PartitionSpec(("data", "fsdp", "context"))
