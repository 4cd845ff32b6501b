"""Two processes x 4 CPU devices on localhost (`jax.distributed`, gloo collectives), the mesh (data, context) =
(2, 4) spanning both: one inference and one train step (loss, gradient norm, SGD-updated parameters) of the tiny
DiffST equal the single-process run (fp32, 1e-5 relative)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.parallel import multiprocess_worker
from tests.conftest import coordinator_address

WORKER = pathlib.Path(multiprocess_worker.__file__)


@pytest.mark.slow  # 5 min on 2 cores (three processes compile the model and its train step): `pytest -m slow`
def test_two_processes_match_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  coordinator = coordinator_address()
  workers = [subprocess.Popen(
      [sys.executable, str(WORKER), "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i),
       "--mesh", "data=2,context=4", "--out", str(tmp_path / "results.npz")],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  reference = multiprocess_worker.run(None)  # meanwhile, here
  for worker in workers:
    output, _ = worker.communicate(timeout=900)
    assert worker.returncode == 0, output[-3000:]
  results = dict(np.load(tmp_path / "results.npz"))
  errors = multiprocess_worker.relative_errors(results, reference)
  assert max(errors.values()) <= 1e-5, {name: error for name, error in errors.items() if error > 1e-5}
