"""The spec-17 solvers as ONNX Runtime step graphs (backends/ort/solver_steps.py, solver_loop.py).

Expectations come from vdm_ref (the float64 reference steps and loop), never from the code under test:
every solver's step graphs are run step by step from the reference's own state and compared with
vdm_ref's step; whole solves (plain and IOBinding loops, guidance, clipping, thresholding) are
compared with vdm_ref.solve and with the float64 host loop of backends/sampling.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from vdm.backends import sampling  # noqa: E402
from vdm.backends.ort import solver_loop as sl  # noqa: E402
from vdm.backends.ort import solver_steps as ss  # noqa: E402
from vdm.backends.ort import step_graph as sg  # noqa: E402
from vdm.backends.ort.session import StepSessions  # noqa: E402

import vdm_ref  # noqa: E402
from vdm_ref import solvers as S  # noqa: E402

TOL32 = 2e-5  # float32 step graphs vs the float64 reference, relative to max(1, |x|)
TOL64 = 1e-11
ENDS = {"interior": (False, False), "pure-noise": (True, False), "clean": (False, True), "both": (True, True)}


@pytest.fixture(scope="module")
def steps() -> StepSessions:
    return StepSessions()


def _grid(family: str, ends: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random levels in lambda (gaps 0.1..1.2) in ``family``'s terms, with the chosen zero ends."""
    lam = -3.0 + np.concatenate(([0.0], np.cumsum(rng.uniform(0.1, 1.2, n))))
    a, s = vdm_ref.alpha_sigma_from_edm_sigma(family, np.exp(-lam))
    a, s = np.array(a, dtype=np.float64), np.array(s, dtype=np.float64)
    first, last = ENDS[ends]
    if first:
        a[0], s[0] = 0.0, 1.0
    if last:
        a[-1], s[-1] = 1.0, 0.0
    return a, s


def _cases() -> list[tuple[str, str]]:
    # edm has no alpha = 0 level (14.4): its pure-noise ends are not part of the family
    return [(f, e) for f in ("vp", "flow", "edm") for e in ENDS if not (f == "edm" and ENDS[e][0])]


def _denoiser(n: int, shape: tuple[int, ...], rng: np.random.Generator):
    """A nonlinear x0 denoiser that differs per level, so a wrong level or history entry shows."""
    fields = rng.normal(size=(n + 1, *shape)) * 0.3

    def denoise(x: np.ndarray, i: int) -> np.ndarray:
        return np.tanh(x) * (1.0 + 0.1 * i) + fields[i]

    return denoise


def _run_calls(calls: list[ss.Call], regs: dict[str, np.ndarray], denoise, noise: np.ndarray | None,
               steps: StepSessions, dtype: str) -> dict[str, np.ndarray]:
    """Run one step's calls on the step graphs, with x0 = denoise output (a = 0, b = 1, scale 1)."""
    real = sg.DTYPES[dtype][1]
    regs = {k: np.asarray(v, real) for k, v in regs.items()}
    for c in calls:
        spec = sg.SolverStepSpec(len(c.terms), len(c.outputs), dtype=dtype)
        feeds = {"x": regs["x"], "out": np.asarray(denoise(regs["x"].astype(np.float64), c.level), real),
                 "coef": ss.call_coefficients(c, (0.0, 1.0), 1.0).astype(real)}
        for j, name in enumerate(c.terms):
            feeds[f"t{j}"] = np.asarray(noise, real) if name == ss.NOISE else regs[name]
        res = steps.get(spec).run(None, feeds)
        regs.update({dst: regs[src] for dst, src in c.keep})
        if c.x0_to is not None:
            regs[c.x0_to] = res[0]
        regs.update(zip(c.outputs, res[1:-1], strict=True))
    return regs


def _registers(x: np.ndarray, state: S.SolverState) -> dict[str, np.ndarray]:
    """vdm_ref's explicit state (17.2) as the registers of solver_steps."""
    regs = {"x": x}
    regs.update({name: m for name, m in zip(("m1", "m2"), state.x0, strict=False)})
    if state.x is not None:
        regs["xp"] = state.x
    return regs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("family", "ends"), _cases())
