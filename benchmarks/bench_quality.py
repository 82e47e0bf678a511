"""Sample quality against network calls: every solver of spec 17 on the ideal Gaussian denoiser
(part 1), and on a trained checkpoint with the moving-shapes metrics (part 2, ``--ckpt``).

    python benchmarks/bench_quality.py [--json out.json] [--budgets 5,10,20,50]
        [--ckpt out/quickstart/train/last.safetensors --num 64 --seeds 2] [--plot quality.png]

Part 2 samples the checkpoint (torch, CPU) with each sampler at each budget from the same noise
(the sampling seed), scores the clips with the structure metrics of `vdm eval` and times each
sample; over ``--seeds`` sampling seeds it reports the mean and spread.

Data x0 ~ N(mu, std^2) per element; the denoiser is the exact one (spec 14.8 (a)), so every error
is the solver's. For each noise process (vp cosine with trailing timesteps, flow with shift 3,
edm with Karras sigmas; all ending on sigma = 0) and each solver, the largest number of steps
whose network calls fit the budget is run from the exact marginal of the first level
N(alpha_0 mu, alpha_0^2 std^2 + sigma_0^2). With this denoiser a solve is affine in its inputs,
x_N = A x_0 + sum_i B_i z_i + c, so the sample distribution is Gaussian and known exactly: one
batched solve gives c, A and every B_i, and the 2-Wasserstein distance to the data distribution is

    W2 = sqrt((mean - mu)^2 + (std_sample - std)^2)

(closed form for one-dimensional Gaussians; per element). euler is DDIM with eta = 0 exactly (17.3),
and euler_ancestral with eta = 1 is DDPM-like ancestral sampling (DDIM with eta = 1 on vp, 17.5).
Not a test: the numbers are exact for this data, but a Gaussian is the easiest data there is.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

import vdm_ref
from vdm_ref import sigmas as levels
from vdm_ref import solvers as S

MU, STD = 0.2, 0.5  # data mean and standard deviation (EDM's sigma_data = 0.5)
BUDGETS = (5, 10, 20, 50)
SOLVER_OPTIONS: dict[str, dict[str, float]] = {"euler_ancestral": {"eta": 1.0}}


def vp_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """vp cosine, T = 1000, trailing timesteps (6.2), then the clean level abar_{-1} = 1."""
    sched = vdm_ref.make_schedule("cosine", 1000)
    abar = np.append(sched.abar_at(vdm_ref.inference_timesteps(1000, n, "trailing")), 1.0)
    return np.sqrt(abar), np.sqrt(1.0 - abar)


def flow_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """flow levels of 15.7 with shift 3 (from s = 1, pure noise, to s = 0)."""
    s = levels.flow_levels(n, shift=3.0)
    return 1.0 - s, s


def edm_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """edm: Karras sigmas (15.5, 0.002 .. 80, rho = 7), then sigma = 0."""
    sig = levels.with_final_level(levels.karras_sigmas(n), "zero")
    return np.ones_like(sig), sig


PROCESSES = {"vp": vp_grid, "flow": flow_grid, "edm": edm_grid}


def steps_for(solver: str, grid_of, budget: int) -> int:
    """The most steps whose network calls (17.2) fit the budget."""
    n = budget
    while n > 1 and S.network_calls(solver, S.solver_grid(*grid_of(n))) > budget:
        n -= 1
    return n


def sample_distribution(solver: str, alphas: np.ndarray, sigmas: np.ndarray) -> tuple[float, float]:
    """(mean, std) of the solver's samples, exactly: row 0 gives c + A m0, row 1 adds A s0, and row
    2 + k adds B_k (unit noise at step k only)."""
    grid = S.solver_grid(alphas, sigmas)
    n = grid.N
    m0 = alphas[0] * MU
    s0 = math.sqrt(alphas[0] ** 2 * STD**2 + sigmas[0] ** 2)
    x = np.full((n + 2, 1), m0)
    x[1] += s0
    z = np.zeros((n, n + 2, 1))
    for k in range(n):
        z[k, 2 + k] = 1.0
    out = S.solve(S.gaussian_level_denoiser(MU, STD**2, grid), x, alphas, sigmas, solver, noise=z,
                  **SOLVER_OPTIONS.get(solver, {}))[:, 0]
    var = (out[1] - out[0]) ** 2 + float(np.sum((out[2:] - out[0]) ** 2))
    return float(out[0]), math.sqrt(var)


def run(budgets: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for process, grid_of in PROCESSES.items():
        for solver in S.SOLVERS:
            for budget in budgets:
                n = steps_for(solver, grid_of, budget)
                a, s = grid_of(n)
                mean, std = sample_distribution(solver, a, s)
                # The target is the final level's marginal; with sigma_N = 0, alpha_N = 1 it is the data.
                want_m, want_s = a[-1] * MU, math.sqrt(a[-1] ** 2 * STD**2 + s[-1] ** 2)
                rows.append({
                    "process": process, "solver": solver, "budget": budget, "steps": n,
                    "calls": S.network_calls(solver, S.solver_grid(a, s)),
                    "mean": mean, "std": std, "w2": math.hypot(mean - want_m, std - want_s),
                })
    return rows


def table(rows: list[dict[str, Any]], budgets: tuple[int, ...]) -> str:
    head = f"{'process':8}{'solver':17}" + "".join(f"{f'{b} calls':>18}" for b in budgets)
    lines = [f"2-Wasserstein distance to N({MU}, {STD}^2) per element (calls used in brackets)", head,
             "-" * len(head)]
    for process in PROCESSES:
        for solver in S.SOLVERS:
            cells = []
            for b in budgets:
                r = next(r for r in rows if (r["process"], r["solver"], r["budget"]) == (process, solver, b))
                cells.append(f"{r['w2']:>12.2e} ({r['calls']:>2})")
            lines.append(f"{process:8}{solver:17}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


CKPT_SAMPLERS = ("ddim", "euler", "heun", "dpmpp_2m", "unipc")
CKPT_METRICS = ("coherent_fraction", "count_consistency", "velocity_residual")


def run_checkpoint(ckpt: Path, budgets: tuple[int, ...], num: int, seeds: int) -> list[dict[str, Any]]:
    """Part 2: the structure metrics of ``num`` clips per (sampler, budget, seed), timed."""
    import time

    import torch
    from vdm.backends import sampling
    from vdm.backends.torch.evaluation.shape_metrics import clip_metrics

    torch.set_num_threads(1)
    model = sampling.load_model(ckpt, "torch")
    rows = []
    for sampler in CKPT_SAMPLERS:
        for budget in budgets:
            steps = max(1, (budget + 1) // 2) if sampler == "heun" else budget  # heun: 2 calls a step, 1 last
            per_seed, seconds = [], 0.0
            for seed in range(seeds):
                options = sampling.SamplingOptions(sampler=sampler, steps=steps, batch_size=num)
                t0 = time.perf_counter()
                videos = sampling.sample_videos(model, num, seed, options)
                seconds += time.perf_counter() - t0
                per_seed.append(clip_metrics(videos))
            rows.append({"sampler": sampler, "budget": budget, "steps": steps,
                         "mean": {m: float(np.mean([r[m] for r in per_seed])) for m in CKPT_METRICS},
                         "spread": {m: float(np.ptp([r[m] for r in per_seed])) for m in CKPT_METRICS},
                         "seconds_per_sample": seconds / (seeds * num)})
    return rows


def checkpoint_table(rows: list[dict[str, Any]], budgets: tuple[int, ...]) -> str:
    lines = ["coherent fraction / velocity residual (mean over seeds; spread = max - min) and ms per sample"]
    head = f"{'sampler':10}" + "".join(f"{f'{b} calls':>30}" for b in budgets)
    lines += [head, "-" * len(head)]
    for sampler in CKPT_SAMPLERS:
        cells = []
        for b in budgets:
            r = next(r for r in rows if (r["sampler"], r["budget"]) == (sampler, b))
            cells.append(f"{r['mean']['coherent_fraction']:.2f}±{r['spread']['coherent_fraction']:.2f} / "
                         f"{r['mean']['velocity_residual']:.3f} {1e3 * r['seconds_per_sample']:5.0f}ms")
        lines.append(f"{sampler:10}" + "".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)


def plot(path: Path, rows: list[dict[str, Any]], ckpt_rows: list[dict[str, Any]]) -> None:
    from vdm.backends import media

    panels = [(f"{process}: 2-Wasserstein to the data (ideal Gaussian denoiser) against network calls",
               [(solver, [r["calls"] for r in rows if (r["process"], r["solver"]) == (process, solver)],
                 [r["w2"] for r in rows if (r["process"], r["solver"]) == (process, solver)])
                for solver in S.SOLVERS]) for process in PROCESSES]
    if ckpt_rows:
        panels.append(("quickstart checkpoint: coherent fraction against network calls",
                       [(sampler, [r["budget"] for r in ckpt_rows if r["sampler"] == sampler],
                         [r["mean"]["coherent_fraction"] for r in ckpt_rows if r["sampler"] == sampler])
                        for sampler in CKPT_SAMPLERS]))
    media.save_line_plots(path, panels, x_label="network calls",
                          log_y=[True] * len(PROCESSES) + ([False] if ckpt_rows else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="network-call budgets, comma-separated")
    ap.add_argument("--ckpt", type=Path, help="part 2: a trained moving-shapes checkpoint")
    ap.add_argument("--num", type=int, default=64, help="part 2: clips per (sampler, budget, seed)")
    ap.add_argument("--seeds", type=int, default=2, help="part 2: sampling seeds")
    ap.add_argument("--plot", type=Path, help="write quality against calls as a PNG")
    args = ap.parse_args()
    budgets = tuple(int(b) for b in args.budgets.split(","))
    rows = run(budgets)
    print(table(rows, budgets))
    ckpt_rows = run_checkpoint(args.ckpt, budgets, args.num, args.seeds) if args.ckpt else []
    if ckpt_rows:
        print()
        print(checkpoint_table(ckpt_rows, budgets))
    if args.plot:
        plot(args.plot, rows, ckpt_rows)
        print(f"\nwrote {args.plot}")
    if args.json:
        from vdm.backends.files import atomic_write_bytes

        doc = {"benchmark": "bench_quality", "data": {"mu": MU, "std": STD},
               "spec_version": vdm_ref.SPEC_VERSION, "results": rows, "checkpoint": str(args.ckpt or ""),
               "checkpoint_results": ckpt_rows}
        atomic_write_bytes(args.json, (json.dumps(doc, indent=2) + "\n").encode())
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
