"""The train step: finite losses, only trainable parameters move, the frozen VAE stays bit-identical."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffst_jax.models import diffst
from diffst_jax.parallel import plan as plan_lib
from diffst_jax.train import losses, perceptual, tasks
from diffst_jax.train import step as train_step

ALL_TERMS = dict(latent=1.0, rec=1.0, perceptual=0.5, consistency=1.0)
ONE_DEVICE = plan_lib.ExecutionPlan()
STAGES = [dict(steps=3, learning_rate=1e-3, warmup_steps=0), dict(steps=2, learning_rate=1e-4, warmup_steps=2)]


def _batch(seed: int):
  rng = np.random.default_rng(seed)
  hr = rng.integers(0, 256, (1, 9, 32, 32, 3), dtype=np.uint8)
  return {"hr": hr, "lr": hr[:, ::2, ::4, ::4]}


def _leaves(state: nnx.State) -> dict:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(state))}


def test_two_steps_move_only_trainable_parameters(tiny_config):
  config = tiny_config.to_dict()
  config["vae"] = {**config["vae"], "num_res_blocks": 1}  # which parameters move does not depend on the VAE's depth
  model = diffst.init(diffst.DiffSTConfig.from_dict(config), seed=3)
  before = _leaves(nnx.state(model))
  graphdef, trainable, frozen = nnx.split(model, tasks.get("diffst").trainable(), ...)
  frozen_before = _leaves(frozen)
  tx, schedule = train_step.make_optimizer(STAGES, b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-4, clip_norm=1.0)
  state = train_step.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
  xla_convolutions = plan_lib.ExecutionPlan(conv_implementation="xla")  # compiles faster than the CPU default
  run = train_step.make_train_step(tasks.get("diffst"), graphdef, tx, schedule, ALL_TERMS, "lpips_alex",
                                   xla_convolutions)
  lpips = perceptual.load("lpips_alex")
  for seed in range(2):
    state, metrics = run(state, frozen, lpips, _batch(seed))
    for name in ("loss", "loss_latent", "loss_rec", "loss_perceptual", "loss_consistency", "grad_norm"):
      assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name
  assert int(state.step) == 2

  after = _leaves(nnx.state(nnx.merge(graphdef, state.trainable, frozen)))
  assert after.keys() == before.keys()
  moved = {name for name in before if not np.array_equal(before[name], after[name])}
  assert moved and all("vae" not in name and "null_context" not in name for name in moved)
  assert any("dit" in name for name in moved) and any("cfca" in name for name in moved)
  assert any("vrg" in name for name in moved)
  assert all(np.array_equal(frozen_before[name], leaf) for name, leaf in _leaves(frozen).items())
  optimizer_paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(state.opt_state)]
  assert any("dit" in path for path in optimizer_paths)
  assert not any("vae" in path for path in optimizer_paths)  # no optimizer state for the frozen VAE


@pytest.mark.slow  # 1.5 min; tests/train/test_loop.py trains the autoencoder task end to end in the default run
def test_autoencoder_task_trains_the_vae(tiny_config):
  from diffst_jax.models.vae import WanVAE, WanVAEConfig  # pylint: disable=import-outside-toplevel

  vae = WanVAE(WanVAEConfig(**tiny_config.vae), rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  graphdef, trainable, frozen = nnx.split(vae, tasks.get("autoencoder").trainable(), ...)
  tx, schedule = train_step.make_optimizer(STAGES, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1.0)
  state = train_step.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
  run = train_step.make_train_step(tasks.get("autoencoder"), graphdef, tx, schedule, dict(rec=1.0, consistency=1.0),
                                   "lpips", plan_lib.ExecutionPlan())
  before = _leaves(trainable)
  state, metrics = run(state, frozen, None, _batch(0))
  assert np.isfinite(float(metrics["loss"])) and set(metrics) >= {"loss_rec", "loss_consistency"}
  after = _leaves(state.trainable)
  assert sum(not np.array_equal(before[name], after[name]) for name in before) > len(before) // 2


def test_learning_rate_schedule_warms_up_per_stage():
  schedule = train_step.learning_rate_schedule(STAGES)
  got = [float(schedule(step)) for step in range(5)]
  np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-3, 0.0, 5e-5], rtol=1e-6)


def test_cosine_decay_reaches_zero_at_the_stage_end():
  stages = [dict(steps=5, learning_rate=1e-3, warmup_steps=1, decay="cosine"), dict(steps=2, learning_rate=1e-4,
                                                                                     warmup_steps=0)]
  got = [float(train_step.learning_rate_schedule(stages)(step)) for step in range(7)]
  # warm-up step 0, then 1e-3 * (1 + cos(pi k / 4)) / 2 for k = 0..3, then the next stage's constant rate.
  want = [0.0] + [1e-3 * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)] + [1e-4, 1e-4]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
  with pytest.raises(ValueError, match="decay is 'linear'"):
    train_step.learning_rate_schedule([dict(steps=5, learning_rate=1e-3, warmup_steps=0, decay="linear")])


def test_parameter_average_follows_the_updates_it_passes_through():
  params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
  grad = jax.grad(lambda p: jnp.sum((p["w"] - 4.0) ** 2) + p["b"] ** 2)
  optimizers = [train_step.make_optimizer(STAGES, b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-4, clip_norm=1.0,
                                          ema_decay=ema_decay)[0] for ema_decay in (0.0, 0.8)]
  trajectories, states = [], []
  for tx in optimizers:
    p, opt_state, trajectory = params, tx.init(params), []
    for _ in range(5):
      updates, opt_state = tx.update(grad(p), opt_state, p)
      p = optax.apply_updates(p, updates)
      trajectory.append(jax.tree.map(np.asarray, p))
    trajectories.append(trajectory)
    states.append(opt_state)
  assert train_step.averaged_parameters(states[0]) is None
  for plain, averaged in zip(*trajectories):  # the average does not change the updates
    np.testing.assert_array_equal(plain["w"], averaged["w"])
  # a_0 = p_0; a_{k+1} = d_k a_k + (1 - d_k) p_{k+1} with d_k = min(0.8, (1 + k) / (10 + k)).
  want = {name: np.asarray(value) for name, value in params.items()}
  for k, p in enumerate(trajectories[0]):
    d = min(0.8, (1 + k) / (10 + k))
    want = {name: d * want[name] + (1 - d) * p[name] for name in want}
  got = train_step.averaged_parameters(states[1])
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
  assert not np.allclose(got["w"], trajectories[1][-1]["w"])
  with pytest.raises(ValueError, match=r"ema_decay is 1.5; expected a decay in \[0, 1\)"):
    train_step.make_optimizer(STAGES, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1.0, ema_decay=1.5)


@pytest.mark.parametrize("task, weights, message", [
    ("diffst", dict(latent=0.0), "all loss weights 0"),
    ("diffst", dict(latnet=1.0), "unknown loss terms"),
    ("autoencoder", dict(latent=1.0, rec=1.0), "no latent loss"),
])
def test_bad_loss_weights_are_named(task, weights, message):
  with pytest.raises(ValueError, match=message):
    tasks.get(task).check_loss_weights(weights)


def test_unknown_task_is_named():
  with pytest.raises(ValueError, match="task must be one of"):
    tasks.get("gan")


def test_pixel_losses_on_the_unit_range_are_doves():
  rng = np.random.default_rng(0)
  target = jnp.asarray(rng.uniform(-1, 1, (1, 3, 4, 4, 3)), jnp.float32)
  output = jnp.asarray(rng.uniform(-1.5, 1.5, (1, 3, 4, 4, 3)), jnp.float32)
  weights = dict(rec=1.0, consistency=1.0)
  unit = losses.pixel_terms(ONE_DEVICE, output, target, weights, "lpips", None, "unit")
  symmetric = losses.pixel_terms(ONE_DEVICE, output, target, weights, "lpips", None, "symmetric")
  # DOVE: (x * 0.5 + 0.5).clamp(0, 1) for the decoded clip, x * 0.5 + 0.5 for the ground truth.
  out01, target01 = np.clip(np.asarray(output) * 0.5 + 0.5, 0, 1), np.asarray(target) * 0.5 + 0.5
  np.testing.assert_allclose(unit["rec"], np.mean((out01 - target01) ** 2), rtol=1e-6)
  np.testing.assert_allclose(unit["consistency"], np.mean(np.abs(np.diff(out01, axis=1) - np.diff(target01, axis=1))),
                             rtol=1e-6)
  np.testing.assert_allclose(symmetric["rec"], np.mean((np.asarray(output) - np.asarray(target)) ** 2), rtol=1e-6)
  inside = jnp.clip(output, -1, 1)
  inside_terms = losses.pixel_terms(ONE_DEVICE, inside, target, weights, "lpips", None, "symmetric")
  np.testing.assert_allclose(inside_terms["rec"], 4 * unit["rec"], rtol=1e-6)
  rec = lambda o: losses.pixel_terms(ONE_DEVICE, o, target, dict(rec=1.0), "lpips", None, "unit")["rec"]  # noqa: E731
  gradient = jax.grad(rec)(output)
  assert not np.asarray(gradient)[np.abs(np.asarray(output)) > 1].any()  # clamped pixels get no gradient
  with pytest.raises(ValueError, match="pixel_range is 'zero_one'"):
    losses.pixel_terms(ONE_DEVICE, output, target, weights, "lpips", None, "zero_one")


def test_a_fresh_optimizer_starts_adam_anew_on_the_schedule_it_reached():
  params = {"dit": jnp.array([1.0, -2.0, 3.0]), "cfca": jnp.array([0.5, 0.25, -1.0])}
  grad = {"dit": jnp.array([0.3, -0.2, 0.1]), "cfca": jnp.array([0.3, -0.2, 0.1])}
  stages = [dict(steps=3, learning_rate=1e-3, warmup_steps=0), dict(steps=4, learning_rate=1e-4, warmup_steps=2)]
  tx, schedule = train_step.make_optimizer(stages, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=10.0,
                                           ema_decay=0.5, learning_rate_scale={"cfca": 5.0})
  opt_state = tx.init(params)
  for _ in range(4):  # three steps of stage 1 and the first of stage 2's warm-up
    _, opt_state = tx.update(grad, opt_state, params)
  average = train_step.averaged_parameters(opt_state)
  fresh = train_step.fresh_moments(opt_state)
  adam_states = [node for node in jax.tree.leaves(fresh, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))
                 if isinstance(node, optax.ScaleByAdamState)]
  assert len(adam_states) == 2  # one per learning rate: cfca's and the rest's
  assert all(int(s.count) == 0 for s in adam_states)
  assert all(not np.asarray(moment).any() for s in adam_states for moment in jax.tree.leaves((s.mu, s.nu)))
  jax.tree.map(np.testing.assert_array_equal, train_step.averaged_parameters(fresh), average)
  updates, _ = tx.update(grad, fresh, params)
  # A first Adam step is -rate * g / (|g| + eps); the rate is the schedule's at global step 4 (warm-up: 5e-5), x5
  # for cfca.
  rate = float(schedule(4))
  assert rate == pytest.approx(5e-5)
  first_step = -np.asarray(grad["dit"]) / (np.abs(np.asarray(grad["dit"])) + 1e-8)
  np.testing.assert_allclose(updates["dit"], rate * first_step, rtol=1e-5)
  np.testing.assert_allclose(updates["cfca"], 5 * rate * first_step, rtol=1e-5)
