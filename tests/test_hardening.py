"""Hostile input and a hostile machine: every failure is one line with a meaningful exit status, and
nothing on disk is damaged or left behind.

One section per class of failure: the file system (read-only, full, blocked or size-limited),
non-finite and mistyped input (flags and config files), checkpoints with NaN weights, the metrics
CSV under kill -9, and the clean-up of temporary files.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MICRO_TRAIN_MODEL
from typer.testing import CliRunner
from vdm.backends import files, media
from vdm.backends.torch.training import TrainConfig, TrainingDiverged, train
from vdm.backends.torch.training.checkpoint import load_checkpoint, save_checkpoint
from vdm.cli import errors
from vdm.cli.main import app

# The micro U-Net as `vdm train` flags, and the same run as a TrainConfig.
MICRO_FLAGS = [*(a for k, v in MICRO_TRAIN_MODEL.items() for a in ("--model", f"{k}={v}".replace(" ", ""))),
               "--frames", "4", "--size", "8", "--batch-size", "4", "--device", "cpu", "--preview-every", "0",
               "--log-every", "1", "--quiet", "--steps", "2"]


def micro_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(model=MICRO_TRAIN_MODEL, frames=4, size=8, batch_size=4, steps=2, lr=1e-3, warmup_steps=1,
                log_every=1, checkpoint_every=1, preview_every=0, out_dir=str(out), device="cpu", num_clips=64,
                ema_decay=0.9)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "run"
    train(micro_cfg(out))
    return out


@pytest.fixture(scope="module")
def ckpt(run_dir) -> Path:
    return run_dir / "last.safetensors"


@pytest.fixture(scope="module")
def nan_ckpt(ckpt, tmp_path_factory) -> Path:
    """The same checkpoint with one NaN in one EMA tensor (as a diverged run would have written it)."""
    c = load_checkpoint(ckpt)
    ema = {k: v.clone() for k, v in c.ema_state.items()}
    name = next(k for k, v in ema.items() if v.is_floating_point())
    ema[name].view(-1)[0] = float("nan")
    meta = {k: v for k, v in c.meta.items() if k not in ("optimizer", "rng")}
    path = tmp_path_factory.mktemp("nan") / "nan.safetensors"
    save_checkpoint(path, model=c.model_state, ema=ema, optimizer=None, meta=meta, rng=False)
    return path


def invoke(*args) -> tuple[int, list[str], str]:
    """Run `vdm ARGS` in-process: (exit status, non-empty stderr lines, stdout)."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, [line for line in res.stderr.splitlines() if line.strip()], res.stdout


