"""Training losses against numpy references and their defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffst_jax.train import losses


@pytest.fixture
def clips():
  rng = np.random.default_rng(0)
  return rng.uniform(-1, 1, (2, 5, 6, 7, 3)).astype(np.float32), rng.uniform(-1, 1, (2, 5, 6, 7, 3)).astype(np.float32)


def test_mse_losses_match_numpy(clips):
  a, b = clips
  expected = np.mean((a.astype(np.float64) - b) ** 2)
  np.testing.assert_allclose(losses.reconstruction_loss(a, b), expected, rtol=1e-5)
  np.testing.assert_allclose(losses.latent_loss(a[..., :2], b[..., :2]), np.mean((a[..., :2] - b[..., :2]) ** 2),
                             rtol=1e-5)


def test_consistency_loss_matches_numpy_and_ignores_static_offsets(clips):
  a, b = clips
  expected = np.mean(np.abs(np.diff(a, axis=1) - np.diff(b, axis=1)))
  np.testing.assert_allclose(losses.consistency_loss(a, b), expected, rtol=1e-5)
  offset = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 1, 6, 7, 3)).astype(np.float32)
  assert float(losses.consistency_loss(b + offset, b)) < 1e-6  # a constant error has no temporal component
  assert float(losses.reconstruction_loss(b + offset, b)) > 0.01


def test_losses_are_differentiable_and_zero_at_the_target(clips):
  a, b = clips
  for loss in (losses.reconstruction_loss, losses.latent_loss, losses.consistency_loss):
    assert float(loss(jnp.asarray(b), jnp.asarray(b))) == 0.0
    grad = jax.grad(loss)(jnp.asarray(a), jnp.asarray(b))
    assert grad.shape == a.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_consistency_needs_two_frames():
  with pytest.raises(ValueError, match="at least 2 frames"):
    losses.consistency_loss(jnp.zeros((1, 1, 4, 4, 3)), jnp.zeros((1, 1, 4, 4, 3)))
