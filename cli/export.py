"""`vdm export --ckpt CKPT OUT.onnx`: export a checkpoint's denoiser to ONNX, validated against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import CANNOT_WRITE, FAILED, fail, require_extras


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        out: Annotated[Path, typer.Argument(metavar="OUT.onnx", help="Where to write the ONNX model.")],
        ckpt: Annotated[Path, typer.Option("--ckpt", help="Training checkpoint (.safetensors).")],
        ema: Annotated[bool, typer.Option("--ema/--raw",
                                          help="Export the EMA weights (default) or the raw ones.")] = True,
        opset: Annotated[int, typer.Option(help="ONNX opset (14-20). 21+ would emit GroupNormalization-21, "
                                                "which ONNX Runtime cannot run.")] = 17,
        fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision weights and activations; timestep "
                                                          "embedding, norms and softmax stay float32, inputs and "
                                                          "outputs stay float32.")] = False,
        dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--fixed-batch",
                                                    help="Batch axis dynamic (default) or fixed to --batch.")] = True,
        dynamic_frames: Annotated[bool, typer.Option("--dynamic-frames/--fixed-frames",
                                                     help="Frame axis dynamic (default) or fixed to --frames.")] = True,
        dynamic_size: Annotated[bool, typer.Option("--dynamic-size/--fixed-size",
                                                   help="Height/width dynamic or fixed to --size (default).")] = False,
        batch: Annotated[int, typer.Option(min=1, help="Batch of a --fixed-batch graph.")] = 1,
        frames: Annotated[int | None, typer.Option(min=1, help="Frames (default: the training clip length).")] = None,
        size: Annotated[int | None, typer.Option(min=1, help="Height = width (default: the training size).")] = None,
        exporter: Annotated[str, typer.Option(help="legacy (TorchScript, default: as fast at run time, exports in "
                                                   "about a second) or dynamo (torch.export).")] = "legacy",
    ) -> None:
        """Export a checkpoint to ONNX with its sampling metadata embedded.

        The graph is checked with onnx.checker (full_check) and run in ONNX Runtime against PyTorch at
        batches, frame counts and timesteps other than the export example; the file is written only if
        every case is within tolerance (fp32: |err| <= 1e-4 + 1e-4 max|out|; fp16: 2e-2 + 2e-2 max|out|).
        Exit status: 0 written, 1 validation failed (nothing written), 2 bad input (including a checkpoint
        with NaN or infinite weights), 3 OUT.onnx cannot be written (its folder is created if missing).
        """
        require_extras("vdm export", "torch", "ort")
        from vdm.backends.files import WriteError, check_writable
        from vdm.backends.torch.training.checkpoint import CheckpointError
        from vdm.export.onnx_export import ExportError, ExportOptions, export_checkpoint

        if out.suffix.lower() != ".onnx":
            fail(f"the output must end in .onnx, got {out}")
        options = ExportOptions(ema=ema, opset=opset, fp16=fp16, dynamic_batch=dynamic_batch,
                                dynamic_frames=dynamic_frames, dynamic_size=dynamic_size, exporter=exporter,
                                batch=batch, frames=frames, size=size)
        try:
            options.check()
            check_writable(out)
        except ExportError as exc:
            fail(str(exc))
        except WriteError as exc:
            fail(str(exc), CANNOT_WRITE)
        try:
            report = export_checkpoint(ckpt, out, options, log=typer.echo)
        except CheckpointError as exc:
            fail(str(exc))
        except ExportError as exc:
            fail(f"export failed, nothing written: {exc}", FAILED)
        except WriteError as exc:
            fail(f"{exc}; nothing written", CANNOT_WRITE)
        info = report.info
        typer.echo(f"parity vs PyTorch: max abs error {report.max_abs:.2e}, max rel error {report.max_rel:.2e} "
                   f"(tolerance {report.tolerance[0]:g} abs + {report.tolerance[1]:g} rel, "
                   f"{len(report.cases)} cases)")
        kind = f"conditional ({info.num_classes} classes)" if info.conditional else "unconditional"
        typer.echo(f"accepts batch {info.batch.describe()}, frames {info.frames.describe()}, "
                   f"size {info.size.describe()}; {kind}")
        typer.echo(f"wrote {report.path} ({report.size_bytes / 1e6:.2f} MB, export {report.export_seconds:.1f} s, "
                   f"validation {report.validate_seconds:.1f} s)")
