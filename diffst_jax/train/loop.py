"""The training loop: data, model, stages, logging, Orbax checkpoints, resuming and clean stops.

A work directory holds everything of one run: `config.json` (the resolved config), `checkpoints/` (Orbax, every
`checkpoint_every` steps, the last `keep_checkpoints` kept; each holds the train state and the data iterator's
position), `metrics.jsonl`, `tensorboard/`, and at the end `model/` (the trained model as our checkpoint, what
`infer.py --checkpoint` and `init.vae` take; with `optimizer.ema_decay`, the moving average of its parameters).
Running the same command on the directory again resumes exactly; SIGTERM (or Ctrl-C) saves a checkpoint and stops.
The work directory and the videos may lie in object storage (gs://, io/paths.py); the clips are read from local disk.
"""

import dataclasses
import json
import pathlib
import shutil
import signal
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from diffst_jax.data import builder, pipeline
from diffst_jax.io import checkpoint, paths, strips, tensorboard
from diffst_jax.parallel import distributed, rules
from diffst_jax.parallel import plan as plan_lib
from diffst_jax.parallel.mesh import make_mesh
from diffst_jax.train import curves, defaults, perceptual, tasks
from diffst_jax.train import step as train_step

# The execution plan's choices a run makes (parallel/plan.py).
PLAN_CHOICES = ("conv_implementation", "attention", "attention_block_size", "context_parallel")
# Settings a resumed run may change; anything else must match the run in the work directory.
RUN_CONTROL = ("log_every", "strip_every", "checkpoint_every", "keep_checkpoints", *PLAN_CHOICES, "mesh",
               "data.workers", "data.videos", "data.prepared")


@dataclasses.dataclass
class _StopRequest:
  requested: bool = False

  def __call__(self, signum, frame):
    del frame
    self.requested = True
    distributed.say(f"\nsignal {signal.Signals(signum).name}: saving a checkpoint and stopping after this step",
                    flush=True)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = list(value) if isinstance(value, tuple) else value
  return flat


