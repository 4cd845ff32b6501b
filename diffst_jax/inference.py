"""Upscaling videos of any length and size: temporal chunks and spatial tiles, each with overlap, stitched by linear
blending, with memory bounded by the chunk and tile size.

A chunk of L input frames starting at input frame a gives output frames s_t a ... s_t (a + L - 1); neighbouring
chunks share `overlap` input frames, and in the shared output frames each chunk's weight ramps linearly from one
to the other. Tiles do the same in space (separable ramps). A chunk that covers the whole clip and a tile that
covers the whole frame reproduce whole-clip inference exactly (all weights are 1).
"""

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import ContextManager

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from diffst_jax.chunking import MIN_TILE, ChunkPlan, overlaps, ramp, spans
from diffst_jax.models import diffst
from diffst_jax.models import layers
from diffst_jax.models.diffst import DiffST, upscale
from diffst_jax.ops import color_fix as color_ops
from diffst_jax.ops import resize
from diffst_jax.parallel import backend, rules
from diffst_jax.parallel import plan as plan_lib

TilesFn = Callable[[np.ndarray], np.ndarray]
Activate = Callable[[], ContextManager[plan_lib.ExecutionPlan]]
PRECISIONS = ("auto", "fp32", "bf16")


def runnable(model: DiffST, precision: str, mesh: jax.sharding.Mesh | None = None) -> tuple[DiffST, Activate]:
  """The inference recipe (infer.py, evaluate.py, the AOT tool): `model` computing in `precision` (`in_precision`,
  "auto" by the platform of `mesh`, else of JAX's default backend) and placed on `mesh` (`on_mesh`); and what
  activates the mesh and yields the execution plan to run it under (one device without a mesh)."""
  platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
  model = in_precision(model, precision, platform)
  if mesh is None:
    return model, lambda: contextlib.nullcontext(plan_lib.ExecutionPlan())
  return on_mesh(model, mesh)


def in_precision(model: DiffST, precision: str, platform: str = "") -> DiffST:
  """`model` with its VAE and DiT computing in `precision` ("auto": bf16 on GPU and TPU, fp32 on CPU, by `platform`;
  "fp32" keeps the model's own dtypes), each layer holding its weights in the dtype it computes in (for programs
  without gradients: half the memory in bf16). Works on abstract models (`nnx.eval_shape`)."""
  if precision not in PRECISIONS or (precision == "auto" and not platform):
    raise ValueError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)} (auto on a known platform)")
  if backend.compute_precision(precision, platform) == "bf16":
    config = model.config
    model = diffst.with_config(model, dataclasses.replace(
        config, vae=dataclasses.replace(config.vae, dtype="bfloat16"),
        dit=dataclasses.replace(config.dit, dtype="bfloat16")))
  layers.store_in_compute_dtype(model)
  return model


def on_mesh(model: DiffST, mesh: jax.sharding.Mesh, axis_rules: rules.Rules = rules.DEFAULT_RULES,
            **choices) -> tuple[DiffST, Activate]:
  """A copy of `model` on `mesh` under the inference form of `axis_rules` (its arrays put there straight from
  `model`'s; an abstract model's shapes given their shardings), and what activates `mesh` and yields its execution
  plan (with the run's `choices`, ExecutionPlan's fields)."""
  inference_rules = rules.for_inference(axis_rules)
  graphdef, state = nnx.split(model)
  abstract = all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(state))
  place = rules.abstract_state if abstract else rules.place_state
  return (nnx.merge(graphdef, place(state, mesh, inference_rules)),
          lambda: plan_lib.activate(mesh, inference_rules, **choices))


def model_tiles(model: DiffST, execution_plan: plan_lib.ExecutionPlan, across_processes: bool = True) -> TilesFn:
  """The model under `execution_plan` as a function of a batch of tiles: (B, L, h, w, 3) in [-1, 1] ->
  (B, s_t (L-1) + 1, s_x h, s_x w, 3). `across_processes`: the model is spread over the devices of every process,
  which all call it with the same tiles; else it lies on this process's devices alone."""
  if not across_processes:
    return lambda tiles: np.asarray(upscale(model, jnp.asarray(tiles), execution_plan))
  return lambda tiles: multihost_utils.process_allgather(upscale(model, jnp.asarray(tiles), execution_plan),
                                                         tiled=True)


