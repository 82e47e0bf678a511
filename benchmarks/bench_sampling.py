"""Denoiser and sampling-loop speed: PyTorch eager vs ONNX Runtime (CPU; CUDA/TensorRT with a GPU).

    python benchmarks/bench_sampling.py [--json out.json] [--shapes quickstart,small] [--profile] [--solvers]

For each shape (the quickstart's sampling batch, and the ``small`` preset at a small batch):

- per-step latency of one denoiser forward: torch eager vs ORT for both exporters (legacy, dynamo);
- the full sampling loop (N DDIM steps, sampler update included) vs N x one forward: the sampler
  overhead in percent of the loop time, for ORT's plain and IOBinding loops and for torch;
- peak RSS of each measurement, each run in its own subprocess so the numbers do not mix;
- export time of each exporter, and a few ORT session-option variants at the quickstart shape.

``--solvers`` instead measures the solvers of spec 17 in ONNX Runtime (CPU; CUDA where present): per
solver, the time of a step split into the network's session runs, the solver step graphs' runs and
the host work left (Python, binding, copies), for the plain and IOBinding loops and, for comparison,
the float64 host reference loop. Target: host work <= 3% of a step.

``--profile`` adds the top operators from ORT's profiler and the torch profiler. Targets (CPU):
ORT >= 2x faster than torch eager per step at the small shape; sampler overhead <= 3% of the loop.
Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# (preset, overrides, batch, frames, size, loop steps, timing repetitions)
SHAPES: dict[str, dict[str, Any]] = {
    # What `vdm quickstart` samples: tiny preset, 16 clips of 8 frames at 16x16, one channel.
    "quickstart": {"preset": "tiny", "overrides": {"in_channels": 1, "frames": 8, "image_size": 16},
                   "batch": 16, "frames": 8, "size": 16, "loop_steps": 10, "reps": 15},
    # The single-GPU preset at batch 1: RGB, 16 frames at 64x64.
    "small": {"preset": "small", "overrides": {}, "batch": 1, "frames": 16, "size": 64, "loop_steps": 3,
              "reps": 3},
}
TARGET_SPEEDUP = 2.0
TARGET_OVERHEAD = 3.0


def _peak_rss_mb() -> float:
    """Peak resident set of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across fork + exec, so every worker would report the driver's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model(shape: dict[str, Any]) -> Any:
    import torch
    from vdm.backends.torch.models import preset
    from vdm.backends.torch.models.unet import VideoUNet

    torch.manual_seed(0)
    model = VideoUNet(preset(shape["preset"], **shape["overrides"])).eval()
    for p in model.conv_out.parameters():  # zero-initialised; timing does not care, parity does
        torch.nn.init.normal_(p, std=0.02)
    return model


def _meta(model: Any) -> dict[str, Any]:
    import vdm_ref

    cfg = model.config
    return {"spec_version": vdm_ref.SPEC_VERSION, "model_config": cfg.to_dict(),
            "schedule": vdm_ref.make_schedule("cosine", 1000).to_dict(), "prediction": "v",
            "variance": "fixed_small", "num_classes": 0,
            "data": {"frames": cfg.frames, "size": cfg.image_size, "channels": cfg.in_channels}}


def _timeit(fn: Any, reps: int, warmup: bool = True) -> tuple[float, float]:
    """(median, min) seconds of ``reps`` calls; the min is the better estimate on a loaded machine."""
    if warmup:
        fn()  # kernel selection, allocations
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


# --------------------------------------------------------------------------- workers (subprocesses)


