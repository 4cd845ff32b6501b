"""Decisions that depend on the machine rather than the model: which accelerator is present, how the simulated CPU
devices are set up. Standard library only, so it runs before JAX starts a backend.

libtpu (the `tpu` extra, for compiling TPU programs on any machine) tries to start on every JAX start, and on a
machine without TPU chips prints five lines of warnings while it fails over to the CPU or GPU. Without chips it is
told, through its own environment variables, that this is a single host with nothing to query, which it accepts
silently; a TPU VM (chips present) is left as it is.
"""

import glob
import os
import pathlib
import re

_QUIET_LIBTPU = {"TPU_SKIP_MDS_QUERY": "1", "TPU_ACCELERATOR_TYPE": "v5litepod-1", "TPU_WORKER_HOSTNAMES": "localhost",
                 "TPU_WORKER_ID": "0"}


def has_tpu_chips() -> bool:
  """Whether TPU chips are attached: v2-v4 as /dev/accel*, v5e and later through VFIO."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def quiet_libtpu_without_chips() -> None:
  """Keeps an installed libtpu silent where there are no TPU chips (settings the user made are kept)."""
  if not has_tpu_chips():
    for name, value in _QUIET_LIBTPU.items():
      os.environ.setdefault(name, value)


def has_gpus() -> bool:
  """Whether NVIDIA GPUs are attached (their device files)."""
  return bool(glob.glob("/dev/nvidia[0-9]*"))


def detected_cluster() -> str | None:
  """The kind of multi-process job this process was started in, where `jax.distributed.initialize()` finds its
  coordinator, process count and index by itself: a TPU VM (its metadata; one host is a cluster of one), a SLURM or
  Open MPI job of several tasks. None elsewhere (then a multi-process run needs the explicit flags)."""
  if has_tpu_chips():
    return "TPU"
  if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
    return "SLURM"
  if "OMPI_MCA_orte_hnp_uri" in os.environ or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "Open MPI"
  return None


def cpu_device_count(topology: str) -> int:
  """N of a "cpu:N" topology (simulated CPU devices)."""
  match = re.fullmatch(r"cpu(?::(\d+))?", topology)
  if not match or (match.group(1) is not None and int(match.group(1)) < 1):
    raise ValueError(f"--topology {topology}: write cpu:N for N simulated CPU devices, e.g. cpu:8")
  return int(match.group(1) or 1)


def with_cpu_devices(xla_flags: str, count: int) -> str:
  """XLA_FLAGS asking the CPU backend for `count` devices (set before JAX starts)."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", xla_flags).strip()
  return f"{flags} --xla_force_host_platform_device_count={count}".strip()


def compute_precision(requested: str, platform: str) -> str:
  """The compute precision of a `--precision` choice: "auto" is bfloat16 where the chips compute it natively (GPU,
  TPU) and float32 on a CPU, where bfloat16 is emulated and slower."""
  if requested != "auto":
    return requested
  return "fp32" if platform == "cpu" else "bf16"


CACHE_DIR = pathlib.Path.home() / ".cache" / "diffst_jax"  # this machine's files of diffst-jax
COMPILATION_CACHE = CACHE_DIR / "xla"


def enable_compilation_cache() -> None:
  """JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR, else ~/.cache/diffst_jax/xla) for every
  program, however quick to compile: the second start of train.py, infer.py or evaluate.py on the same model and
  sizes skips XLA. A model's random initialization compiles one small program per parameter shape (a fifth of a
  second each, 20 s for the tiny recipe's DiffST), which a threshold of a second would leave out."""
  import jax  # pylint: disable=import-outside-toplevel  # the module itself stays importable before JAX

  jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", str(COMPILATION_CACHE)))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


MEMORY_SHARE = 0.8  # of a device's memory (or of the host's available RAM) a single program may plan to use


def memory_budget(device) -> int:
  """Bytes one program may use on `device`: a share of an accelerator's memory, or on a CPU of the RAM the host has
  free now."""
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(MEMORY_SHARE * stats["bytes_limit"])
  return int(MEMORY_SHARE * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def peak_bytes(compiled) -> int:
  """The memory a compiled program holds at its peak on each device (XLA's memory analysis): its arguments, outputs
  (less what they alias) and temporaries."""
  analysis = compiled.memory_analysis()
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
          + analysis.temp_size_in_bytes)
