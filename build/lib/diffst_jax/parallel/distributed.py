"""Multi-host start-up (every process of a run calls `initialize` before touching a device) and what the processes
of a run agree on: whether to stop, and work that one process does for all."""

import json
import os
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from diffst_jax.parallel import backend

MULTIHOST_MODES = ("auto", "off")
T = TypeVar("T")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, multihost: str = "auto") -> None:
  """Joins a multi-process run (`jax.distributed.initialize`) when one is asked for: by the arguments (train.py's and
  infer.py's --coordinator_address, --num_processes, --process_id), by the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or, with `multihost` "auto", by the cluster the
  process runs in (a TPU VM, a SLURM or Open MPI job of several tasks: backend.detected_cluster), whose settings JAX
  reads by itself. "off" keeps a single process whatever the environment says. On CPU the processes exchange data
  through gloo collectives."""
  if multihost not in MULTIHOST_MODES:
    raise ValueError(f"--multihost {multihost}: expected one of {', '.join(MULTIHOST_MODES)}")
  if multihost == "off":
    return
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num_processes = num_processes or _environ_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _environ_int("JAX_PROCESS_ID")
  explicit = (coordinator_address, num_processes, process_id)
  if explicit == (None, None, None):
    if backend.detected_cluster() is None:
      return
  elif None in explicit:
    raise ValueError("a multi-process run needs all of coordinator address, number of processes and process id "
                     f"(got {coordinator_address}, {num_processes}, {process_id}); set the three flags or "
                     "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID")
  if not (backend.has_tpu_chips() or backend.has_gpus()) or os.environ.get("JAX_PLATFORMS", "").strip() == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices; accelerators bring their own
  jax.distributed.initialize(*explicit)  # all None: JAX reads the detected cluster's settings


def _environ_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  if not value.isdigit():
    raise ValueError(f"{name}={value!r} is not a whole number")
  return int(value)


def say(*args, **kwargs) -> None:
  """print() on the first process of a run only: the others stay quiet unless something fails."""
  if jax.process_index() == 0:
    print(*args, **kwargs)


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process of the run; every process must call it at the same point."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def wait_for_every_process(name: str, timeout_s: int = 3600) -> None:
  """Returns once every process has called it with `name` (unique per call): a barrier of the coordination service,
  not a device collective. On CPU, gloo's collectives give up after 30 s, less than the compile of a program that
  one process finds in the compilation cache and another must compile."""
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(name, timeout=timeout_s)


def all_processes(values: list) -> list:
  """Every process's `values` (JSON-serializable), concatenated in process order; every process must call it at the
  same point."""
  if jax.process_count() == 1:
    return list(values)
  data = np.frombuffer(json.dumps(values).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size]))).ravel()
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [value for row, size in zip(rows, sizes) for value in json.loads(row[:size].tobytes())]


def first_process_does(work: Callable[[], T], what: str) -> T:
  """Runs `work` on process 0 while the others wait, then on the others (for what it returns; shared files are then
  there to be found): the work of writing something every process shares, e.g. the prepared dataset. If it fails
  on process 0, the others raise too, naming `what`, instead of waiting at a barrier until a timeout."""
  if jax.process_count() == 1:
    return work()
  failure = None
  if jax.process_index() == 0:
    try:
      result = work()
    except Exception as error:  # pylint: disable=broad-except  # told to the others, then raised here
      failure = error
  if any_process(failure is not None):
    if failure is not None:
      raise failure
    raise ValueError(f"{what} failed on process 0 (its log says why); every process stops")
  return result if jax.process_index() == 0 else work()