def vdm_subprocess(*args, file_limit: int | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run `vdm ARGS` in a child; ``file_limit`` caps the size of any file it writes (RLIMIT_FSIZE),
    with SIGXFSZ ignored so a write past it fails with EFBIG instead of killing the process."""
    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "vdm.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


def one_error_line(lines: list[str], *needles: str) -> str:
    """The stderr lines hold exactly one line, 'error: ...', containing every needle."""
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp")) if folder.is_dir() else []


# --------------------------------------------------------------------------- file system


def _command(kind: str, target: Path, ckpt: Path) -> list:
    """A command whose only output is ``target``."""
    return {
        "sample": ["sample", "--backend", "torch", "--model", ckpt, "--steps", 2, "--num", 2, "--out", target],
        "eval-report": ["eval", "--ckpt", ckpt, "--num", 2, "--steps", 2, "--report", target],
        "eval-save-samples": ["eval", "--ckpt", ckpt, "--num", 2, "--steps", 2, "--save-samples", target],
        "export": ["export", "--ckpt", ckpt, target],
        "train": ["train", *MICRO_FLAGS, "--out", target],
    }[kind]


NAMES = {"sample": "x.gif", "eval-report": "r.json", "eval-save-samples": "s.npy", "export": "m.onnx", "train": "run"}


@pytest.mark.parametrize("kind", list(NAMES))
def test_a_file_in_the_way_is_one_line_and_exit_3(kind, ckpt, tmp_path):
    blocker = tmp_path / "notafolder"
    blocker.write_text("keep me")
    target = blocker / NAMES[kind]
    code, err, _ = invoke(*_command(kind, target, ckpt))
    assert code == errors.CANNOT_WRITE == 3
    one_error_line(err, f"cannot write {target}", f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "keep me" and temp_files(tmp_path) == []


@pytest.mark.parametrize("kind", ["sample", "eval-report", "eval-save-samples", "export"])
def test_an_output_that_is_a_folder_is_refused_before_work(kind, ckpt, tmp_path):
    target = tmp_path / NAMES[kind]
    target.mkdir()
    (target / "inside").write_text("keep me")
    code, err, out = invoke(*_command(kind, target, ckpt))
    assert code == errors.CANNOT_WRITE
    one_error_line(err, f"cannot write {target}: it is a folder")
    assert (target / "inside").read_text() == "keep me"
    assert "sampling took" not in out and "parity" not in out  # refused before the long work


@pytest.mark.parametrize("kind", list(NAMES))
def test_read_only_folder(kind, ckpt, tmp_path, monkeypatch):
    """A read-only folder: real permissions where the test is not root (root writes anyway), else a
    file system that answers EROFS to every file created in that folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        cause = "permission denied"
    else:
        real_mkstemp = files.tempfile.mkstemp

        def read_only(*args, dir=None, **kw):
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real_mkstemp(*args, dir=dir, **kw)

        monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kw):
            if self.resolve().is_relative_to(folder.resolve()) and self.resolve() != folder.resolve():
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real_mkdir(self, *args, **kw)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        cause = "the file system is read-only"
    try:
        target = folder / NAMES[kind]
        code, err, _ = invoke(*_command(kind, target, ckpt))
        assert code == errors.CANNOT_WRITE
        one_error_line(err, "cannot write", str(folder), cause)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("kind", ["eval-report", "eval-save-samples", "sample"])
def test_disk_full_during_the_write_keeps_the_old_file(kind, ckpt, tmp_path, monkeypatch):
    """The disk fills up after the up-front check passed: the write itself reports ENOSPC (as NFS
    does at fsync), the previous file is untouched and no temporary file stays."""
    target = tmp_path / NAMES[kind]
    target.write_bytes(b"previous result")

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    code, err, _ = invoke(*_command(kind, target, ckpt))
    assert code == errors.CANNOT_WRITE
    error = [line for line in err if line.startswith("error:")]
    assert len(error) == 1 and error[0] == err[-1], err
    assert f"cannot write {target}: no space left on the device" in error[0]
    assert target.read_bytes() == b"previous result" and temp_files(tmp_path) == []


def test_file_size_limit_sample(ckpt, tmp_path):
    out = tmp_path / "big.npy"  # 8 clips (1, 4, 8, 8) float32 = 8 KiB + header > 4 KiB
    proc = vdm_subprocess("sample", "--backend", "torch", "--model", ckpt, "--steps", 2, "--num", 8, "--out", out,
                          file_limit=4096)
    assert proc.returncode == errors.CANNOT_WRITE, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert lines[-1] == f"error: cannot write {out}: file too large (the file-size limit was reached)"
    assert not out.exists() and temp_files(tmp_path) == []


@pytest.mark.parametrize("kind", ["train", "export"])
def test_file_size_limit_train_and_export(kind, ckpt, tmp_path):
    """A checkpoint (~100 KB) or an ONNX graph does not fit under a 16 KiB limit."""
    target = tmp_path / NAMES[kind]
    proc = vdm_subprocess(*_command(kind, target, ckpt), file_limit=16384)
    assert proc.returncode == errors.CANNOT_WRITE, proc.stderr
    assert "Traceback" not in proc.stderr
    line = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(line) == 1 and "file too large (the file-size limit was reached)" in line[0], proc.stderr
    assert str(target) in line[0]
    if kind == "train":
        assert proc.stderr.strip() == line[0]  # --quiet: the error is the only line
        assert not (target / "last.safetensors").exists() and list((target / "checkpoints").iterdir()) == []
    else:
        assert not target.exists()
    assert temp_files(tmp_path) == []


