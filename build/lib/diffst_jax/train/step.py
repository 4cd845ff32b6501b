"""One jit-compiled training step (DESIGN §7) of a task (train/tasks.py: its model, trainable parts and losses), and
the optimizer: AdamW on a schedule of stages, per-part learning rates, a moving average of the parameters.

The model is split once into (graphdef, trainable, frozen); the step is a pure function of a `TrainState` (donated)
and a batch of uint8 clips {"lr": (B, N, h, w, 3), "hr": (B, s_t (N-1) + 1, s_x h, s_x w, 3)}, traced under the
run's execution plan (parallel/plan.py), which the step's maker takes.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from diffst_jax.parallel import plan as plan_lib
from diffst_jax.train import losses
from diffst_jax.train.tasks import Task

class TrainState(NamedTuple):
  step: jax.Array
  trainable: nnx.State
  opt_state: optax.OptState


DECAYS = ("constant", "cosine")


def learning_rate_schedule(stages: list[Mapping[str, Any]]) -> optax.Schedule:
  """Per stage: linear warm-up from 0 over `warmup_steps`, then `learning_rate`, held ("constant") or decayed to 0 at
  the stage's end ("cosine"); stages back to back."""
  schedules, boundaries, start = [], [], 0
  for stage in stages:
    decay = stage.get("decay", "constant")
    if decay not in DECAYS:
      raise ValueError(f"a stage's decay is {decay!r}; expected one of {DECAYS}")
    rate, warmup_steps = stage["learning_rate"], stage["warmup_steps"]
    after_warmup = (optax.constant_schedule(rate) if decay == "constant" else
                    optax.cosine_decay_schedule(rate, max(stage["steps"] - warmup_steps, 1)))
    schedules.append(optax.join_schedules([optax.linear_schedule(0.0, rate, warmup_steps), after_warmup],
                                          [warmup_steps]) if warmup_steps else after_warmup)
    start += stage["steps"]
    boundaries.append(start)
  return optax.join_schedules(schedules, boundaries[:-1])


class AverageState(NamedTuple):
  count: jax.Array
  average: optax.Params


def ema_decay_at(count: jax.Array, ema_decay: float) -> jax.Array:
  """The average's decay at its `count`-th update (0-based): `ema_decay`, lowered early on to (1 + count) /
  (10 + count) so the average does not hold on to the starting parameters for ~1 / (1 - ema_decay) steps."""
  return jnp.minimum(ema_decay, (1.0 + count) / (10.0 + count))


def parameter_average(ema_decay: float) -> optax.GradientTransformation:
  """Last in a chain: passes the updates through and keeps, in its state, an exponential moving average of the
  parameters they lead to. Kept in the optimizer state, it is checkpointed and sharded like the Adam moments."""

  def init(params):
    return AverageState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params))

  def update(updates, state, params):
    step_size = 1.0 - ema_decay_at(state.count, ema_decay)
    average = optax.incremental_update(optax.apply_updates(params, updates), state.average, step_size)
    return updates, AverageState(state.count + 1, average)

  return optax.GradientTransformation(init, update)


def fresh_moments(opt_state: optax.OptState) -> optax.OptState:
  """`opt_state` with Adam's moments and step count back at zero, as a new launch would start them; the learning
  rate schedule (indexed by the global step) and the parameters' moving average go on."""
  def reset(node):
    if isinstance(node, optax.ScaleByAdamState):
      return optax.ScaleByAdamState(jnp.zeros_like(node.count), *(jax.tree.map(jnp.zeros_like, moment)
                                                                   for moment in (node.mu, node.nu)))
    return node
  return jax.tree.map(reset, opt_state, is_leaf=lambda node: isinstance(node, optax.ScaleByAdamState))


def averaged_parameters(opt_state: optax.OptState) -> optax.Params | None:
  """The moving average `parameter_average` keeps in `opt_state`, or None without one."""
  return next((inner.average for inner in opt_state if isinstance(inner, AverageState)), None)