def _resolved(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(json.dumps(config.to_dict(), default=list))


def _record_config(workdir: paths.Path, config: ml_collections.ConfigDict) -> None:
  """Writes config.json, after checking a resumed run's config against it: process 0 checks and writes while the
  others wait, then they check (none reads the file while it is written)."""

  def record():
    _check_config(workdir, config)
    if jax.process_index() == 0:
      (workdir / "config.json").write_text(json.dumps(_resolved(config), indent=2) + "\n")

  distributed.first_process_does(record, f"checking the run in {workdir}")


def _check_config(workdir: paths.Path, config: ml_collections.ConfigDict) -> None:
  """Raises unless `workdir` is new, or a run of `config` (settings of RUN_CONTROL aside)."""
  path = workdir / "config.json"
  resolved = _resolved(config)
  if not path.exists() and paths.entries(workdir):
    raise ValueError(f"{workdir}: holds files but no run of train.py (no config.json); use a new or empty --workdir")
  if path.exists():
    try:
      recorded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: damaged, not valid JSON ({e}); restore it, or use a new --workdir") from e
    before, now = _flatten(recorded), _flatten(resolved)
    # A setting added to the defaults after the run started counts as unchanged while it keeps its default, or the
    # value that reproduces what the run did before it existed (defaults.BEFORE_THEY_EXISTED).
    legacy, default = defaults.BEFORE_THEY_EXISTED, _flatten(_resolved(defaults.training_defaults()))
    added = {k: legacy[k] if k in legacy else legacy.get(k.rsplit(".", 1)[-1], default.get(k))
             for k in now if k not in before}
    changed = sorted(k for k in before.keys() | now.keys()
                     if before.get(k, added.get(k)) != now.get(k) and not any(k.startswith(c) for c in RUN_CONTROL)
                     and not _retired_model_field(k))
    if changed:
      raise ValueError(f"{workdir} holds a run with another config (differs in {', '.join(changed)}); "
                       "use a new --workdir, or the same config to resume")


def _retired_model_field(key: str) -> bool:
  """Whether `key` is a model setting that became the run's (an older run's config.json holds model.dit.attention)."""
  return key.startswith("model.") and key.rsplit(".", 1)[-1] in checkpoint.RETIRED_CONFIG_FIELDS


def _stages(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  stages = [config.stages[name].to_dict() for name in sorted(config.stages)]
  for stage in stages:
    tasks.get(config.task).check_loss_weights(stage["loss"])
  return stages


def _export(model: nnx.Module, config: ml_collections.ConfigDict, directory: paths.Path) -> None:
  """Writes the trained model to `directory` unless it is there whole; an export that was cut short is redone."""
  if checkpoint.is_checkpoint(directory):
    return
  if checkpoint.is_incomplete(directory):
    distributed.say(f"{directory}: the export of the trained model was cut short; writing it again", flush=True)
  tasks.get(config.task).export(model, config, directory)
  distributed.say(f"trained model written to {directory}", flush=True)


def _prepared_clips(config: ml_collections.ConfigDict, workdir: paths.Path) -> pathlib.Path:
  """The local folder of the run's clips, prepared from `data.videos` if need be. In a local work directory (or a
  local `data.prepared`) process 0 prepares them for all; with a remote work directory each process prepares a
  private copy in its machine's cache (the array_record files are read from local disk), from a local copy of
  remote videos."""
  if not config.data.videos:
    raise ValueError("no training data: set --config.data.videos=FOLDER (a folder of HR videos)")
  videos = paths.resolve(config.data.videos)
  prepared = paths.resolve(config.data.prepared) if config.data.prepared else workdir / "data"
  if not paths.is_local(prepared) and config.data.prepared:
    raise ValueError(f"data.prepared = {config.data.prepared}: must be a local folder (the clips are read from local "
                     "disk); leave it empty to prepare them in each machine's cache")
  private = paths.private_cache(videos, prepared, process_index=jax.process_index())
  videos = paths.local_copy(videos, private / "videos")
  if not paths.is_local(prepared):
    return builder.prepare(videos, private / "clips", config.data.clip_frames)
  return distributed.first_process_does(lambda: builder.prepare(videos, prepared, config.data.clip_frames),
                                        f"preparing the dataset of {config.data.videos}")


def _dataset(config: ml_collections.ConfigDict, workdir: paths.Path):
  prepared = _prepared_clips(config, workdir)
  model = config.model
  return pipeline.make_dataset(
      prepared, clip_frames=config.data.clip_frames, crop_size=config.data.crop_size,
      space_scale=model.space_scale, time_scale=model.cfca.time_scale, batch_size=config.data.batch_size,
      seed=config.seed, num_workers=config.data.workers, with_lr=tasks.get(config.task).uses_lr,
      degradation_window=config.data.degradation_window, augment=config.data.augment,
      degradation=config.data.degradation,
      process_index=jax.process_index(), process_count=jax.process_count())


class _Logger:
  """Metrics to metrics.jsonl and TensorBoard event files, from the first process of a multi-host run."""

  def __init__(self, workdir: paths.Path):
    SummaryWriter = tensorboard.summary_writer_class()  # pylint: disable=invalid-name

    self._enabled = jax.process_index() == 0
    self._jsonl = workdir / "metrics.jsonl"
    if self._enabled:
      self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

  def image(self, step: int, name: str, picture: np.ndarray) -> None:
    if self._enabled:
      self._tensorboard.add_image(name, picture, step, dataformats="HWC")

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    paths.append_text(self._jsonl, json.dumps({"step": step, **metrics}) + "\n")
    for name, value in metrics.items():
      self._tensorboard.add_scalar(name, value, step)

  def close(self) -> None:
    if self._enabled:
      self._tensorboard.close()


def _mesh(config: ml_collections.ConfigDict) -> Mesh:
  """No mesh: one device. A mesh spans every device of every process."""
  return make_mesh(config.mesh) if config.mesh else make_mesh("", jax.devices()[:1])


def _checkpoint_manager(workdir: paths.Path, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, enable_async_checkpointing=True)
  return ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "data"), options=options)


def _restore_state(program: "Program", manager: ocp.CheckpointManager, step: int, with_data: bool = True):
  """(TrainState, frozen) of checkpoint `step`, and the data iterator's state when `with_data`."""
  items = {"state": ocp.args.StandardRestore(program.abstract_state())}
  if with_data:
    items["data"] = ocp.args.JsonRestore()
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  state, frozen = restored.state
  return train_step.TrainState(*state), frozen, restored.data if with_data else None


