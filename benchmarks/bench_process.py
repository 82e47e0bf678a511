"""vp (v-prediction) against flow matching, and joint image-video training, on the quickstart's budget
(not a test).

Trains the quickstart model (QUICKSTART_TRAIN: tiny preset, moving shapes, 400 steps of batch 16)
once per noise process, then samples each checkpoint with a few solvers at a fixed number of
network calls and scores the clips with the moving-shapes metrics of `vdm eval`, over several
sampling seeds (the spread is the run-to-run spread of the metrics, not of training).

    python benchmarks/bench_process.py [--out out/bench_process] [--steps 400] [--num 64] [--json r.json]

Prints a table and writes JSON; the README quotes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vdm.backends.files import atomic_write_bytes
from vdm.backends.sampling import SamplingOptions
from vdm.backends.torch.evaluation import evaluate
from vdm.backends.torch.training import QUICKSTART_TRAIN, train

# name -> (training changes, [(sampler, steps)]); vp is the quickstart's own configuration.
RUNS: dict[str, tuple[dict[str, Any], list[tuple[str, int]]]] = {
    "vp-v": ({}, [("ddim", 20), ("dpmpp_2m", 20), ("euler", 20)]),
    "flow-uniform": ({"process": "flow", "prediction": ""}, [("euler", 20), ("dpmpp_2m", 20), ("heun", 10)]),
    "flow-logit-normal": ({"process": "flow", "prediction": "", "flow_density": "logit_normal"},
                          [("euler", 20), ("dpmpp_2m", 20), ("heun", 10)]),
    # joint image-video training: a quarter of each batch as independent frames (README, Training)
    "flow-logit-normal-images": ({"process": "flow", "prediction": "", "flow_density": "logit_normal",
                                 "image_fraction": 0.25}, [("euler", 20), ("dpmpp_2m", 20)]),
}
METRICS = ("coherent_fraction", "count_consistency", "velocity_residual")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench_process"))
    ap.add_argument("--steps", type=int, default=QUICKSTART_TRAIN.steps)
    ap.add_argument("--num", type=int, default=64, help="clips per evaluation")
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds per (run, sampler)")
    ap.add_argument("--runs", nargs="*", default=list(RUNS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                               "train_steps": args.steps, "num": args.num, "runs": {}}
    for name in args.runs:
        changes, samplers = RUNS[name]
        cfg = QUICKSTART_TRAIN.replace(out_dir=str(args.out / name), overwrite=True, steps=args.steps,
                                       preview_every=0, **changes)
        t0 = time.perf_counter()
        res = train(cfg, progress=False, log=None)
        train_s = time.perf_counter() - t0
        run: dict[str, Any] = {"train_s": train_s, "final_loss": float(np.mean(res.losses[-20:])), "samplers": {}}
        for sampler, steps in samplers:
            per_seed = []
            for seed in range(args.seeds):
                opts = SamplingOptions(sampler=sampler, steps=steps, batch_size=args.num)
                rep = evaluate(ckpt=res.last_checkpoint, num=args.num, options=opts, seed=seed)
                per_seed.append({m: float(rep["rows"]["samples"][m]) for m in METRICS})
                real = {m: float(rep["rows"]["real"][m]) for m in METRICS}
            run["samplers"][f"{sampler}-{steps}"] = {
                "mean": {m: float(np.mean([r[m] for r in per_seed])) for m in METRICS},
                "std": {m: float(np.std([r[m] for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0
                        for m in METRICS},
                "per_seed": per_seed,
            }
            run["real"] = real
        results["runs"][name] = run
        print(f"{name}: trained in {train_s:.0f} s, final loss {run['final_loss']:.4f}", flush=True)
    header = f"{'run':<18} {'sampler':<12} " + " ".join(f"{m:>24}" for m in METRICS)
    print(header)
    print("-" * len(header))
    for name, run in results["runs"].items():
        for key, r in run["samplers"].items():
            cells = " ".join(f"{r['mean'][m]:>15.3f} ± {r['std'][m]:<6.3f}" for m in METRICS)
            print(f"{name:<18} {key:<12} {cells}")
    some = next(iter(results["runs"].values()))
    print(f"{'real clips':<31} " + " ".join(f"{some['real'][m]:>24.3f}" for m in METRICS))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()
