"""`vdm quickstart [--out DIR]`: train, export, sample with ONNX Runtime and evaluate, in one folder.

Run by ``make demo``. Trains the ``tiny`` preset on moving shapes with the training engineer's
``QUICKSTART_TRAIN`` settings (a few minutes on 2 CPU cores), exports the EMA weights to ONNX
(validated against PyTorch), samples in ONNX Runtime (Euler on the default rectified-flow model)
and scores the samples beside real held-out clips and noise.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from vdm.backends.sampling import DEFAULT_SAMPLERS, DEVICES  # NumPy only

from .errors import CANNOT_WRITE, fail, require_extras

# Which direction is better, for the eval table.
_HINTS = {"count_consistency": "higher is better", "velocity_residual": "lower is better",
          "coherent_fraction": "higher is better"}




# The quickstart's noise process and sampler per process; benchmarks/bench_process.py measured the choice.
QUICKSTART_PROCESS = "flow"
QUICKSTART_SAMPLERS = DEFAULT_SAMPLERS


def run_quickstart(out: Path, *, train_steps: int | None = None, num: int = 16, sample_steps: int = 20,
                   seed: int = 0, device: str = "cpu", process: str = QUICKSTART_PROCESS, sampler: str | None = None,
                   say: Any = print) -> dict[str, Path]:
    """The whole path; returns the files written, by name."""
    from vdm.backends import media, sampling
    from vdm.backends.files import writing
    from vdm.backends.torch.evaluation import evaluate, write_report
    from vdm.backends.torch.training import QUICKSTART_TRAIN, train
    from vdm.backends.torch.training.config import QUICKSTART_PROCESS_OPTIONS, resolve_config
    from vdm.export.onnx_export import export_checkpoint


    files: dict[str, Path] = {}
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(None, {"process": process, **QUICKSTART_PROCESS_OPTIONS[process],
                                "out_dir": str(out / "train"), "overwrite": True}, QUICKSTART_TRAIN)
    sampler = sampler or QUICKSTART_SAMPLERS[process]
    if train_steps is not None:  # testing only: a drastically shortened run
        cfg = cfg.replace(steps=train_steps, warmup_steps=min(cfg.warmup_steps, train_steps),
                          checkpoint_every=0, preview_every=0, log_every=1)
    say(f"[1/4] training the tiny preset on moving shapes: {cfg.steps} steps of batch {cfg.batch_size} "
        f"({cfg.frames} frames, {cfg.size}x{cfg.size}, {cfg.process} process, "
        f"{cfg.prediction or 'its default'} prediction)")
    t0 = time.perf_counter()
    result = train(cfg, progress=True, log=say)
    if result.last_checkpoint is None:
        raise RuntimeError("training wrote no checkpoint")
    files["checkpoint"] = result.last_checkpoint
    train_dir = Path(result.out_dir)
    for name, rel in (("loss plot", "loss.png"), ("training metrics CSV", "metrics.csv")):
        if (train_dir / rel).is_file():
            files[name] = train_dir / rel
    say(f"      trained in {time.perf_counter() - t0:.0f} s")

    say("[2/4] exporting the EMA weights to ONNX (validated against PyTorch)")
    report = export_checkpoint(result.last_checkpoint, out / "model.onnx", log=lambda m: say(f"      {m}"))
    files["ONNX model"] = report.path
    say(f"      parity: max abs error {report.max_abs:.2e} over {len(report.cases)} shapes")

    say(f"[3/4] sampling {num} clips with {sampler} ({sample_steps} steps) in ONNX Runtime ({device})")
    model = sampling.load_model(report.path, "ort", device=device, allow_fallback=True, warn=say)
    options = sampling.SamplingOptions(sampler=sampler, steps=sample_steps, clip=1.0, batch_size=num)
    t1 = time.perf_counter()
    videos = sampling.sample_videos(model, num, seed, options)
    say(f"      sampled in {time.perf_counter() - t1:.1f} s")
    written = media.write_videos(videos, out / "samples.gif", also=(".mp4", ".npy"))
    files["samples GIF"], files["samples MP4"], files["samples NPY"] = written[:3]
    files["samples contact sheet"] = written[3]

    say("[4/4] evaluating: moving-shapes metrics of the samples, real held-out clips and noise")
    rep = evaluate(ckpt=result.last_checkpoint, samples=videos, seed=seed)
    rep["settings"].update(backend="onnxruntime", sampling=dataclasses.asdict(options), model=str(report.path))
    files["eval JSON"] = write_report(out / "eval.json", rep)
    files["eval table"] = _write_table(out / "eval.txt", rep)
    return files


def _write_table(path: Path, rep: dict[str, Any]) -> Path:
    from vdm.backends.files import atomic_write_bytes

    rows = rep["rows"]
    metrics = list(rows["samples"])
    header = f"{'metric':<20} {'samples':>10} {'real':>10} {'noise':>10}"
    lines = [header, "-" * len(header)]
    for m in metrics:
        vals = " ".join(f"{rows[k][m]:>10.4f}" for k in ("samples", "real", "noise"))
        lines.append(f"{m:<20} {vals}  {_HINTS.get(m, '')}".rstrip())
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart(
        out: Annotated[Path, typer.Option("--out", help="Folder for everything (a previous quickstart there is "
                                                        "replaced).")] = Path("out/quickstart"),
        device: Annotated[str, typer.Option(help=f"Execution provider for sampling: {', '.join(DEVICES['ort'])} "
                                                 "(falls back to CPU with a warning).")] = "cpu",
        seed: Annotated[int, typer.Option(help="Seed of the sampling noise and evaluation clips.")] = 0,
        train_steps: Annotated[int | None, typer.Option(hidden=True, min=1, help="Testing: train this many steps.")
                               ] = None,
        num: Annotated[int, typer.Option(hidden=True, min=2, help="Testing: number of samples.")] = 16,
        sample_steps: Annotated[int, typer.Option("--steps", "--sample-steps", min=1, help="Sampler steps.")] = 20,
        process: Annotated[str, typer.Option(help=f"Noise process to train: {', '.join(QUICKSTART_SAMPLERS)} "
                                                  "(spec 14).")] = QUICKSTART_PROCESS,
        sampler: Annotated[str | None, typer.Option(
            help="Sampler (default: " + ", ".join(f"{s} for {p}" for p, s in QUICKSTART_SAMPLERS.items()) + ")."
        )] = None,
    ) -> None:
        """Train the tiny preset on moving shapes (rectified flow), export to ONNX, sample with ONNX Runtime and
        evaluate; a few minutes on 2 CPU cores. Prints where each file is.

        Exit status: 0 done, 2 bad input, 3 a file in --out cannot be written."""
        require_extras("vdm quickstart", "torch", "ort")
        from rich.console import Console
        from rich.table import Table
        from vdm.backends.files import WriteError, check_writable

        if device not in DEVICES["ort"]:
            fail(f"--device must be one of {', '.join(DEVICES['ort'])}, got {device!r}")
        if process not in QUICKSTART_SAMPLERS:
            fail(f"--process must be one of {', '.join(QUICKSTART_SAMPLERS)}, got {process!r}")
        from vdm.backends.sampling import SamplingError, SamplingOptions

        import vdm_ref

        try:  # before minutes of training: a sampler that cannot run on this process fails now
            SamplingOptions(sampler=sampler or QUICKSTART_SAMPLERS[process], steps=sample_steps).check()
        except SamplingError as exc:
            fail(str(exc))
        if sampler in vdm_ref.SAMPLERS and process != "vp":
            fail(f"the {sampler} sampler is defined on vp models (spec 7); with --process {process} choose one of "
                 f"{', '.join(vdm_ref.SOLVERS)}")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} exists and is not a folder")
        console = Console(soft_wrap=True)
        t0 = time.perf_counter()
        try:
            check_writable(out / "eval.json")  # a blocked or read-only --out fails before training
            files = run_quickstart(out, train_steps=train_steps, num=num, sample_steps=sample_steps, seed=seed,
                                   device=device, process=process, sampler=sampler,
                                   say=lambda m: console.print(m, highlight=False))
        except WriteError as exc:
            fail(str(exc), CANNOT_WRITE)
        eval_txt = files["eval table"].read_text()
        console.print(eval_txt, highlight=False)
        table = Table(title=f"vdm quickstart: done in {time.perf_counter() - t0:.0f} s")
        table.add_column("what")
        table.add_column("file", overflow="fold")
        for name, path in files.items():
            table.add_row(name, str(path))
        console.print(table)