def _restore_newest_intact(program: "Program", manager: ocp.CheckpointManager, workdir: paths.Path,
                           with_data: bool = True, set_aside: bool = True):
  """(step, TrainState, frozen, data state) of the newest checkpoint that restores. A newer one that fails while an
  older one restores is damaged (a structure or config mismatch would fail them all): each is named in one line and,
  with `set_aside`, moved to workdir/damaged_checkpoints/ (kept, out of the way of the steps still to be saved)."""
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = step, *_restore_state(program, manager, step, with_data)
    except Exception as e:  # pylint: disable=broad-except  # Orbax and TensorStore raise many kinds
      damaged.append((step, _first_line(_root_cause(e))))
      checkpoint.quiet_abandoned_reads()
      if step == min(manager.all_steps()):
        newest, reason = damaged[0]
        raise ValueError(f"{workdir / 'checkpoints' / str(newest)}: cannot be restored ({reason}), nor can any "
                         "earlier checkpoint; use a new --workdir, or this run's config") from e
      continue
    for bad, reason in damaged:
      distributed.say(f"warning: {workdir / 'checkpoints' / str(bad)}: damaged, not restored ({reason}); "
                      + (f"moved to {workdir / 'damaged_checkpoints' / str(bad)}; " if set_aside else "")
                      + f"resuming from step {step}", flush=True)
    if damaged and set_aside:
      distributed.first_process_does(lambda: _set_aside([bad for bad, _ in damaged], workdir),
                                     "moving damaged checkpoints aside")
      manager.reload()
    return restored
  raise AssertionError("no checkpoint to restore")  # callers restore only runs that have one


def _first_line(error: BaseException) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None:
    error = error.__cause__
  return error


def _set_aside(steps: list[int], workdir: paths.Path) -> None:
  aside = workdir / "damaged_checkpoints"
  aside.mkdir(exist_ok=True)
  for step in steps:
    target = aside / str(step)
    if target.exists():
      target = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    (workdir / "checkpoints" / str(step)).rename(target)


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                      directory: str | pathlib.Path) -> int:
  """Writes the model of the latest checkpoint of the run in `workdir` (of this config; the run may be going on) to
  `directory`, a new folder, as the end of training would (the parameters' moving average, if kept); returns the
  checkpoint's step."""
  workdir = paths.resolve(workdir)
  if not (workdir / "config.json").is_file():
    raise ValueError(f"{workdir}: no run of train.py to export from (no config.json)")
  _check_config(workdir, config)  # the run's own config.json is left as it is
  checkpoint.check_can_save(directory)
  axis_rules, mesh = rules.rules_from_config(config.logical_axis_rules), _mesh(config)
  with _checkpoint_manager(workdir, config) as manager:
    if manager.latest_step() is None:
      raise ValueError(f"{workdir}: the run has no checkpoint yet (one is written every "
                       f"{config.checkpoint_every} steps and when it is stopped)")
    # Built with no mesh active, as train() builds it: under one, Flax reads the logical axis names as mesh axes.
    execution_plan = plan_lib.ExecutionPlan(mesh, axis_rules, **run_choices(config))
    program = make_program(config, tasks.get(config.task).abstract(config), execution_plan)
    step, state, frozen, _ = _restore_newest_intact(program, manager, workdir, with_data=False, set_aside=False)
    average = train_step.averaged_parameters(state.opt_state)
    _export(nnx.merge(program.graphdef, state.trainable if average is None else average, frozen), config,
            paths.resolve(directory))
  return step


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
  """Runs (or resumes) training in `workdir`; returns the last logged metrics."""
  axis_rules = rules.rules_from_config(config.logical_axis_rules)
  mesh = _mesh(config)
  workdir = paths.resolve(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"{workdir}: --workdir exists and is a file; name a new folder, or a run's to resume it")
  before = {entry.name for entry in paths.entries(workdir)} if workdir.exists() else None
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    _record_config(workdir, config)
    with _checkpoint_manager(workdir, config) as manager:
      # Built before the mesh is active: under it, Flax reads the parameters' logical axis names as mesh axes.
      task = tasks.get(config.task)
      model = task.build(config) if manager.latest_step() is None else task.abstract(config)
      with plan_lib.activate(mesh, axis_rules, **run_choices(config)) as execution_plan:
        return _train(config, workdir, execution_plan, model, manager)
  except BaseException:
    if jax.process_index() == 0:
      _remove_if_no_checkpoint(workdir, before)
    raise