def test_missing_output_folders_are_created(ckpt, tmp_path):
    """A missing folder is not an error: it is created, as `mkdir -p` would (documented in --help)."""
    target = tmp_path / "new" / "deeper" / "r.json"
    code, err, _ = invoke(*_command("eval-report", target, ckpt))
    assert code == 0, err
    assert target.is_file()


def test_exit_statuses_are_documented():
    for command in ("train", "eval", "export", "sample"):
        res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        text = " ".join(res.stdout.split())
        assert "Exit status:" in text and "3 " in text.split("Exit status:")[1], command
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"| {code} |" in readme for code in errors.EXIT_STATUS_HELP)


# --------------------------------------------------------------------------- non-finite and mistyped input


NON_FINITE = [
    ("sample", "--guidance", "nan"), ("sample", "--eta", "nan"), ("sample", "--clip", "nan"),
    ("sample", "--clip", "inf"), ("sample", "--threshold", "nan"), ("sample", "--fps", "inf"),
    ("eval", "--guidance", "inf"), ("eval", "--threshold", "nan"), ("eval", "--clip", "-inf"),
    ("train", "--weight-decay", "nan"), ("train", "--lr", "inf"), ("train", "--grad-clip", "nan"),
    ("train", "--hybrid-lambda", "nan"), ("train", "--min-snr-gamma", "inf"), ("train", "--label-dropout", "nan"),
    ("train", "--ema-decay", "nan"),
]


@pytest.mark.parametrize("command,option,value", NON_FINITE)
def test_non_finite_numbers_are_refused(command, option, value, ckpt, tmp_path):
    base = {"sample": ["sample", "--backend", "torch", "--model", ckpt, "--out", tmp_path / "o.gif"],
            "eval": ["eval", "--ckpt", ckpt, "--report", tmp_path / "r.json"],
            "train": ["train", *MICRO_FLAGS, "--out", tmp_path / "run"]}[command]
    code, err, _ = invoke(*base, option, value)
    assert code == errors.BAD_INPUT
    one_error_line(err, f"'{option}': {value} is not a finite number")  # also where a range check saw it first
    assert list(tmp_path.iterdir()) == []


def test_every_option_of_every_command_rejects_nan():
    """Structural: the vdm group hardens each command it hands out, so an option added later is
    covered too."""
    import typer.main

    group = typer.main.get_command(app)
    ctx = group.make_context("vdm", ["--version"], resilient_parsing=True)
    checked = 0
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        for param in command.params:
            for bad in (float("nan"), float("inf"), [1.0, float("-inf")]):
                with pytest.raises(Exception, match="is not a finite number"):
                    param.callback(ctx, param, bad)
            checked += 1
    assert checked > 50


USAGE = [
    (["sample", "--eta", "1.5", "--model", "m.onnx"], "--eta"),
    (["sample", "--num", "abc", "--model", "m.onnx"], "--num"),
    (["sample"], "Missing option '--model'"),
    (["sample", "--model", "m.onnx", "--bogus"], "No such option: --bogus"),
    (["bogus-command"], "No such command 'bogus-command'"),
    (["export", "--ckpt", "c.safetensors"], "Missing argument 'OUT.onnx'"),
    (["train", "--steps", "x"], "--steps"),
    (["--bogus"], "--bogus"),
]


@pytest.mark.parametrize("args,needle", USAGE)
def test_usage_errors_are_one_line(args, needle):
    code, err, out = invoke(*args)
    assert code == errors.BAD_INPUT
    one_error_line(err, needle)
    assert "Usage" not in out and "Usage" not in " ".join(err)


def test_usage_errors_are_one_line_from_the_console_script():
    proc = vdm_subprocess("sample", "--steps", "0", "--model", "m.onnx")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: Invalid value for '--steps': Input should be greater than or equal to 1"]


