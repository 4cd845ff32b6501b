"""Training-step benchmark: speed and memory of one jit-compiled step (diffst_jax.train.step).

  python bench/train.py                                   # both rows below
  python bench/train.py --skip-real                       # tiny only
  python bench/train.py --skip-tiny                       # real size only

Row "tiny (run)": the tiny config on the current backend (CPU here) at 9 HR frames of 64x64 (LR 5 frames of
16x16), all four loss terms (LPIPS-VGG as L_perc): steps per second (median over --repeats steps after a warm-up),
XLA's compiled memory of the step and the process's peak RSS.
Row "wan21_1_3b (compiled)": the real-size config (1.3B DiT, real VAE, CFCA, VRG) at --frames HR frames of
--size x --size, stage-1 and stage-2 steps, compiled with abstract inputs (no weights allocated, nothing run):
XLA's memory analysis (arguments = params + optimizer state + batch; temp = activations kept for the backward;
output = the new state, aliased = the part of it written into the donated input state; peak = arguments + output
- aliased + temp, what one device must hold).
"""

import argparse
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffst_jax import cli  # noqa: E402
from diffst_jax.models import diffst  # noqa: E402
from diffst_jax import config_files  # noqa: E402
from diffst_jax.parallel.plan import ExecutionPlan  # noqa: E402
from diffst_jax.train import perceptual, tasks  # noqa: E402
from diffst_jax.train import step as train_step  # noqa: E402

MB = 1 << 20
ALL_TERMS = dict(latent=1.0, rec=1.0, perceptual=1.0, consistency=1.0)


def _setup(config_name: str, weights: dict, perceptual_kind: str, abstract: bool):
  """The train step of a config's model, its initial state (abstract: shapes only) and frozen part."""
  config = config_files.load(ROOT / "configs" / f"{config_name}.py")
  model_config = diffst.DiffSTConfig.from_dict(config.model.to_dict())
  model = (nnx.eval_shape(lambda: diffst.DiffST(model_config, rngs=nnx.Rngs(0))) if abstract else
           diffst.init(model_config))
  graphdef, trainable, frozen = nnx.split(model, tasks.get("diffst").trainable(), ...)
  stages = [config.stages[name].to_dict() for name in sorted(config.stages)]
  tx, schedule = train_step.make_optimizer(stages, **config.optimizer.to_dict())
  step = train_step.make_train_step(tasks.get("diffst"), graphdef, tx, schedule, weights, perceptual_kind,
                                    ExecutionPlan())
  initial = lambda t: train_step.TrainState(jnp.zeros((), jnp.int32), t, tx.init(t))  # noqa: E731
  state = jax.eval_shape(initial, trainable) if abstract else initial(trainable)
  return step, state, frozen, config


def _batch(frames: int, size: int, time_scale: int, space_scale: int) -> dict:
  lr_frames, lr_size = (frames - 1) // time_scale + 1, size // space_scale
  return {"hr": jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.uint8),
          "lr": jax.ShapeDtypeStruct((1, lr_frames, lr_size, lr_size, 3), jnp.uint8)}


def _memory_row(name: str, compiled) -> dict:
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
          + memory.temp_size_in_bytes)
  return {"row": name, "arguments MB": memory.argument_size_in_bytes / MB, "temp MB": memory.temp_size_in_bytes / MB,
          "output MB": memory.output_size_in_bytes / MB, "aliased MB": memory.alias_size_in_bytes / MB,
          "peak MB": peak / MB}


def tiny_run(repeats: int) -> dict:
  step, state, frozen, _ = _setup("tiny", ALL_TERMS, "lpips", abstract=False)
  lpips = perceptual.load("lpips")
  rng = np.random.default_rng(0)
  hr = rng.integers(0, 256, (1, 9, 64, 64, 3), dtype=np.uint8)
  batch = {"hr": hr, "lr": hr[:, ::2, ::4, ::4]}
  start = time.perf_counter()
  compiled = step.lower(state, frozen, lpips, batch).compile()
  compile_seconds = time.perf_counter() - start
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    state, metrics = step(state, frozen, lpips, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times[1:])
  row = _memory_row("tiny (run), 9x64x64", compiled)
  row.update({"compile s": compile_seconds, "steps/s": 1 / seconds,
              "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
  return row


def real_compiled(frames: int, size: int) -> list[dict]:
  rows = []
  for stage, weights in (("stage 1", dict(latent=1.0)), ("stage 2", dict(rec=1.0, perceptual=1.0, consistency=1.0))):
    step, state, frozen, config = _setup("wan21_1_3b", weights, "dists", abstract=True)
    batch = _batch(frames, size, config.model.cfca.time_scale, config.model.space_scale)
    perceptual_params = jax.eval_shape(lambda: perceptual.load("dists")) if "perceptual" in weights else None
    start = time.perf_counter()
    compiled = step.lower(state, frozen, perceptual_params, batch).compile()
    row = _memory_row(f"wan21_1_3b (compiled) {stage}, {frames}x{size}x{size}", compiled)
    row["compile s"] = time.perf_counter() - start
    rows.append(row)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--frames", type=int, default=17)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--skip-real", action="store_true")
  parser.add_argument("--skip-tiny", action="store_true")
  args = parser.parse_args()
  rows = [] if args.skip_tiny else [tiny_run(args.repeats)]
  if not args.skip_real:
    rows += real_compiled(args.frames, args.size)
  columns = ["row", "steps/s", "compile s", "arguments MB", "temp MB", "output MB", "aliased MB", "peak MB",
             "peak RSS MB"]
  print("| " + " | ".join(columns) + " |")
  print("|" + "---|" * len(columns))
  for row in rows:
    cells = [row["row"]] + [f"{row[c]:.3g}" if c in row else "" for c in columns[1:]]
    print("| " + " | ".join(cells) + " |")
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), jax {jax.__version__}")


if __name__ == "__main__":
  cli.script(main)