def _remove_if_no_checkpoint(workdir: paths.Path, before: set[str] | None) -> None:
  """After a run that failed before its first checkpoint: removes what it added to `workdir` (config.json, the empty
  checkpoints/ folder, logs), and `workdir` itself if the run made it, so that a corrected rerun of the same
  command is not refused as another run's."""
  checkpoints = workdir / "checkpoints"
  if any(entry.name.isdigit() for entry in paths.entries(checkpoints)):
    return
  for entry in paths.entries(workdir):
    if before is None or entry.name not in before:
      if entry.is_dir():
        entry.rmtree() if hasattr(entry, "rmtree") else shutil.rmtree(entry)
      else:
        entry.unlink()
  if before is None and paths.is_local(workdir):
    workdir.rmdir()


def run_choices(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a training run tells the execution plan (parallel/plan.py) beyond mesh and rules."""
  return {name: config[name] for name in PLAN_CHOICES}


@dataclasses.dataclass(frozen=True)
class Program:
  """What every stage's train step is made of: the model split into its graph, trainable and frozen parts, the
  optimizer and its schedule, the execution plan the steps run under and the shardings of (TrainState, frozen) on
  its mesh."""

  config: ml_collections.ConfigDict
  plan: plan_lib.ExecutionPlan
  stages: list[dict[str, Any]]
  graphdef: nnx.GraphDef
  trainable: nnx.State
  frozen: nnx.State
  tx: Any
  schedule: Any
  shardings: tuple[Any, Any]

  def new_state(self, trainable: nnx.State) -> train_step.TrainState:
    return train_step.TrainState(jnp.zeros((), jnp.int32), trainable, self.tx.init(trainable))

  def abstract_state(self):
    """(TrainState, frozen) as shapes with their shardings: what a checkpoint restores onto, or AOT compiles for."""
    return rules.abstract_state((jax.eval_shape(self.new_state, self.trainable), self.frozen), self.plan.mesh,
                                self.plan.rules)

  def step(self, stage: dict[str, Any]):
    """The jit-compiled step of `stage` (one of `stages`)."""
    return train_step.make_train_step(tasks.get(self.config.task), self.graphdef, self.tx, self.schedule, stage["loss"],
                                      self.config.perceptual, self.plan, state_sharding=self.shardings[0],
                                      pixel_range=self.config.pixel_range)


def make_program(config: ml_collections.ConfigDict, model: nnx.Module, plan: plan_lib.ExecutionPlan) -> Program:
  """The train program of `config` for `model` (concrete, or abstract as `Task.abstract` makes it) under `plan`."""
  stages = _stages(config)
  tx, schedule = train_step.make_optimizer(stages, **config.optimizer.to_dict())
  graphdef, trainable, frozen = nnx.split(model, tasks.get(config.task).trainable(tasks.trains_flow(config)), ...)
  parts = sorted(set(jax.tree.leaves(train_step.part_of(trainable))))
  unknown = sorted(set(config.optimizer.learning_rate_scale) - set(parts))
  if unknown:
    raise ValueError(f"optimizer.learning_rate_scale names {', '.join(unknown)}, which this run does not train; the "
                     f"trained parts are {', '.join(parts)}")
  program = Program(config, plan, stages, graphdef, trainable, frozen, tx, schedule, (None, None))
  shardings = rules.state_shardings((jax.eval_shape(program.new_state, trainable), frozen), plan.mesh, plan.rules)
  return dataclasses.replace(program, shardings=shardings)


def _train(config: ml_collections.ConfigDict, workdir: paths.Path, plan: plan_lib.ExecutionPlan, model: nnx.Module,
           manager: ocp.CheckpointManager) -> dict[str, float]:
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  program = make_program(config, model, plan)
  stages, graphdef, frozen = program.stages, program.graphdef, program.frozen
  dataset = _dataset(config, workdir)
  latest = manager.latest_step()
  iterator = iter(dataset)
  if latest is None:
    state, frozen = jax.device_put((program.new_state(program.trainable), frozen), program.shardings)
  else:
    latest, state, frozen, data_state = _restore_newest_intact(program, manager, workdir)
    iterator.set_state(data_state)
    distributed.say(f"resumed {workdir} at step {latest}", flush=True)

  weights_needed = any(stage["loss"].get("perceptual") for stage in stages)
  perceptual_params = perceptual.load(config.perceptual) if weights_needed else None
  total_steps = sum(stage["steps"] for stage in stages)
  stop = _StopRequest()
  previous_handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
  logger = _Logger(workdir)
  preview = train_step.make_preview(tasks.get(config.task), graphdef, plan) if config.strip_every else None
  metrics, step = {}, int(state.step)
  clip_frames = config.data.batch_size * config.data.clip_frames
  stopping = False  # a signal often reaches one host only: every process stops after the same step
  try:
    progress = tqdm(total=total_steps, initial=step, desc=workdir.name, dynamic_ncols=True,
                    disable=jax.process_index() != 0)
    end = 0
    for index, stage in enumerate(stages):
      start, end = end, end + stage["steps"]
      if step >= end:
        continue
      if step == start and stage.get("fresh_optimizer"):  # as a new launch from the last stage's weights
        state = state._replace(opt_state=train_step.fresh_moments(state.opt_state))
      run_step = None
      window_start, window = time.perf_counter(), []
      while step < end and not stopping:
        batch = rules.global_batch(next(iterator), plan.mesh, plan.rules)
        if run_step is None:  # compiled by every process before any runs it, so none waits in a collective meanwhile
          run_step = program.step(stage).lower(state, frozen, perceptual_params, batch).compile()
          distributed.wait_for_every_process(f"diffst-jax: stage {index} compiled at step {step}")
          window_start = time.perf_counter()
        state, step_metrics = run_step(state, frozen, perceptual_params, batch)
        step = step + 1
        window.append(step_metrics)
        progress.update(1)
        if step % config.log_every == 0 or step == end:
          metrics = _window_means(jax.device_get(window))  # waits for the window's steps to finish
          seconds = time.perf_counter() - window_start
          metrics.update(steps_per_second=len(window) / seconds, frames_per_second=len(window) * clip_frames / seconds)
          logger.write(step, metrics)
          progress.set_postfix(loss=f"{metrics['loss']:.4g}")
          window_start, window = time.perf_counter(), []
        if preview and step % config.strip_every == 0:
          logger.image(step, "output | ground truth", _strip(*preview(state.trainable, frozen, batch)))
        stopping = distributed.any_process(stop.requested)
        if step % config.checkpoint_every == 0 or step == total_steps or stopping:
          _save(manager, step, state, frozen, iterator)
      if stopping:
        break
    progress.close()
    manager.wait_until_finished()
    if step == total_steps:
      average = train_step.averaged_parameters(state.opt_state)
      _export(nnx.merge(graphdef, state.trainable if average is None else average, frozen), config, workdir / "model")
      if jax.process_index() == 0 and (workdir / "metrics.jsonl").is_file():
        curves.plot_loss_curves([workdir], workdir / "loss.png")
    elif stopping:
      distributed.say(f"stopped at step {step}; run the same command again to resume", flush=True)
  finally:
    logger.close()
    for sig, handler in previous_handlers.items():
      signal.signal(sig, handler)
  return metrics


def _strip(output: jax.Array, target: jax.Array, frames: int = 3) -> np.ndarray:
  """The first clip's output beside its ground truth, at `frames` frames spread over the clip, uint8."""
  clips = [np.clip(np.round((np.asarray(multihost_utils.process_allgather(clip, tiled=True))[0] + 1) * 127.5), 0,
                   255).astype(np.uint8) for clip in (output, target)]
  picks = np.linspace(0, len(clips[1]) - 1, min(frames, len(clips[1]))).round().astype(int)
  return strips.comparison_strip(clips, list(picks), labels=[("output",), ("ground truth",)])


def _window_means(window: list[dict]) -> dict[str, float]:
  """Metrics averaged over the steps since the last log line (the learning rate: its latest value)."""
  means = {name: float(np.mean([m[name] for m in window])) for name in window[-1]}
  return means | {"learning_rate": float(window[-1]["learning_rate"])}


def _save(manager: ocp.CheckpointManager, step: int, state: train_step.TrainState, frozen: nnx.State,
          iterator) -> None:
  if manager.latest_step() == step:
    return
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave((state, frozen)),
                                             data=ocp.args.JsonSave(iterator.get_state())))