def program_bytes(model: DiffST, execution_plan: plan_lib.ExecutionPlan, frames: int, tile: tuple[int, int],
                  batch: int) -> int:
  """Peak memory per device of the program that upscales `batch` tiles of `frames` x `tile` LR pixels under
  `execution_plan` (compiled, not run)."""
  extra = diffst.padding_for(model.config, frames, *tile, execution_plan.axis_size("act_rows"))
  shape = (batch, frames + extra[0], tile[0] + extra[1], tile[1] + extra[2], 3)
  graphdef, state = nnx.split(model)
  lowered = diffst.forward.lower(graphdef, execution_plan, state, jax.ShapeDtypeStruct(shape, jnp.float32))
  return backend.peak_bytes(lowered.compile())


def fit_to_memory(model: DiffST, execution_plan: plan_lib.ExecutionPlan, plan: ChunkPlan, frames: int,
                  size: tuple[int, int], budget: int | None = None) -> ChunkPlan:
  """`plan` with a tile: the whole frame (`size`, LR pixels) if its program under `execution_plan` fits in `budget`
  bytes (default: the execution plan's memory budget), else the largest tile that does, halving the longer side."""
  budget = execution_plan.memory_budget() if budget is None else budget
  tile, frames = tuple(size), min(frames, plan.chunk_frames)
  while (needed := program_bytes(model, execution_plan, frames, tile, plan.tile_batch)) > budget:
    if max(tile) <= MIN_TILE:
      raise ValueError(f"upscaling needs {needed / 2**30:.2f} GiB per device even in {MIN_TILE}x{MIN_TILE} tiles, "
                       f"more than the {budget / 2**30:.2f} GiB there are; use --chunk-frames smaller, --precision "
                       "bf16 or --mesh over more devices")
    longer = int(tile[1] > tile[0])
    tile = tuple(max(MIN_TILE, -(-side // 2)) if axis == longer else side for axis, side in enumerate(tile))
  return plan.with_tile(tile)


def tiles_and_calls(plan: ChunkPlan, height: int, width: int) -> tuple[int, int]:
  """How many tiles cover a height x width frame under `plan` (which has its tile), and in how many model calls."""
  tiles = len(spans(height, plan.tile[0], plan.tile_overlap)) * len(spans(width, plan.tile[1], plan.tile_overlap))
  return tiles, -(-tiles // plan.tile_batch)


def upscale_chunk(run_tiles: TilesFn, frames: np.ndarray, plan: ChunkPlan, s_t: int, s_x: int,
                  advance: Callable[[int], object] = lambda calls: None) -> np.ndarray:
  """(L, h, w, 3) float frames in [-1, 1] -> (s_t (L-1) + 1, s_x h, s_x w, 3), in batches of tiles (`advance(1)`
  after each). The tiles of a chunk share one shape; the batches share one size (the last padded with copies of its
  last tile), so one compiled program runs them all."""
  length, h, w, _ = frames.shape
  rows, cols = spans(h, plan.tile[0], plan.tile_overlap), spans(w, plan.tile[1], plan.tile_overlap)
  places = [(row, row_overlaps, col, col_overlaps)
            for row, row_overlaps in zip(rows, overlaps(rows, lambda n: s_x * n))
            for col, col_overlaps in zip(cols, overlaps(cols, lambda n: s_x * n))]
  calls = -(-len(places) // plan.tile_batch)
  batch = -(-len(places) // calls)
  out = np.zeros((s_t * (length - 1) + 1, s_x * h, s_x * w, 3), np.float32)
  for first in range(0, len(places), batch):
    group = places[first:first + batch]
    tiles = [frames[:, top:bottom, left:right] for (top, bottom), _, (left, right), _ in group]
    results = np.asarray(run_tiles(np.stack(tiles + tiles[-1:] * (batch - len(tiles)))))
    for ((top, bottom), (row_before, row_after), (left, right), (col_before, col_after)), tile in zip(group, results):
      weight = np.outer(ramp(tile.shape[1], row_before, row_after), ramp(tile.shape[2], col_before, col_after))
      out[:, s_x * top: s_x * bottom, s_x * left: s_x * right] += tile * weight[None, :, :, None]
    advance(1)
  return out


def upscale_video(model: DiffST, frames: Iterable[np.ndarray], num_frames: int, plan: ChunkPlan,
                  progress: Callable[[ChunkPlan, int, int], Callable[[int], object]] | None = None,
                  run_tiles: TilesFn | None = None, execution_plan: plan_lib.ExecutionPlan | None = None,
                  color_fix: str = "none") -> Iterator[np.ndarray]:
  """Streams the output frames (uint8, s_x h x s_x w x 3) of `num_frames` uint8 input frames, chunk by chunk;
  holds at most a chunk of input and of output in memory. The model runs under `execution_plan` (default: one
  device of JAX's default backend); `run_tiles` replaces it (model_tiles).
  `color_fix` ("none", "wavelet", "adain"; ops/color_fix.py) corrects each output frame's colour towards the
  bicubic-upscaled, time-blended input's. A plan without a tile gets one from `fit_to_memory`.
  `progress(plan, chunks, model_calls)` is told the plan (with its tile), the number of chunks and of model calls
  before the first call, and returns what is called with the number of calls done after each."""
  plan.check()
  if color_fix not in color_ops.COLOR_FIXES:
    raise ValueError(f"colour fix {color_fix!r} is unknown; use one of {', '.join(color_ops.COLOR_FIXES)}")
  s_t, s_x = model.config.time_scale, model.config.space_scale
  execution_plan = execution_plan or plan_lib.ExecutionPlan()
  run_tiles = run_tiles or model_tiles(model, execution_plan)
  chunks = spans(num_frames, plan.chunk_frames, plan.overlap_frames)
  shared_outputs = overlaps(chunks, lambda n: s_t * (n - 1) + 1)
  source = iter(frames)
  first = next(source, None)
  if first is None:
    raise ValueError(f"the input ended after 0 frames, {num_frames} were expected")
  source = itertools.chain([first], source)
  if plan.tile is None:
    plan = fit_to_memory(model, execution_plan, plan, num_frames, first.shape[:2])
  calls = len(chunks) * tiles_and_calls(plan, *first.shape[:2])[1]
  advance = progress(plan, len(chunks), calls) if progress else lambda done: None
  window, window_start = [], 0  # input frames window_start, window_start + 1, ...
  pending = np.zeros((0,))  # weighted output frames still to be blended with the next chunk
  for (start, end), (before, after) in zip(chunks, shared_outputs):
    window, window_start = window[start - window_start:], start
    while len(window) < end - start:
      frame = next(source, None)
      if frame is None:
        raise ValueError(f"the input ended after {start + len(window)} frames, {num_frames} were expected")
      window.append(frame)
    chunk_out = upscale_chunk(run_tiles, np.stack(window).astype(np.float32) / 127.5 - 1.0, plan, s_t, s_x, advance)
    if color_fix != "none":
      reference = resize.bicubic_blend(np.stack(window), s_x, s_t).astype(np.float32) / 127.5 - 1.0
      chunk_out = np.array(color_ops.color_fix(color_fix, jnp.asarray(chunk_out), jnp.asarray(reference)))
    chunk_out *= ramp(len(chunk_out), before, after)[:, None, None, None]
    if before:
      chunk_out[:before] += pending[len(pending) - before:]
    yield from _to_uint8(pending[: len(pending) - before])
    final = len(chunk_out) - after
    yield from _to_uint8(chunk_out[:final])
    pending = chunk_out[final:]
  yield from _to_uint8(pending)


def _to_uint8(frames: np.ndarray) -> Iterator[np.ndarray]:
  for frame in frames:
    yield np.clip(np.round((frame + 1.0) * 127.5), 0, 255).astype(np.uint8)
