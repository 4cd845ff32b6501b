"""One inference and one train step of the tiny DiffST, in one process or as one of several (`jax.distributed`).

  python tests/parallel/multiprocess_worker.py --coordinator localhost:PORT --num-processes 2 --process-id I \
      --mesh data=2,context=4 --out results_I.npz

Each process loads only its own clips of the batch (`rules.global_batch`); the results are gathered to every
process, and written by process 0. tests/parallel/test_multiprocess.py runs it and compares with `run(None)` in a
single process.
"""

import argparse
import contextlib
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from diffst_jax.models import diffst  # noqa: E402  pylint: disable=wrong-import-position
from diffst_jax.parallel import distributed, rules  # noqa: E402  pylint: disable=wrong-import-position
from diffst_jax.parallel import plan as plan_lib  # noqa: E402  pylint: disable=wrong-import-position
from diffst_jax.parallel.mesh import make_mesh, parse_mesh  # noqa: E402  pylint: disable=wrong-import-position
from diffst_jax import config_files  # noqa: E402  pylint: disable=wrong-import-position
from diffst_jax.train import perceptual, tasks  # noqa: E402  pylint: disable=wrong-import-position
from diffst_jax.train import step as train_step  # noqa: E402  pylint: disable=wrong-import-position

WEIGHTS = dict(latent=1.0, rec=1.0, perceptual=1.0, consistency=1.0)


def _inputs():
  config = diffst.DiffSTConfig.from_dict(config_files.load(ROOT / "configs" / "tiny.py").model.to_dict())
  model = diffst.init(config, seed=5)
  hr = np.random.default_rng(0).integers(0, 256, (2, 5, 32, 32, 3), dtype=np.uint8)
  frames = np.random.default_rng(1).uniform(-1, 1, (1, 3, 16, 16, 3)).astype(np.float32)
  return model, {"hr": hr, "lr": hr[:, ::2, ::4, ::4]}, frames


def run(mesh_text: str | None) -> dict[str, np.ndarray]:
  """Upscaled `frames`, and the loss, gradient norm and gradients of one train step; with `mesh_text`, on that mesh
  over the devices of all processes, each process holding its clips of the batch."""
  model, batch, frames = _inputs()
  graphdef, trainable, frozen = nnx.split(model, tasks.get("diffst").trainable(), ...)
  tx = _gradient_recorder()
  state = train_step.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
  with contextlib.ExitStack() as stack:
    state_sharding, execution_plan = None, plan_lib.ExecutionPlan()
    if mesh_text:
      mesh = make_mesh(mesh_text, jax.devices()[:math.prod(parse_mesh(mesh_text).values())])
      execution_plan = stack.enter_context(plan_lib.activate(mesh))
      nnx.update(model, rules.place_state(nnx.state(model), mesh))
      state_sharding = rules.state_shardings(state, mesh)
      state, frozen = jax.device_put(state, state_sharding), rules.place_state(frozen, mesh)
      clips = batch["hr"].shape[0] // jax.process_count()
      local = slice(jax.process_index() * clips, (jax.process_index() + 1) * clips)
      batch = rules.global_batch({name: value[local] for name, value in batch.items()}, mesh)
    upscaled = diffst.upscale(model, jnp.asarray(frames), execution_plan)
    step = train_step.make_train_step(tasks.get("diffst"), graphdef, tx, optax.constant_schedule(0.0), WEIGHTS,
                                      "lpips_alex", execution_plan, state_sharding=state_sharding)
    state, metrics = step(state, frozen, perceptual.load("lpips_alex"), batch)
    results = {name: np.asarray(multihost_utils.process_allgather(value, tiled=True))
               for name, value in (("upscaled", upscaled), ("loss", metrics["loss"]),
                                   ("grad_norm", metrics["grad_norm"]))}
    grads = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(state.opt_state))
    return results | {f"grad{jax.tree_util.keystr(path)}": np.asarray(
        multihost_utils.process_allgather(leaf, tiled=True)) for path, leaf in grads}


def relative_errors(results: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
  """Each result's max difference from `reference`, relative to the reference's largest value; the key biases'
  gradients are zero in exact arithmetic (softmax ignores a shift common to all keys), so theirs, fp32 rounding
  noise, relative to the largest gradient."""
  assert results.keys() == reference.keys()
  largest = max(float(np.abs(value).max()) for name, value in reference.items() if name.startswith("grad["))
  return {name: float(np.abs(results[name] - value).max()
                      / (largest if name.endswith("['to_k']['bias']") else max(np.abs(value).max(), 1e-30)))
          for name, value in reference.items()}


def _gradient_recorder() -> optax.GradientTransformation:
  """An optimizer that leaves the parameters alone and keeps the step's gradients as its state (read exactly)."""
  return optax.GradientTransformation(
      init=lambda params: jax.tree.map(jnp.zeros_like, params),
      update=lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--coordinator", required=True)
  parser.add_argument("--num-processes", type=int, required=True)
  parser.add_argument("--process-id", type=int, required=True)
  parser.add_argument("--mesh", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  results = run(args.mesh)
  if jax.process_index() == 0:
    np.savez(args.out, **results)


if __name__ == "__main__":
  main()
