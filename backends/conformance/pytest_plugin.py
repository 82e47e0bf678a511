"""pytest plugin of the conformance kit (entry point ``vdm_conformance``).

    pytest --vdm-backend mypkg.backend:MyBackend -p vdm_conformance [--vdm-dtype float32]

adds one test item per spec clause (op), ``vdm-conformance::<clause>::<op>``: the golden
vectors, the end-to-end sampling checks, and random cases drawn by hypothesis (which shrinks
a failure to a small case). Backend tests can also use the ``vdm_backend`` fixture.

The plugin is loaded in every pytest run of an environment where vdm is installed, so it does
nothing at all until ``--vdm-backend`` is given, and imports numpy/vdm_ref only then.
"""

from __future__ import annotations

from typing import Any

import pytest

_ADAPTER = pytest.StashKey[Any]()
_XFAIL = pytest.StashKey[list]()  # entries of --vdm-xfail
_HIT = pytest.StashKey[set]()  # entries that turned a failure into xfail


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vdm_conformance", "vdm spec conformance")
    group.addoption("--vdm-backend", default=None, metavar="SPEC",
                    help="add conformance checks of this backend (numpy, torch, torch:cuda, package.module:attr)")
    group.addoption("--vdm-device", default=None, help="device for --vdm-backend: cpu (default) or cuda")
    group.addoption("--vdm-dtype", default=None, help="dtype for --vdm-backend: float64 (default), float32, ...")
    group.addoption("--vdm-cases", default=25, type=int, help="hypothesis examples per clause (default 25)")
    group.addoption("--vdm-xfail", default=None, metavar="FILE", help="expected-failure list (JSON or TOML)")


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("vdm_backend", None):
        return
    from .adapters import BackendError
    from .runner import resolve_backend
    from .xfail import XfailError, load_xfail

    try:
        config.stash[_ADAPTER] = resolve_backend(
            config.getoption("vdm_backend"), config.getoption("vdm_device"), config.getoption("vdm_dtype"))
        path = config.getoption("vdm_xfail")
        config.stash[_XFAIL] = load_xfail(path) if path else []
        config.stash[_HIT] = set()
    except (BackendError, XfailError) as exc:
        raise pytest.UsageError(f"vdm conformance: {exc}") from None


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, so those select clauses too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if _ADAPTER not in config.stash:
        return
    from .protocol import OPS, clause_of

    parent = ConformanceCollector.from_parent(session, name="vdm-conformance", nodeid="vdm-conformance")
    items.extend(
        ConformanceItem.from_parent(parent, name=f"{clause_of(op)}::{op}", op=op,
                                    nodeid=f"vdm-conformance::{clause_of(op)}::{op}")
        for op in OPS
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _ADAPTER not in config.stash:
        return
    from .protocol import OPS

    adapter = config.stash[_ADAPTER]
    terminalreporter.write_line(f"vdm conformance: backend {adapter.name} ({adapter.version}), "
                                f"device {adapter.device}, dtype {adapter.dtype}")
    for entry in config.stash[_XFAIL]:
        if entry not in config.stash[_HIT] and entry.applies(adapter.dtype, adapter.device, list(OPS)):
            terminalreporter.write_line(f"warning: unmatched xfail entry {entry.target}: {entry.reason}", yellow=True)


@pytest.fixture(scope="session")
def vdm_backend(request: pytest.FixtureRequest) -> Any:
    """The adapter selected with --vdm-backend (the test is skipped without the option)."""
    if _ADAPTER not in request.config.stash:
        pytest.skip("no --vdm-backend given")
    return request.config.stash[_ADAPTER]


class ConformanceCollector(pytest.Collector):
    def collect(self) -> list[pytest.Item]:  # items are created by the collection hook
        return []


class ConformanceFailure(Exception):
    pass


class ConformanceItem(pytest.Item):
    """All checks of one clause: golden vectors + e2e sampling, then hypothesis-drawn cases."""

    def __init__(self, *, op: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.op = op

    def runtest(self) -> None:
        from .checks import check_op

        adapter = self.config.stash[_ADAPTER]
        result = check_op(adapter, self.op, adapter.dtype, n_random=0)
        if result.status == "fail":
            ff = result.first_failure or {}
            self._fail(f"{ff.get('case', '')}: {ff.get('message', result.reason or '')}")
        ran_random = self._random(adapter, adapter.dtype) if result.tolerance is not None else False
        if result.status == "skip" and not ran_random:
            pytest.skip(result.reason or "skipped")

    def _random(self, adapter: Any, dtype: str) -> bool:
        """Hypothesis-drawn cases; fails (after shrinking) on a failing one. False if none ran."""
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        from .cases import HypothesisDraw, describe, describe_line, random_case
        from .checks import Outcome, run_case
        from .protocol import tolerance_for

        tol = tolerance_for(self.op, dtype)
        n = self.config.getoption("vdm_cases")
        if tol is None or n <= 0:
            return False

        @settings(max_examples=n, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.data())
        def random_cases(data: Any) -> None:
            case = random_case(self.op, HypothesisDraw(data), dtype, 0)
            outcome = run_case(adapter, case, dtype, tol)
            if isinstance(outcome, Outcome) and outcome.failed:
                self._fail(f"{outcome.message}\n  inputs: {describe_line(describe(case))}")

        random_cases()
        return True

    def _fail(self, message: str) -> None:
        """Fail this clause, or xfail it when the --vdm-xfail list covers it."""
        adapter = self.config.stash[_ADAPTER]
        for entry in self.config.stash[_XFAIL]:
            if entry.covers(self.op) and entry.applies(adapter.dtype, adapter.device, [self.op]):
                self.config.stash[_HIT].add(entry)
                pytest.xfail(entry.reason)
        from .protocol import clause_of

        raise ConformanceFailure(f"clause {clause_of(self.op)} ({self.op}) at {adapter.dtype}: {message}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ConformanceFailure):  # no traceback: the message says it all
            return "\n".join([str(excinfo.value), *getattr(excinfo.value, "__notes__", [])])
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"vdm conformance {self.name}"
