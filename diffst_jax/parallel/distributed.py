"""Multi-host start-up: every process of a run calls `initialize` before touching a device."""

import os

import jax


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins a multi-process run (`jax.distributed.initialize`) when one is asked for: by the arguments (train.py's and
  infer.py's --coordinator_address, --num_processes, --process_id) or by the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. With neither, the run is a single process.
  On CPU the processes exchange data through gloo collectives."""
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num_processes = num_processes or _environ_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _environ_int("JAX_PROCESS_ID")
  if coordinator_address is None and num_processes is None and process_id is None:
    return
  if None in (coordinator_address, num_processes, process_id):
    raise ValueError("a multi-process run needs all of coordinator address, number of processes and process id "
                     f"(got {coordinator_address}, {num_processes}, {process_id}); set the three flags or "
                     "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def _environ_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  if not value.isdigit():
    raise ValueError(f"{name}={value!r} is not a whole number")
  return int(value)
