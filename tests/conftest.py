"""Shared pytest configuration. Engineers append small, self-contained fixtures below."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# CI: derandomised so a red run reproduces; locally: random exploration. Deadlines are off
# because 2-core CI machines and first-call torch kernels make timings noisy.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# HYPOTHESIS_PROFILE=stress: twenty times the examples, for hunting rare edge cases before a release.
settings.register_profile("stress", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One intra-op thread per test worker: the tensors in tests are tiny, and two workers on two
    cores with OpenMP spin-waiting run many times slower than with one thread each. Only applied
    where a test module has imported torch, so reference-only tests never load it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