def worker_torch(shape: dict[str, Any], device: str, threads: int, profile: bool) -> dict[str, Any]:
    import torch
    from vdm.backends.torch import ops

    torch.set_num_threads(threads)
    model = _model(shape).to(device)
    b, f, s = shape["batch"], shape["frames"], shape["size"]
    c = model.config.in_channels
    x = torch.randn(b, c, f, s, s, device=device)
    t = torch.full((b,), 500.0, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd() -> None:
        with torch.no_grad():
            model(x, t)
        sync()

    step, step_min = _timeit(fwd, shape["reps"])
    n = shape["loop_steps"]
    sched = ops.make_schedule("cosine", 1000, device=torch.device(device), dtype=torch.float32)

    # The loops call the sampler ops directly, not backends/sampling.py: these rows time the sampler
    # against a bare network call (and, below, against a cached output), without the module's
    # batching, noise generation and output conversion.
    def loop(k: int) -> None:
        steps = ops.inference_timesteps(1000, k)
        noise = torch.randn((k + 1, b, c, f, s, s), device=device)
        with torch.no_grad():
            ops.sample(lambda xx, tt: model(xx, tt.float()), sched, steps, x.shape, noise, prediction="v", clip=1.0)
        sync()

    loop(1)  # warm the sampler's code paths with a one-step loop
    loop_s, _ = _timeit(lambda: loop(n), 1, warmup=False)
    # The sampler alone: the same loop with the network replaced by a cached output.
    with torch.no_grad():
        cached = model(x, t)
    steps_n = ops.inference_timesteps(1000, n)
    noise_n = torch.randn((n + 1, b, c, f, s, s), device=device)

    def null_loop() -> None:
        ops.sample(lambda xx, tt: cached, sched, steps_n, x.shape, noise_n, prediction="v", clip=1.0)
        sync()

    sampler_s, _ = _timeit(null_loop, 3)
    out: dict[str, Any] = {"step_s": step, "step_min_s": step_min, "loop_s": loop_s, "loop_steps": n,
                           "sampler_s": sampler_s / n, "peak_rss_mb": _peak_rss_mb()}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        with tprofile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad():
            model(x, t)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
        out["profile"] = [(e.key, round(100 * e.self_cpu_time_total / total, 1)) for e in rows]
    return out


def worker_ort(shape: dict[str, Any], model_path: str, device: str, threads: int, profile: bool,
               variant: str = "default") -> dict[str, Any]:
    import onnxruntime as ort
    from vdm.backends.ort.providers import physical_cores, session_options
    from vdm.backends.ort.sampler import OrtSampler
    from vdm.backends.ort.session import OrtDenoiser

    import vdm_ref

    den = OrtDenoiser(model_path, device=device, threads=threads)
    if variant != "default":  # session-option experiments: rebuild the session with one change
        so = session_options(threads=threads)
        if variant == "opt_basic":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        elif variant == "no_mem_pattern":
            so.enable_mem_pattern = False
        elif variant == "threads_1":
            so.intra_op_num_threads = 1
        elif variant == "threads_logical":
            so.intra_op_num_threads = os.cpu_count() or physical_cores()
        den.session = ort.InferenceSession(model_path, so, providers=den.choice.providers)
    info = den.info
    b, f, s = shape["batch"], shape["frames"], shape["size"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, info.in_channels, f, s, s)).astype(np.float32)
    t = np.full(b, 500.0, np.float32)
    step, step_min = _timeit(lambda: den(x, t), shape["reps"])
    out: dict[str, Any] = {"step_s": step, "step_min_s": step_min, "providers": den.session.get_providers()[:1]}
    if variant == "default":
        n = shape["loop_steps"]
        steps = vdm_ref.inference_timesteps(1000, n)
        noise = rng.standard_normal((n + 1, *x.shape)).astype(np.float32)
        smp = OrtSampler(den)
        for mode, bound in (("plain", False), ("iobinding", True)):
            smp.io_binding = bound
            # A one-step loop first: it creates the step-graph session, a one-off cost per sampler setup.
            smp.sample(vdm_ref.inference_timesteps(1000, 1), x.shape, 0, clip=1.0)
            out[f"loop_s_{mode}"], _ = _timeit(lambda: smp.sample(steps, x.shape, noise, clip=1.0), 1, warmup=False)
        out["loop_steps"] = n
        # The sampler alone (host coefficients + step graph): the plain loop with a cached model output.
        cached = den(x, t)
        smp.io_binding = False
        real = smp.denoiser
        smp.denoiser = _CachedModel(real, cached)
        sampler_s, _ = _timeit(lambda: smp.sample(steps, x.shape, noise, clip=1.0), 3)
        smp.denoiser = real
        out["sampler_s"] = sampler_s / n
    out["peak_rss_mb"] = _peak_rss_mb()
    if profile:  # a separate session: profiling slows every run it records
        prefix = os.path.join(tempfile.mkdtemp(prefix="vdm_ort_prof_"), "ort")
        pden = OrtDenoiser(model_path, device=device, threads=threads, profile_prefix=prefix)
        for _ in range(2):
            pden(x, t)
        out["profile"] = _ort_profile_summary(pden.session.end_profiling())
    return out


class _CachedModel:
    """Stands in for an OrtDenoiser: same metadata and checks, but returns a fixed output."""

    def __init__(self, den: Any, out: np.ndarray) -> None:
        self._den, self._out = den, out
        self.info, self.device, self.check_shape = den.info, den.device, den.check_shape

    def __call__(self, x: np.ndarray, t: np.ndarray, y: Any = None) -> np.ndarray:
        return self._out


