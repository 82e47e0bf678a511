"""Seam continuity of video extension on a trained moving-shapes model (not a test).

Real held-out moving-shapes clips give the first ``--given`` frames; each method generates the rest of
an 8-frame clip (one window of the quickstart model), and the moving-shapes structure metrics are
taken over the frames around the seam (``given - 3 .. given + 2``) and over the whole clip:

- ``unconditional``: the given frames followed by the last frames of an unconditional sample (what
  "continuing" without conditioning gives: a seam that ignores the past);
- ``replacement`` (spec 18.2) and ``reconstruction`` guidance (18.3) at several weights w_r;
- ``frames`` (18.8), for a model trained with given frames (``vdm train --given-frames``);
- ``real``: the real clip's own frames (the ceiling).

Then a 64-frame video grown from 4 given frames, window by window, scored per 8-frame window, and a
contact sheet of it (16 frames per row).

    python benchmarks/bench_extension.py --ckpt out/quickstart/train/last.safetensors [--num 32]
        [--json r.json] [--sheet docs/long_video.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vdm.backends import conditional, media, sampling
from vdm.backends.files import atomic_write_bytes
from vdm.backends.torch.data.moving_shapes import MovingShapesConfig, generate_clip
from vdm.backends.torch.evaluation.shape_metrics import clip_metrics

HELD_OUT_SEED = 987_654  # clip i is generate_clip((HELD_OUT_SEED, i)); training uses its own seed
WEIGHTS = (1.0, 2.0, 5.0, 10.0, 20.0)
METRICS = ("count_consistency", "velocity_residual", "coherent_fraction")


def real_clips(num: int, frames: int, size: int, channels: int) -> np.ndarray:
    cfg = MovingShapesConfig(frames=frames, size=size, channels=channels)
    return np.stack([generate_clip((HELD_OUT_SEED, i), cfg)[0] for i in range(num)])


def scores(videos: np.ndarray, lo: int, hi: int) -> dict[str, float]:
    seam = clip_metrics(videos[:, :, lo:hi])
    whole = clip_metrics(videos)
    return {**{f"seam_{k}": v for k, v in seam.items()}, **{f"clip_{k}": v for k, v in whole.items()}}


def seam_table(model: sampling.LoadedModel, real: np.ndarray, given: int, options: sampling.SamplingOptions,
               seed: int) -> dict[str, dict[str, float]]:
    num, _, f = real.shape[:3]
    lo, hi = max(0, given - 3), min(f, given + 3)
    rows: dict[str, dict[str, float]] = {"real": scores(real, lo, hi)}
    uncond = sampling.sample_videos(model, num, seed, options)
    rows["unconditional"] = scores(np.concatenate([real[:, :, :given], uncond[:, :, given:]], axis=2), lo, hi)
    mask = np.zeros((num, f), np.float32)
    mask[:, :given] = 1
    methods = [("replacement", 0.0)] + [("reconstruction", w) for w in WEIGHTS]
    if model.given_frames:  # a conditional-frame model (vdm train --given-frames, spec 18.8)
        methods.append(("frames", 0.0))
    for method, w in methods:
        cond = sampling.Conditioning(real, mask, method, w)
        t0 = time.perf_counter()
        out = sampling.sample_videos(model, num, seed, options, condition=cond)
        name = f"reconstruction w_r={w:g}" if method == "reconstruction" else method
        rows[name] = {**scores(out, lo, hi), "seconds": time.perf_counter() - t0}
    return rows


def long_video(model: sampling.LoadedModel, real: np.ndarray, length: int, given: int, method: str, weight: float,
               options: sampling.SamplingOptions, seed: int, num: int) -> tuple[np.ndarray, dict[str, Any]]:
    videos = []
    for i in range(num):
        res = conditional.extend(model, real[i, :, :given], length, num=1, overlap=given, options=options,
                                 seed=seed + i, method=method, weight=weight)
        videos.append(res.videos[0])
    v = np.stack(videos)
    f = model.frames
    per_window = [clip_metrics(v[:, :, s:s + f]) for s in range(0, length - f + 1, f)]
    summary = {m: {"mean": float(np.mean([w[m] for w in per_window])),
                   "worst": float(min(w[m] for w in per_window) if m != "velocity_residual"
                                  else max(w[m] for w in per_window))} for m in METRICS}
    return v, {"per_window": per_window, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("out/quickstart/train/last.safetensors"))
    ap.add_argument("--num", type=int, default=32)
    ap.add_argument("--given", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--long", type=int, default=64)
    ap.add_argument("--long-num", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--sheet", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = sampling.load_model(args.ckpt, "torch")
    options = sampling.SamplingOptions(sampler=args.sampler, steps=args.steps, batch_size=args.num)
    real = real_clips(args.num, model.frames, model.size, model.channels)
    rows = seam_table(model, real, args.given, options, args.seed)
    cols = [f"seam_{m}" for m in METRICS[:2]] + [f"clip_{m}" for m in METRICS]
    print(f"{'method':<26} " + " ".join(f"{c:>24}" for c in cols))
    for name, r in rows.items():
        print(f"{name:<26} " + " ".join(f"{r[c]:>24.3f}" for c in cols))
    best = min((k for k in rows if k.startswith("reconstruction")), key=lambda k: rows[k]["seam_velocity_residual"])
    best_w = float(best.split("=")[1])
    results: dict[str, Any] = {"ckpt": str(args.ckpt), "given": args.given, "num": args.num,
                               "sampler": f"{args.sampler}-{args.steps}", "seam": rows, "long": {}}
    long_opts = sampling.SamplingOptions(sampler=args.sampler, steps=args.steps, batch_size=1)
    sheet_video = None
    long_methods = [("replacement", 0.0), ("reconstruction", best_w)]
    if model.given_frames:
        long_methods.append(("frames", 0.0))
    for method, w in long_methods:
        v, rep = long_video(model, real, args.long, args.given, method, w, long_opts, args.seed, args.long_num)
        results["long"][f"{method} w_r={w:g}"] = rep
        s = rep["summary"]
        print(f"{args.long}-frame videos, {method} w_r={w:g}: per window mean/worst "
              + ", ".join(f"{m} {s[m]['mean']:.3f}/{s[m]['worst']:.3f}" for m in METRICS))
        if method == "reconstruction":
            sheet_video = v[0]
    if args.sheet and sheet_video is not None:
        c, length = sheet_video.shape[:2]
        rows_of = 16
        tiles = sheet_video[:, : length // rows_of * rows_of].reshape(c, -1, rows_of, *sheet_video.shape[2:])
        media.save_contact_sheet(args.sheet, tiles.transpose(1, 0, 2, 3, 4))  # row r: frames 16 r .. 16 r + 15
        print(f"wrote {args.sheet}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()
