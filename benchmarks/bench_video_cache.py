"""Reading training clips from video files with and without the decode cache (not a test).

Writes a few synthetic MP4s of UCF-101's frame size and frame rate (320x240, 25 fps; textured
and moving, so the codec has real work), then times ``VideoFolder[i]`` (one 8-frame clip at
32x32, as `vdm train --data folder:PATH` reads them) from a dataset built with the cache (the
default: frames memory-mapped from ``.npy``) and one built with ``cache=False`` (every clip
decodes its whole file). The ratio of the two per-clip times is the speedup of the cache; the
one-time cost of building the cache is reported beside it. With ``--train-steps N`` it also
times training steps of the tiny U-Net (batch 8, one thread) both ways: loading a batch plus
the model's step, what a user waits for per step.

    python benchmarks/bench_video_cache.py [--seconds 7] [--files 4] [--train-steps 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def make_videos(root: Path, files: int, seconds: float, fps: int = 25) -> None:
    from vdm.backends.media import write_video

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(files):
        frames = []
        for t in range(int(seconds * fps)):
            phase = 0.15 * t + i
            base = 128 + 60 * np.sin(xx / 17.0 + phase) * np.cos(yy / 23.0 - 0.5 * phase)
            rgb = np.stack([base, np.roll(base, 7 * t, axis=1), 255 - base], axis=-1)
            frames.append(np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8))
        write_video(root / f"clip{i}.mp4", np.stack(frames), fps=fps)


def time_items(ds: Any, reps: int) -> float:
    """Median seconds per item over ``reps`` passes of every item."""
    per = []
    for r in range(reps):
        ds.set_epoch(r)
        for i in range(len(ds)):
            t0 = time.perf_counter()
            ds[i]
            per.append(time.perf_counter() - t0)
    return float(np.median(per))


def time_training(root: Path, out: Path, steps: int, cache: bool) -> float:
    """Median seconds per training step (loading the batch + the step) over a `vdm train` run of
    ``steps`` steps; the one-time costs (dataset build, first step, checkpoint) are left out."""
    from vdm.backends.torch.training import TrainConfig, train

    cfg = TrainConfig(data=f"folder:{root}", frames=8, size=32, batch_size=8, steps=steps, checkpoint_every=0,
                      preview_every=0, device="cpu", threads=1, heldout_fraction=0.0, cache=cache, out_dir=str(out))
    stamps: list[float] = []

    def stamp(step: int, x0: Any) -> Any:  # called once per step, right after its batch is loaded
        stamps.append(time.perf_counter())
        return x0

    train(cfg, batch_hook=stamp)
    return float(np.median(np.diff(stamps[1:])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=7.0, help="length of each video (UCF-101 averages ~7 s)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=0, help="also time this many training steps both ways")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from vdm.backends.torch.data.video import ClipSpec, VideoFolder

    torch.set_num_threads(1)
    spec = ClipSpec(frames=8, size=32)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "videos", Path(tmp) / "cache"
        root.mkdir()
        make_videos(root, args.files, args.seconds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            cached = VideoFolder(root, spec, cache_dir=cache)
            build_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            cached = VideoFolder(root, spec, cache_dir=cache)
            build_warm = time.perf_counter() - t0
            plain = VideoFolder(root, spec)
        t_cached = time_items(cached, args.reps)
        t_plain = time_items(plain, args.reps)
        train_s = {}
        if args.train_steps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for cache_on in (True, False):
                    train_s[cache_on] = time_training(root, Path(tmp) / f"run{cache_on}", args.train_steps, cache_on)
    result = {
        "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
        "video": f"{args.files} x {args.seconds:g} s, 320x240, 25 fps, mp4 (H.264)", "clip": "8 frames at 32x32 RGB",
        "build_with_cache_cold_s": build_cold, "build_with_cache_warm_s": build_warm,
        "per_clip_cached_ms": 1e3 * t_cached, "per_clip_uncached_ms": 1e3 * t_plain,
        "speedup": t_plain / t_cached,
    }
    print(f"video cache: {result['video']}, {result['clip']}")
    print(f"  per clip: cached {result['per_clip_cached_ms']:.2f} ms, uncached {result['per_clip_uncached_ms']:.1f} ms"
          f" -> {result['speedup']:.0f}x")
    print(f"  dataset build: {build_cold:.2f} s first (decodes and writes the cache), {build_warm:.3f} s after")
    if train_s:
        result.update(train_steps=args.train_steps, step_cached_s=train_s[True], step_uncached_s=train_s[False],
                      train_speedup=train_s[False] / train_s[True])
        print(f"  training step (tiny U-Net, batch 8, 1 thread, median of {args.train_steps}): cached "
              f"{train_s[True]:.2f} s, uncached {train_s[False]:.2f} s -> {result['train_speedup']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