@pytest.mark.parametrize("solver", list(vdm_ref.SOLVERS))
def test_each_step_equals_the_reference_step(solver, family, ends, dtype, steps):
    """Spec 17.4 - 17.8, step by step: from the reference's own (x, state) before step i, the step graphs
    give vdm_ref's x_{i+1} and its new state (history), for every step of random grids."""
    rng = np.random.default_rng([7, len(solver), len(family), len(ends)])
    n, shape = 7, (2, 1, 2, 3, 3)
    a, s = _grid(family, ends, n, rng)
    grid = S.solver_grid(a, s)
    denoise = _denoiser(n, shape, rng)
    x = a[0] * 0.5 * rng.normal(size=shape) + s[0] * rng.normal(size=shape)
    noise = rng.normal(size=(n, *shape))
    eta = 0.7 if solver == "euler_ancestral" else 0.0
    opts = {"eta": eta} if solver == "euler_ancestral" else {}
    tol = TOL32 if dtype == "float32" else TOL64
    state = S.SolverState()
    for i in range(n):
        want, want_state = S.SOLVERS[solver].step(denoise, grid, i, x, state, noise[i], **opts)
        got = _run_calls(ss.SOLVER_CALLS[solver](grid, i, eta=eta), _registers(x, state), denoise, noise[i], steps,
                         dtype)
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(got["x"] - want).max() <= tol * scale, (solver, i)
        for name, m in zip(("m1", "m2"), want_state.x0, strict=False):
            assert np.abs(got[name] - m).max() <= tol * max(1.0, float(np.abs(m).max())), (solver, i, name)
        if want_state.x is not None and solver == "unipc":
            assert np.abs(got["xp"] - want_state.x).max() <= tol * max(1.0, float(np.abs(want_state.x).max()))
        x, state = want, want_state


@pytest.mark.parametrize(("family", "ends"), _cases())
@pytest.mark.parametrize("solver", list(vdm_ref.SOLVERS))
def test_whole_solve_equals_vdm_ref_solve(solver, family, ends, steps):
    """The kit's entry (solve_denoiser, the plain loop) equals vdm_ref.solve within float32 rounding."""
    rng = np.random.default_rng([11, len(solver), len(family), len(ends)])
    n, shape = 9, (2, 1, 2, 2, 3)
    a, s = _grid(family, ends, n, rng)
    denoise = _denoiser(n, shape, rng)
    x = a[0] * 0.5 * rng.normal(size=shape) + s[0] * rng.normal(size=shape)
    z = rng.normal(size=(n, *shape))
    want = vdm_ref.solve(denoise, x, a, s, solver, z)
    got = sl.solve_denoiser(denoise, x, a, s, solver, z, steps)
    assert np.abs(got - want).max() <= 5 * TOL32 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("solver", list(vdm_ref.SOLVERS))
def test_program_calls_the_network_where_the_reference_does(solver):
    """Spec 17.2 / 17.6: the program's call levels are the levels vdm_ref.solve asks the denoiser for
    (heun: two per step except into a clean end), recorded from the reference itself."""
    for ends in ENDS:
        a, s = _grid("flow", ends, 6, np.random.default_rng(3))
        seen: list[int] = []

        def record(x: np.ndarray, i: int, seen: list[int] = seen) -> np.ndarray:
            seen.append(i)
            return x * 0.5

        vdm_ref.solve(record, np.ones((1, 1, 1, 1, 1)), a, s, solver, np.zeros((6, 1, 1, 1, 1, 1)))
        assert [c.level for c in ss.solver_program(solver, S.solver_grid(a, s))] == seen