CONFIGS = {
    'steps = "ten"\n': "steps must be an integer, got 'ten'",
    "lr = nan\n": "lr must be a finite number, got nan",
    "weight_decay = inf\n": "weight_decay must be a finite number, got inf",
    "batch_size = 2.5\n": "batch_size must be an integer, got 2.5",
    "seed = true\n": "seed must be an integer, got True",
    'conditional = "yes"\n': "conditional must be true or false, got 'yes'",
    "[schedule_params]\nbeta_end = nan\n": "schedule_params.beta_end must be a finite number, got nan",
    "[model]\ndropout = nan\n": "model.dropout must be a finite number, got nan",
}


@pytest.mark.parametrize("text", list(CONFIGS))
def test_config_file_values_are_checked_like_flags(text, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, err, _ = invoke("train", "--config", path, "--out", tmp_path / "run")
    assert code == errors.BAD_INPUT
    one_error_line(err, f"config file {path}", CONFIGS[text])
    assert not (tmp_path / "run").exists()


def test_library_config_rejects_nan_and_wrong_types():
    for field, value in (("weight_decay", float("nan")), ("grad_clip", float("inf")), ("steps", "10"),
                         ("hybrid_lambda", -1.0)):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})


# --------------------------------------------------------------------------- NaN weights


@pytest.mark.parametrize("kind", ["sample", "eval", "export", "resume"])
def test_checkpoint_with_nan_weights_is_refused(kind, nan_ckpt, tmp_path):
    args = {"sample": ["sample", "--backend", "torch", "--model", nan_ckpt, "--out", tmp_path / "o.npy"],
            "eval": ["eval", "--ckpt", nan_ckpt, "--num", 2, "--steps", 2, "--report", tmp_path / "r.json"],
            "export": ["export", "--ckpt", nan_ckpt, tmp_path / "m.onnx"],
            "resume": ["train", "--resume", nan_ckpt, "--out", tmp_path / "run", "--steps", 3, "--quiet"]}[kind]
    code, err, _ = invoke(*args)
    assert code == errors.BAD_INPUT
    one_error_line(err, str(nan_ckpt), "NaN or infinite", "EMA")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("checkpoint_every,message", [
    (1, "the weights are not finite after the update of step 3"),  # caught before step 3's checkpoint
    (2, "is (nan|inf) at step 4"),  # no write at step 3; step 4's loss sees the weights
])
def test_weights_that_turn_non_finite_are_never_checkpointed(checkpoint_every, message, tmp_path, monkeypatch):
    """A finite loss and gradient with an update that overflows the weights (simulated: the optimizer
    step of step 3 writes an infinity): training stops, and the checkpoint of step 2 is the last."""
    real_step = torch.optim.AdamW.step
    calls = []

    def overflowing_step(self, *args, **kw):
        result = real_step(self, *args, **kw)
        calls.append(1)
        if len(calls) == 3:
            self.param_groups[0]["params"][0].data.view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing_step)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=f"{message}.*Last good checkpoint: .*step_0000002.safetensors"):
        train(micro_cfg(out, steps=6, checkpoint_every=checkpoint_every))
    assert load_checkpoint(out / "last.safetensors").step == 2  # loads: its weights are finite
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step_0000002.safetensors"


def test_samples_that_overflow_are_refused(ckpt, tmp_path, monkeypatch):
    """Finite weights, non-finite samples (an option that overflows): an error, not NaN videos."""
    from vdm.backends import sampling

    model = sampling.load_model(ckpt, "torch")
    poisoned = sampling.LoadedModel(**{**model.__dict__, "run_batch": lambda *a: np.full((2, 1, 4, 8, 8), np.nan)})
    with pytest.raises(sampling.SamplingError, match="NaN or infinite"):
        sampling.sample_videos(poisoned, 2, 0, sampling.SamplingOptions(steps=2))


# --------------------------------------------------------------------------- metrics CSV under kill -9


