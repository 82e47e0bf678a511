"""The kit's solver clause (spec 17): the backends that ship pass it, and each broken solver backend
fails it through the check meant for its bug (case comparison, order of convergence, grid refusal)."""

from __future__ import annotations

import math

import pytest
from vdm.backends.conformance import broken, checks, solver_checks
from vdm.backends.conformance.adapters import NumpyAdapter, TorchAdapter
from vdm.backends.conformance.example_backend import ExampleBackend

import vdm_ref

FAST = {"n_random": 8, "seed": 0}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [NumpyAdapter, ExampleBackend, TorchAdapter], ids=lambda m: m.__name__)
def test_shipped_backends_pass_the_solver_clause(make, dtype) -> None:
    result = checks.check_op(make(dtype=dtype), "solve", dtype, **FAST)
    assert result.status == "pass", result.first_failure
    assert result.sources.get("golden", 0) >= 20 and result.sources.get("errors", 0) >= 1
    assert result.sources.get("order", 0) == (4 if dtype == "float64" else 0)
    assert result.sources.get("calls", 0) == len(vdm_ref.SOLVERS)


def test_reference_orders_are_inside_the_band_with_room() -> None:
    for solver, row in vdm_ref.SOLVERS.items():
        if row.order:
            order, errors = solver_checks.measured_order(vdm_ref.solve, solver)
            assert abs(order - row.order) < 0.5 * solver_checks.ORDER_TOLERANCE, (solver, order, errors)


def _order_outcomes(adapter) -> dict[str, checks.Outcome]:
    return {o.case_id: o for o in solver_checks.solve_outcomes(adapter, "float64")}


@pytest.mark.parametrize(
    ("cls", "solver"),
    [(broken.StaleHistoryDPM, "dpmpp_2m"), (broken.NoLowerOrderFinal, "unipc"), (broken.HeunWrongLevel, "heun")],
)
def test_the_order_check_catches_each_broken_solver(cls, solver) -> None:
    outcomes = _order_outcomes(cls())
    assert outcomes[f"order/{solver}"].failed
    assert "measured order" in outcomes[f"order/{solver}"].message
    others = [k for k, o in outcomes.items() if o.failed and k not in (f"order/{solver}", f"calls/{solver}")]
    assert not others, others


def test_the_call_pattern_check_catches_a_wasted_or_misplaced_call() -> None:
    class ExtraFinalCall(NumpyAdapter):  # evaluates the network once more, at the final level
        def solve(self, denoise, x, alphas, sigmas, solver="euler", noise=None, **options):  # type: ignore[no-untyped-def]
            out = super().solve(denoise, x, alphas, sigmas, solver, noise, **options)
            denoise(out, len(alphas) - 2)
            return out

    outcomes = {o.case_id: o for o in solver_checks.call_pattern_outcomes(ExtraFinalCall())}
    assert all(o.failed for o in outcomes.values()) and len(outcomes) == len(vdm_ref.SOLVERS)
    heun = {o.case_id: o for o in solver_checks.call_pattern_outcomes(broken.HeunWrongLevel())}
    assert heun["calls/heun"].failed and not heun["calls/euler"].failed
    assert not any(o.failed for o in solver_checks.call_pattern_outcomes(TorchAdapter()))


def test_the_repeated_level_check_catches_a_grid_without_it() -> None:
    bad = solver_checks.repeated_level_outcome(broken.RepeatedLevelAccepted())
    assert bad.failed
    assert not solver_checks.repeated_level_outcome(NumpyAdapter()).failed


def test_no_lower_order_final_step_is_caught_by_the_cases_too() -> None:
    """Into a zero final sigma its second-order term is infinite: the golden cases catch it at once."""
    result = checks.check_op(broken.NoLowerOrderFinal(), "solve", "float64", n_random=0, seed=0)
    assert result.status == "fail" and math.isinf(result.worst_ratio)
