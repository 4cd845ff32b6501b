"""Independent jobs (the videos of a set, infer.py) spread over the processes of a run and, within a process, over
groups of its devices along the mesh's data axis. Each job runs once, on one group; groups do not communicate.

Job i goes to worker i mod W of the W = processes x groups workers (worker p x groups + g is group g of process p):
a fixed assignment from the job list alone, which every process computes alike.
"""

from collections.abc import Callable, Sequence
from concurrent import futures
from typing import TypeVar

import jax
from jax.sharding import Mesh

from diffst_jax.parallel import mesh as mesh_lib

Job = TypeVar("Job")
Result = TypeVar("Result")


def local_meshes(spec: str | None) -> list[Mesh]:
  """One mesh per group of this process's devices: `spec` (--mesh, e.g. "data=2,context=4") is the shape over the
  process's devices, its data axis the number of groups; each group's mesh has the other axes and data = 1. Without
  `spec`, every device is a group."""
  devices = jax.local_devices()
  sizes = mesh_lib.resolve_shape(mesh_lib.parse_mesh(spec) if spec else {"data": -1}, len(devices))
  groups = sizes["data"]
  per_group = len(devices) // groups
  return [mesh_lib.make_mesh({**sizes, "data": 1}, devices[g * per_group:(g + 1) * per_group])
          for g in range(groups)]


def run_share(jobs: Sequence[Job], meshes: Sequence[Mesh],
              work: Callable[[Job, int], Result]) -> list[tuple[int, Result]]:
  """Runs this process's share of `jobs`, `work(job, group)` for each, the groups side by side (one thread each);
  returns (job index, result) in job order. `work` should catch what a single job may raise: an exception here
  stops the share."""
  workers = jax.process_count() * len(meshes)
  first = jax.process_index() * len(meshes)

  def run_group(group: int) -> list[tuple[int, Result]]:
    return [(i, work(jobs[i], group)) for i in range(first + group, len(jobs), workers)]

  with futures.ThreadPoolExecutor(len(meshes)) as pool:
    done = list(pool.map(run_group, range(len(meshes))))
  return sorted((item for part in done for item in part), key=lambda item: item[0])
