"""Training throughput of the video U-Net presets on this machine (not a test).

For each preset, times full training steps (q_sample, forward, loss, backward, clipping, AdamW,
EMA) on random clips and reports samples/s and achieved GFLOP/s, counting a step as 3x the
forward FLOPs (``flops_per_forward``; backward ~ 2x forward). Beside them: the same run's float32
2048x2048 matmul GFLOP/s, the machine's dense-compute ceiling for comparison.

    python benchmarks/bench_train.py [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Per preset: (frames, size, batch on CPU, batch on CUDA). The small preset runs at a reduced
# batch on CPU so that one step takes seconds, not minutes.
SETTINGS = {"tiny": (8, 32, 16, 64), "small": (16, 64, 2, 16)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """float32 n x n matmul throughput (2 n^3 FLOPs per product)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def bench_preset(name: str, device: torch.device, *, frames: int, size: int, batch: int, steps: int,
                 warmup: int, bf16: bool) -> dict[str, Any]:
    import copy

    from vdm.backends.torch import ops
    from vdm.backends.torch.models.unet import VideoUNet, count_parameters, flops_per_forward, preset

    cfg = preset(name, frames=frames, image_size=size)
    torch.manual_seed(0)
    model = VideoUNet(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = ops.make_schedule("cosine", 1000, device=device)
    x0 = torch.rand(batch, cfg.in_channels, frames, size, size, device=device) * 2 - 1
    use_bf16 = bf16 and device.type == "cuda"

    def step() -> None:
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(x0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out = model(ops.q_sample(sched, x0, t, noise), t.float())
        loss = ops.simple_loss(sched, x0, t, noise, out.float(), "eps").mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 0.001)

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    flops = 3 * flops_per_forward(cfg, frames, size, batch)
    return {"preset": name, "params_M": count_parameters(model) / 1e6, "frames": frames, "size": size,
            "channels": cfg.in_channels, "batch": batch, "step_s": seconds, "samples_per_s": batch / seconds,
            "gflop_per_step": flops / 1e9, "gflops": flops / seconds / 1e9, "bf16": use_bf16}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", default="tiny,small", help="comma-separated presets (tiny, small, base)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per preset")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch", type=int, default=None, help="override every preset's batch size")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda requested but CUDA is not available")
    rows = []
    for name in [s.strip() for s in args.presets.split(",") if s.strip()]:
        frames, size, b_cpu, b_cuda = SETTINGS.get(name, (16, 64, 1, 8))
        batch = args.batch or (b_cuda if device.type == "cuda" else b_cpu)
        rows.append(bench_preset(name, device, frames=frames, size=size, batch=batch, steps=args.steps,
                                 warmup=args.warmup, bf16=not args.no_bf16))
        print(f"{name}: {rows[-1]['samples_per_s']:.2f} samples/s", file=sys.stderr)
    mm = matmul_gflops(device)
    for r in rows:
        r["fraction_of_matmul"] = r["gflops"] / mm
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "matmul_2048_fp32_gflops": mm, "presets": rows,
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training throughput on {result['device']} ({device.type}, {result['threads']} threads); "
                        f"fp32 2048^2 matmul: {mm:.1f} GFLOP/s")
    for col in ("preset", "params (M)", "clip", "batch", "step (s)", "samples/s", "GFLOP/step", "GFLOP/s",
                "of matmul"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["preset"], f"{r['params_M']:.2f}", f"{r['channels']}x{r['frames']}x{r['size']}^2",
                      str(r["batch"]), f"{r['step_s']:.3f}", f"{r['samples_per_s']:.2f}",
                      f"{r['gflop_per_step']:.1f}", f"{r['gflops']:.1f}", f"{100 * r['fraction_of_matmul']:.0f}%")
    Console(width=None if Console().is_terminal else 160).print(table)  # piped output: don't squeeze to 80
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
