"""Backend-dependent choices made in one place: the compute precision `--precision auto` picks per platform."""

import pytest

from diffst_jax.parallel import backend


@pytest.mark.parametrize("requested, platform, expected", [
    ("auto", "cpu", "fp32"), ("auto", "gpu", "bf16"), ("auto", "tpu", "bf16"),
    ("fp32", "tpu", "fp32"), ("bf16", "cpu", "bf16"),
])
def test_auto_precision_is_bf16_on_accelerators_and_fp32_on_cpu(requested, platform, expected):
  assert backend.compute_precision(requested, platform) == expected
