"""Shared pytest configuration. Engineers append small, self-contained fixtures below."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI: derandomised so a red run reproduces; locally: random exploration. Deadlines are off
# because 2-core CI machines and first-call torch kernels make timings noisy.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