def _ort_profile_summary(trace_path: str) -> list[tuple[str, float]]:
    events = json.loads(Path(trace_path).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(e.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return [(op, round(100 * d / total, 1)) for op, d in sorted(per_op.items(), key=lambda kv: -kv[1])[:8]]


def _run_worker(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def _devices() -> list[str]:
    from vdm.backends.ort.providers import device_problem

    return ["cpu"] + [d for d in ("cuda", "tensorrt") if device_problem(d) is None]


def _fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:9.1f}"


def run(shapes: list[str], exporters: list[str], profile: bool, variants: bool, threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch
    from vdm.export.onnx_export import ExportOptions, export_model

    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "cpu_count": os.cpu_count(), "threads": threads,
                    "load_avg": os.getloadavg()},
        "shapes": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="vdm_bench_"))
    devices = _devices()
    for name in shapes:
        shape = SHAPES[name]
        model = _model(shape)
        entry: dict[str, Any] = {"shape": [shape["batch"], model.config.in_channels, shape["frames"], shape["size"],
                                           shape["size"]], "preset": shape["preset"], "export": {}, "rows": {}}
        paths = {}
        for exp in exporters:
            path = tmp / f"{name}_{exp}.onnx"
            t0 = time.perf_counter()
            try:
                rep = export_model(model, _meta(model), path, ExportOptions(exporter=exp))
            except Exception as exc:  # a failing exporter is a result, not a crash
                entry["export"][exp] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            entry["export"][exp] = {"total_s": time.perf_counter() - t0, "export_s": rep.export_seconds,
                                    "validate_s": rep.validate_seconds, "nodes": rep.nodes,
                                    "max_abs_err": rep.max_abs}
            paths[exp] = path
        sh = json.dumps(shape)
        entry["rows"]["torch cpu"] = _run_worker(["torch", sh, "cpu", str(threads), str(int(profile))])
        if "cuda" in devices and torch.cuda.is_available():
            entry["rows"]["torch cuda"] = _run_worker(["torch", sh, "cuda", str(threads), "0"])
        for exp, path in paths.items():
            for dev in devices:
                entry["rows"][f"ort {dev} ({exp})"] = _run_worker(
                    ["ort", sh, str(path), dev, str(threads), str(int(profile and dev == "cpu"))])
        if variants and "legacy" in paths and name == "quickstart":
            for var in ("opt_basic", "no_mem_pattern", "threads_1", "threads_logical"):
                entry["rows"][f"ort cpu (legacy, {var})"] = _run_worker(
                    ["ort", sh, str(paths["legacy"]), "cpu", str(threads), "0", var])
        torch_step = entry["rows"]["torch cpu"].get("step_s")
        for row in entry["rows"].values():
            if "step_s" in row and torch_step:
                row["speedup_vs_torch_cpu"] = torch_step / row["step_s"]
            if "step_min_s" in row and torch_step:
                row["speedup_min_vs_torch_cpu"] = entry["rows"]["torch cpu"]["step_min_s"] / row["step_min_s"]
            n = row.get("loop_steps")
            for key in [k for k in row if k.startswith("loop_s")]:
                if n and row.get("step_s"):
                    row["overhead_pct" + key[len("loop_s"):]] = 100.0 * (row[key] - n * row["step_s"]) / row[key]
            if row.get("sampler_s") and row.get("step_min_s"):
                # Share of a step spent outside the network, from the two direct measurements.
                row["sampler_pct"] = 100.0 * row["sampler_s"] / (row["sampler_s"] + row["step_min_s"])
        results["shapes"][name] = entry
    return results


