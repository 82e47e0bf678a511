"""pytest plugin of the conformance kit (entry point ``vdm_conformance``).

Loaded in every pytest run of an environment where vdm is installed, so importing it must stay
cheap and side-effect free: it only adds options until ``--vdm-backend`` is given.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vdm_conformance", "vdm spec conformance")
    group.addoption("--vdm-backend", default=None, metavar="SPEC",
                    help="run the vdm conformance checks on this backend (numpy, torch, package.module:attr)")
    group.addoption("--vdm-device", default="cpu", help="device for --vdm-backend (cpu or cuda)")
    group.addoption("--vdm-dtype", default="float64", help="compute dtype for --vdm-backend")