def test_noise_only_where_the_step_is_stochastic():
    """euler_ancestral reads its noise draw i at step i when sigma_up > 0; eta = 0 (euler) and a clean
    final level (sigma_up = 0) read none."""
    a, s = _grid("vp", "clean", 5, np.random.default_rng(0))
    grid = S.solver_grid(a, s)
    assert [c.noise for c in ss.solver_program("euler_ancestral", grid, eta=1.0)] == [0, 1, 2, 3, None]
    assert all(c.noise is None for c in ss.solver_program("euler_ancestral", grid, eta=0.0))


class _Net:
    """A tiny exported-denoiser stand-in (an ONNX graph out = tanh(x) (0.7 + 0.01 t) + 0.05 y in ORT),
    with the attributes backends/sampling.py's ORT path reads."""

    def __init__(self, out_channels_factor: int = 1) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper
        from vdm.backends.ort.providers import choose_providers

        nodes = [helper.make_node("Tanh", ["x"], ["tx"]),
                 helper.make_node("Reshape", ["t", "shp"], ["t5"]),
                 helper.make_node("Mul", ["t5", "c001"], ["tt"]),
                 helper.make_node("Add", ["tt", "c07"], ["g"]),
                 helper.make_node("Mul", ["tx", "g"], ["p"]),
                 helper.make_node("Cast", ["y"], ["yf"], to=TensorProto.FLOAT),
                 helper.make_node("Reshape", ["yf", "shp"], ["y5"]),
                 helper.make_node("Mul", ["y5", "c005"], ["yy"]),
                 helper.make_node("Add", ["p", "yy"], ["o"])]
        if out_channels_factor == 2:  # a learned-variance model: 2C channels, the second half unused
            nodes.append(helper.make_node("Concat", ["o", "o"], ["out"], axis=1))
        else:
            nodes.append(helper.make_node("Identity", ["o"], ["out"]))
        inits = [helper.make_tensor("shp", TensorProto.INT64, [5], [-1, 1, 1, 1, 1]),
                 helper.make_tensor("c001", TensorProto.FLOAT, [], [0.01]),
                 helper.make_tensor("c07", TensorProto.FLOAT, [], [0.7]),
                 helper.make_tensor("c005", TensorProto.FLOAT, [], [0.05])]
        graph = helper.make_graph(nodes, "net", [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("y", TensorProto.INT64, None)],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.input_names = ["x", "t", "y"]
        self.choice = choose_providers("cpu")
        self.device = "cpu"

        class _Batch:
            fixed, min = False, 1

        class _Info:
            batch = _Batch()
            out_channels = out_channels_factor
            given_frames = False

        self.info = _Info()

    def __call__(self, x: np.ndarray, t: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        y = np.full(x.shape[0], 3, np.int64) if y is None else y
        return self.session.run(None, {"x": np.ascontiguousarray(x, np.float32), "t": t, "y": y})[0]


def _levels(family: str, prediction: str, n: int, final: str = "zero") -> sampling.Levels:
    class _Model:
        process = vdm_ref.Process(family, prediction)
        T = 1000
        schedule = vdm_ref.make_schedule("cosine", 1000)

    o = sampling.SamplingOptions(sampler="euler", steps=n, final=final)
    return sampling.solver_levels(_Model(), o)


LOOP_CASES = [("vp", "v", {}), ("vp", "eps", {"spacing": "leading"}), ("flow", "flow", {"threshold": 0.9}),
              ("edm", "edm", {"guidance": 3.0}), ("flow", "flow", {"guidance": 2.0, "clip": None})]


@pytest.mark.parametrize(("family", "prediction", "extra"), LOOP_CASES)
@pytest.mark.parametrize("solver", list(vdm_ref.SOLVERS))
def test_ort_solve_plain_and_bound_equal_the_host_reference_loop(solver, family, prediction, extra, steps):
    """backends/sampling.py's ORT solve (network and updates in ORT; IOBinding with the history on the
    device, and the plain loop) equals its float64 host reference loop (vdm_ref.solve around the same
    network), with x0 conversion (14.3), clipping, thresholding and guidance (7.5) in the graphs."""
    lv = _levels(family, prediction, 6)
    net = _Net(2 if family == "vp" else 1)
    rng = np.random.default_rng([5, len(solver), len(family)])
    shape = (2, 1, 2, 4, 4)
    z = rng.normal(size=(lv.n_steps + 1, *shape)).astype(np.float32)
    labels = np.array([0, 2], np.int64)
    o = sampling.SamplingOptions(sampler=solver, steps=6, **extra)
    want = sampling._ort_solve_host(net, lv, z, labels, o, 1, 3, None)
    seen: list[tuple[int, int]] = []
    for bound in (False, True):
        got = sampling._ort_solve(net, lv, z, labels, o, 1, 3, lambda i, n: seen.append((i, n)), steps=steps,
                                  io_binding=bound)
        assert got.dtype == np.float32 and got.shape == shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), bound
    assert seen[-1] == (lv.n_steps, lv.n_steps)
    # Without labels, a conditional model sees its null class in both loops, as the host loop gives it.
    want_null = sampling._ort_solve_host(net, lv, z, None, o, 1, 3, None)
    for bound in (False, True):
        got = sampling._ort_solve(net, lv, z, None, o, 1, 3, None, steps=steps, io_binding=bound)
        assert np.abs(got - want_null).max() <= 1e-4 * max(1.0, float(np.abs(want_null).max())), bound
    if extra.get("guidance"):  # guidance changes the answer: the comparison above can fail
        plain = sampling._ort_solve_host(net, lv, z, labels, sampling.SamplingOptions(sampler=solver, steps=6), 1,
                                         3, None)
        assert np.abs(plain - want).max() > 1e-3


def test_the_bound_loop_keeps_a_few_device_buffers():
    """The registers reuse buffers: a long unipc solve allocates no more than its registers need
    (x, xp, m1, m2 plus the three outputs of a call), not one per step."""
    made = []
    pool = sl._Pool(lambda: made.append(1) or len(made))
    regs = {"x": pool.free(set(), 1)[0]}
    grid = S.solver_grid(*_grid("vp", "both", 30, np.random.default_rng(1)))
    for c in ss.solver_program("unipc", grid):
        new = pool.free(set(regs.values()), 1 + len(c.outputs))
        regs.update({dst: regs[src] for dst, src in c.keep})
        if c.x0_to:
            regs[c.x0_to] = new[0]
        regs.update(zip(c.outputs, new[1:], strict=True))
    assert len(made) <= 7


def test_every_reference_solver_has_an_ort_program():
    """The ORT table names exactly vdm_ref's solvers (a new solver of spec 17 needs its calls here)."""
    assert tuple(ss.SOLVER_CALLS) == tuple(vdm_ref.SOLVERS)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_kit_passes_the_ort_solve(dtype):
    """`vdm conformance ort` covers spec 17: the kit's solve cases, call-pattern checks, the refused
    repeated level and (float64) the measured orders of convergence all pass on the step graphs."""
    from vdm.backends.conformance.checks import check_op
    from vdm.backends.ort.conformance import OrtStepBackend

    res = check_op(OrtStepBackend(dtype=dtype), "solve", dtype, n_random=20)
    assert res.status == "pass" and res.n_failed == 0, res.reason
    assert res.n_cases >= 20 + len(vdm_ref.SOLVERS)


def test_unknown_solver_and_options_are_refused_like_the_reference(steps):
    x = np.zeros((1, 1, 1, 1, 1))
    a, s = np.array([0.5, 1.0]), np.array([1.0, 0.0])
    with pytest.raises(ValueError, match="unknown solver"):
        sl.solve_denoiser(lambda v, i: v, x, a, s, "rk4", None, steps)
    with pytest.raises(ValueError, match="options"):
        sl.solve_denoiser(lambda v, i: v, x, a, s, "euler", None, steps, eta=0.5)
    with pytest.raises(ValueError, match="noise"):
        sl.solve_denoiser(lambda v, i: v, x, np.array([0.5, 0.8]), np.array([1.0, 0.5]), "euler_ancestral", None,
                          steps)