def print_tables(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"# bench_sampling: torch {m['torch']}, onnxruntime {m['onnxruntime']}, {m['cpu_count']} CPUs, "
          f"{m['threads']} threads, load avg {m['load_avg'][0]:.1f}")
    for name, entry in results["shapes"].items():
        print(f"\n## {name}: {entry['preset']} preset, x = {tuple(entry['shape'])}")
        for exp, e in entry["export"].items():
            if "error" in e:
                print(f"export {exp}: FAILED {e['error']}")
            else:
                print(f"export {exp}: {e['export_s']:.1f} s (+ {e['validate_s']:.1f} s validation), "
                      f"{e['nodes']} nodes, parity max abs {e['max_abs_err']:.1e}")
        print(f"{'backend':<34} {'ms/step':>9} {'min ms':>9} {'vs torch':>8} {'sampler':>8} {'loop ms':>9} "
              f"{'vs Nxfwd':>9} {'loop(IOB)':>9} {'vs Nxfwd':>9} {'RSS MB':>7}")
        for label, r in entry["rows"].items():
            if "error" in r:
                print(f"{label:<34} FAILED: {r['error']}")
                continue
            loop = r.get("loop_s", r.get("loop_s_plain"))
            ovh = r.get("overhead_pct", r.get("overhead_pct_plain"))
            iob, iob_ovh = r.get("loop_s_iobinding"), r.get("overhead_pct_iobinding")
            sp, smp = r.get("speedup_vs_torch_cpu"), r.get("sampler_pct")
            print(f"{label:<34} {_fmt_ms(r['step_s'])} {_fmt_ms(r.get('step_min_s'))} "
                  f"{'-' if sp is None else f'{sp:7.2f}x':>8} {'-' if smp is None else f'{smp:7.2f}%':>8} "
                  f"{_fmt_ms(loop)} {'-' if ovh is None else f'{ovh:8.1f}%':>9} {_fmt_ms(iob)} "
                  f"{'-' if iob_ovh is None else f'{iob_ovh:8.1f}%':>9} {r['peak_rss_mb']:7.0f}")
        for label, r in entry["rows"].items():
            if r.get("profile"):
                top = ", ".join(f"{op} {pct}%" for op, pct in r["profile"])
                print(f"profile {label}: {top}")
        ort_cpu = [r for k, r in entry["rows"].items() if k.startswith("ort cpu (") and "," not in k
                   and "speedup_vs_torch_cpu" in r]
        if ort_cpu:
            best = max(r["speedup_vs_torch_cpu"] for r in ort_cpu)
            best_min = max(r.get("speedup_min_vs_torch_cpu", 0.0) for r in ort_cpu)
            ovh = min(r.get("sampler_pct", 1e9) for r in ort_cpu)
            print(f"targets: ORT/torch per-step speedup {best:.2f}x median, {best_min:.2f}x best-of (target >= "
                  f"{TARGET_SPEEDUP}x at small); sampler share of a step {ovh:.2f}% (target <= {TARGET_OVERHEAD}%)")


# --------------------------------------------------------------------------- --solvers (spec 17 in ORT)


class _TimedSession:
    """An ORT session that adds the wall time of its runs to ``clock[key]``."""

    def __init__(self, sess: Any, clock: dict[str, float], key: str) -> None:
        self._sess, self._clock, self._key = sess, clock, key

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._clock[self._key] += time.perf_counter() - t0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._sess.run, *args, **kwargs)

    def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._sess.run_with_iobinding, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sess, name)


def solver_rows(shape: dict[str, Any], model_path: Path, device: str, threads: int, n: int,
                reps: int) -> dict[str, Any]:
    """Per solver and loop: ms per step and its split into network, step graphs and host work (the rest)."""
    from vdm.backends import sampling
    from vdm.backends.ort.session import OrtDenoiser, StepSessions

    import vdm_ref

    clock = {"net": 0.0, "graph": 0.0}
    den = OrtDenoiser(model_path, device=device, threads=threads)
    den.session = _TimedSession(den.session, clock, "net")
    steps = StepSessions(den.choice)
    plain_get = steps.get
    wrapped: dict[Any, Any] = {}

    def timed_get(key: Any) -> Any:
        if key not in wrapped:
            wrapped[key] = _TimedSession(plain_get(key), clock, "graph")
        return wrapped[key]

    steps.get = timed_get  # type: ignore[method-assign]
    model = sampling.load_model(model_path, "ort", device=device)
    b, f, s = shape["batch"], shape["frames"], shape["size"]
    rows: dict[str, Any] = {}
    loops = {"plain": lambda lv, z, o: sampling._ort_solve(den, lv, z, None, o, den.info.in_channels, None, None,
                                                           steps=steps, io_binding=False),
             "iobinding": lambda lv, z, o: sampling._ort_solve(den, lv, z, None, o, den.info.in_channels, None, None,
                                                               steps=steps, io_binding=True),
             "host f64": lambda lv, z, o: sampling._ort_solve_host(den, lv, z, None, o, den.info.in_channels, None,
                                                                   None)}
    for solver in vdm_ref.SOLVERS:
        o = sampling.SamplingOptions(sampler=solver, steps=n, batch_size=b, frames=f, size=s)
        plan = sampling.plan_sampling(model, b, o)
        z = sampling.batch_noise(0, plan, 0, b)
        calls = vdm_ref.network_calls(solver, vdm_ref.solver_grid(plan.levels.alphas, plan.levels.sigmas))
        for loop, fn in loops.items():
            fn(plan.levels, z, o)  # warm-up: sessions, kernel selection, allocations
            best = None
            for _ in range(reps):
                clock.update(net=0.0, graph=0.0)
                t0 = time.perf_counter()
                fn(plan.levels, z, o)
                wall = time.perf_counter() - t0
                if best is None or wall < best[0]:
                    best = (wall, clock["net"], clock["graph"])
            wall, net, graph = best
            host = wall - net - graph
            rows[f"{solver} {loop}"] = {"solver": solver, "loop": loop, "steps": n, "calls": calls,
                                        "step_s": wall / n, "net_s": net / n, "graph_s": graph / n,
                                        "host_s": host / n, "host_pct": 100.0 * host / wall,
                                        "update_pct": 100.0 * (host + graph) / wall}
    return rows