def test_metrics_rewrite_on_resume_survives_kill_9(tmp_path):
    """Resuming rewrites metrics.csv without the rows after the checkpoint. The process is killed
    (SIGKILL) in the middle of that rewrite: the old history must be intact, byte for byte."""
    path = tmp_path / "metrics.csv"
    history = "step,loss,lr,grad_norm,steps_per_s,elapsed\n" + "".join(
        f"{s},{1 / s:.6g},0.001,1,10,{s}\n" for s in range(1, 9))
    path.write_text(history)
    code = textwrap.dedent(f"""
        import csv, os, signal
        from pathlib import Path
        from vdm.backends.torch.training import loop
        rows = []
        real = csv.DictWriter.writerow
        def writerow(self, row):
            rows.append(row)
            if len(rows) == 3:
                self.writer.writerow(list(row.values())[:2])  # a torn row in the file being written
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, row)
        csv.DictWriter.writerow = writerow
        loop._Metrics(Path({str(path)!r}), resume_step=6)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert path.read_text() == history
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1  # the killed writer's partial file, never under the real name
    assert files.remove_stale_temp_files(tmp_path) == leftovers  # what the next run removes first
    # The rewrite itself, uninterrupted: rows up to the checkpoint's step 6, then appending.
    from vdm.backends.torch.training import loop

    metrics = loop._Metrics(path, resume_step=6)
    metrics.write({"step": 7, "loss": 0.5, "lr": 0.001, "grad_norm": 1.0, "steps_per_s": 10.0, "elapsed": 7.0})
    metrics.close()
    assert loop.read_metrics(path)[0] == [1, 2, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------- clean-up of temporary files


def test_stale_temp_files_of_previews_exports_and_samples_are_removed(run_dir, ckpt, tmp_path):
    from vdm.export.onnx_export import export_checkpoint

    # Previews: a kill while a preview GIF was written leaves a temp file in OUT/previews.
    out = tmp_path / "run"
    train(micro_cfg(out, steps=2))
    (out / "previews").mkdir()
    stale_preview = out / "previews" / ".step_0000002.gif.k1ll3d.tmp"
    stale_preview.write_bytes(b"GIF8")
    train(micro_cfg(out, steps=3, resume="auto", preview_every=3, preview_steps=2, preview_num=1))
    assert not stale_preview.exists() and (out / "previews" / "step_0000003.gif").is_file()
    # Exports: the temp file of a killed export of the same target; someone else's temp file stays.
    stale_export, foreign = tmp_path / ".m.onnx.k1ll3d.tmp", tmp_path / ".notes.txt.abc.tmp"
    stale_export.write_bytes(b"partial graph")
    foreign.write_bytes(b"not ours")
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    assert not stale_export.exists() and foreign.exists() and (tmp_path / "m.onnx").is_file()
    # Samples and eval outputs: the same, through the CLI.
    stale_sample = tmp_path / ".s.npy.k1ll3d.tmp"
    stale_sample.write_bytes(b"partial")
    code, err, _ = invoke("sample", "--backend", "torch", "--model", ckpt, "--steps", 2, "--num", 2,
                          "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert not stale_sample.exists() and foreign.exists()


def test_failed_npy_write_leaves_nothing(tmp_path, monkeypatch):
    """A failed .npy write (full disk at fsync) leaves neither the file nor a temp file; over an
    existing file it leaves the old bytes."""
    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.WriteError, match=r"cannot write .*a\.npy: no space left on the device"):
        media.save_npy(tmp_path / "a.npy", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "b.npy").write_bytes(b"old")
    with pytest.raises(files.WriteError):
        media.save_npy(tmp_path / "b.npy", np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["b.npy"] and (tmp_path / "b.npy").read_bytes() == b"old"


def test_failed_npy_write_under_a_size_limit_leaves_nothing(tmp_path):
    code = (f"import numpy as np; from vdm.backends import media, files\n"
            f"try:\n    media.save_npy({str(tmp_path / 'a.npy')!r}, np.zeros(10000))\n"
            f"except files.WriteError as exc:\n    print(exc)\n")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("a.npy: file too large (the file-size limit was reached)")
    assert list(tmp_path.iterdir()) == []
