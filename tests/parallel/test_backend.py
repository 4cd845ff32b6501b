"""Backend- and machine-dependent choices made in one place: the compute precision `--precision auto` picks per
platform; the cluster a process runs in, which `distributed.initialize` joins by itself."""

import jax
import pytest

from diffst_jax.parallel import backend, distributed


@pytest.mark.parametrize("requested, platform, expected", [
    ("auto", "cpu", "fp32"), ("auto", "gpu", "bf16"), ("auto", "tpu", "bf16"),
    ("fp32", "tpu", "fp32"), ("bf16", "cpu", "bf16"),
])
def test_auto_precision_is_bf16_on_accelerators_and_fp32_on_cpu(requested, platform, expected):
  assert backend.compute_precision(requested, platform) == expected


CLUSTER_VARIABLES = ("SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "JAX_PLATFORMS",
                     "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@pytest.fixture
def bare_machine(monkeypatch):
  """No cluster variables, no TPU chips, no GPUs; jax.distributed.initialize and the collectives setting recorded."""
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(backend, "has_tpu_chips", lambda: False)
  monkeypatch.setattr(backend, "has_gpus", lambda: False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *args: calls.append(("initialize", args)))
  monkeypatch.setattr(jax.config, "update", lambda name, value: calls.append((name, value)))
  return calls


@pytest.mark.parametrize("variables, cluster", [
    ({}, None), ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "SLURM"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"), ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
])
def test_clusters_are_detected_from_their_job_variables(bare_machine, monkeypatch, variables, cluster):
  for name, value in variables.items():
    monkeypatch.setenv(name, value)
  assert backend.detected_cluster() == cluster


def test_a_tpu_vm_is_a_cluster_jax_reads_itself(bare_machine, monkeypatch):
  monkeypatch.setattr(backend, "has_tpu_chips", lambda: True)
  distributed.initialize()
  assert bare_machine == [("initialize", (None, None, None))]  # JAX's defaults; no CPU collectives on TPUs


def test_multihost_auto_joins_a_detected_cluster_and_off_does_not(bare_machine, monkeypatch):
  distributed.initialize()
  assert bare_machine == []  # no cluster, no flags: one process
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "2")
  distributed.initialize(multihost="off")
  assert bare_machine == []
  distributed.initialize()
  assert bare_machine == [("jax_cpu_collectives_implementation", "gloo"), ("initialize", (None, None, None))]


def test_explicit_flags_win_over_detection(bare_machine, monkeypatch):
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "2")
  monkeypatch.setattr(backend, "has_gpus", lambda: True)
  distributed.initialize("host:1234", 2, 1)
  assert bare_machine == [("initialize", ("host:1234", 2, 1))]  # GPUs: NCCL, no CPU collectives
  with pytest.raises(ValueError, match="--multihost maybe: expected one of auto, off"):
    distributed.initialize(multihost="maybe")


@pytest.mark.parametrize("index, printed", [(0, "step 3\n"), (1, "")])
def test_only_the_first_process_talks(monkeypatch, capsys, index, printed):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  distributed.say("step 3")
  assert capsys.readouterr().out == printed