def run_solvers(shapes: list[str], threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch
    from vdm.export.onnx_export import ExportOptions, export_model

    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "cpu_count": os.cpu_count(), "threads": threads,
                    "load_avg": os.getloadavg()},
        "solvers": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="vdm_bench_"))
    for name in shapes:
        shape = SHAPES[name]
        model = _model(shape)
        path = tmp / f"{name}.onnx"
        export_model(model, _meta(model), path, ExportOptions(exporter="legacy"))
        for dev in [d for d in _devices() if d != "tensorrt"]:
            n = max(shape["loop_steps"], 4)
            results["solvers"][f"{name} {dev}"] = solver_rows(shape, path, dev, threads, n,
                                                              reps=3 if name == "quickstart" else 1)
    return results


def print_solver_tables(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"# bench_sampling --solvers: onnxruntime {m['onnxruntime']}, {m['cpu_count']} CPUs, {m['threads']} "
          f"threads, load avg {m['load_avg'][0]:.1f}")
    for name, rows in results["solvers"].items():
        print(f"\n## {name}: ms per step (N = {next(iter(rows.values()))['steps']} steps) split into the network's "
              "runs, the step graphs' runs and the host work left")
        print(f"{'solver':<16} {'loop':<10} {'calls':>5} {'ms/step':>9} {'network':>9} {'graphs':>9} {'host':>9} "
              f"{'host %':>7} {'update %':>8}")
        for r in rows.values():
            print(f"{r['solver']:<16} {r['loop']:<10} {r['calls']:5d} {_fmt_ms(r['step_s'])} {_fmt_ms(r['net_s'])} "
                  f"{_fmt_ms(r['graph_s'])} {_fmt_ms(r['host_s'])} {r['host_pct']:6.2f}% {r['update_pct']:7.2f}%")
        ort_rows = [r for r in rows.values() if r["loop"] != "host f64"]
        worst = max(r["host_pct"] for r in ort_rows)
        print(f"target: host work <= {TARGET_OVERHEAD}% of a step in the ORT loops; worst {worst:.2f}%")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, shape = sys.argv[2], json.loads(sys.argv[3])
        if kind == "torch":
            res = worker_torch(shape, sys.argv[4], int(sys.argv[5]), bool(int(sys.argv[6])))
        else:
            res = worker_ort(shape, sys.argv[4], sys.argv[5], int(sys.argv[6]), bool(int(sys.argv[7])),
                             *(sys.argv[8:9] or ["default"]))
        print(json.dumps(res))
        return
    from vdm.backends.ort.providers import physical_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--shapes", default="quickstart,small", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--exporters", default="legacy,dynamo", help="comma-separated: legacy, dynamo")
    ap.add_argument("--threads", type=int, default=physical_cores(), help="intra-op threads (default: physical cores)")
    ap.add_argument("--profile", action="store_true", help="top operators from the ORT and torch profilers")
    ap.add_argument("--no-variants", action="store_true", help="skip the ORT session-option experiments")
    ap.add_argument("--solvers", action="store_true",
                    help="only the spec-17 solvers in ORT: the host-work share of a step per solver and loop")
    args = ap.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s) {unknown}; choose from {list(SHAPES)}")
    if args.solvers:
        results = run_solvers(shapes, args.threads)
        print_solver_tables(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            print(f"\nwrote {args.json}")
        return
    results = run(shapes, [e for e in args.exporters.split(",") if e], args.profile, not args.no_variants,
                  args.threads)
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