def part_of(params) -> Any:
  """The tree of `params` with each leaf replaced by its part's name (the first key of its path: dit, cfca, ...)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: str(getattr(path[0], "key", path[0])), params)


def make_optimizer(stages: list[Mapping[str, Any]], b1: float, b2: float, eps: float, weight_decay: float,
                   clip_norm: float, ema_decay: float = 0.0, learning_rate_scale: Mapping[str, float] | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with warm-up and global-norm clipping (DESIGN §7); with `ema_decay` (e.g. 0.999) it also keeps a moving
  average of the parameters (`averaged_parameters`). `learning_rate_scale` ({part: factor}) gives the named parts
  (`part_of`) their own rate, the schedule's times the factor, through optax.multi_transform."""
  if not 0 <= ema_decay < 1:
    raise ValueError(f"optimizer.ema_decay is {ema_decay}; expected a decay in [0, 1) (0: no moving average)")
  schedule = learning_rate_schedule(stages)
  adamw = lambda rate: optax.adamw(rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)  # noqa: E731
  if learning_rate_scale:
    scaled = {part: adamw(lambda count, factor=float(factor): factor * schedule(count))
              for part, factor in learning_rate_scale.items()}
    labels = lambda params: jax.tree.map(lambda part: part if part in scaled else "rest", part_of(params))  # noqa: E731
    update = optax.multi_transform({**scaled, "rest": adamw(schedule)}, labels)
  else:
    update = adamw(schedule)
  transforms = [optax.clip_by_global_norm(clip_norm), update]
  if ema_decay:
    transforms.append(parameter_average(ema_decay))
  return optax.chain(*transforms), schedule


def make_preview(task: Task, graphdef: nnx.GraphDef, plan: plan_lib.ExecutionPlan) -> Callable:
  """`preview(trainable, frozen, batch) -> (output, target)`, jit-compiled: what the model makes of the batch's
  first clip (`task.output` under `plan`) and the HR clip, in [-1, 1]."""

  @jax.jit
  def preview(trainable, frozen, batch):
    model = nnx.merge(graphdef, trainable, frozen)
    first = jax.tree.map(lambda clips: clips[:1], batch)
    return task.output(plan, model, first), losses.to_unit_range(first["hr"])

  return preview


def make_loss_fn(task: Task, graphdef: nnx.GraphDef, weights: Mapping[str, float], perceptual_kind: str,
                 plan: plan_lib.ExecutionPlan, pixel_range: str = "unit") -> Callable:
  """`loss(trainable, frozen, perceptual_params, batch) -> (weighted total, {term: value})`, under `plan`."""
  task.check_loss_weights(weights)
  weights = {term: float(weight) for term, weight in weights.items() if weight}

  def total_loss(trainable, frozen, perceptual_params, batch):
    model = nnx.merge(graphdef, trainable, frozen)
    terms = task.losses(plan, model, batch, weights, perceptual_kind, perceptual_params, pixel_range)
    return sum(weights[term] * value for term, value in terms.items()), terms

  return total_loss


def make_train_step(task: Task, graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    weights: Mapping[str, float], perceptual_kind: str, plan: plan_lib.ExecutionPlan,
                    state_sharding=None, pixel_range: str = "unit") -> Callable:
  """`step(state, frozen, perceptual_params, batch) -> (state, metrics)` under `plan`, jit-compiled with `state`
  donated; with `state_sharding` (a TrainState of shardings) the new state keeps it and the metrics are
  replicated."""
  total_loss = make_loss_fn(task, graphdef, weights, perceptual_kind, plan, pixel_range)
  out_shardings = None
  if state_sharding is not None:
    mesh = jax.tree.leaves(state_sharding)[0].mesh
    out_shardings = (state_sharding, NamedSharding(mesh, PartitionSpec()))

  @functools.partial(jax.jit, donate_argnums=0, out_shardings=out_shardings)
  def step(state: TrainState, frozen: nnx.State, perceptual_params, batch) -> tuple[TrainState, dict]:
    (loss, terms), grads = jax.value_and_grad(total_loss, has_aux=True)(state.trainable, frozen, perceptual_params,
                                                                         batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    metrics = {"loss": loss, **{f"loss_{term}": value for term, value in terms.items()},
               "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
    return TrainState(state.step + 1, trainable, opt_state), metrics

  return step
