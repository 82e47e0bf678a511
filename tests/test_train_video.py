"""Training on real video files: a UCF-101-layout folder of small generated videos, with a corrupt
and a too-short file that must be skipped and named."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import MICRO_TRAIN_MODEL
from typer.testing import CliRunner
from vdm.backends.media import write_video
from vdm.backends.torch.data.video import VideoSkippedWarning, heldout_split
from vdm.backends.torch.training import TrainConfig, train
from vdm.backends.torch.training.checkpoint import load_checkpoint

SMALL_MODEL = MICRO_TRAIN_MODEL
CLASSES = ("MoveLeft", "MoveRight")




def _square_video(direction: int, frames: int = 10, size: int = 16) -> np.ndarray:
    video = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        x = 2 + (t if direction > 0 else frames - 1 - t)
        video[t, 5:10, x:x + 4] = (255, 200, 50)
    return video


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    train_lines, test_lines = [], []
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir()
        for g in (1, 2):
            rel = f"{cls}/v_{cls}_g0{g}_c01.avi"
            write_video(root / rel, _square_video(1 if label else -1), fps=8)
            (train_lines if g == 1 else test_lines).append(f"{rel} {label + 1}")
    # A corrupt file and a 2-frame file, both listed for training.
    (root / "MoveLeft" / "v_MoveLeft_g03_c01.avi").write_bytes(b"RIFF\x00\x00garbage" * 10)
    write_video(root / "MoveRight" / "v_MoveRight_g03_c01.avi", _square_video(1, frames=2), fps=8)
    train_lines += ["MoveLeft/v_MoveLeft_g03_c01.avi 1", "MoveRight/v_MoveRight_g03_c01.avi 2"]
    (lists / "trainlist01.txt").write_text("\n".join(train_lines) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(r.split()[0] for r in test_lines) + "\n")
    return root


def test_ucf101_trains_and_reports_broken_files(ucf_root, tmp_path):
    cfg = TrainConfig(data=f"ucf101:{ucf_root}", model=SMALL_MODEL, frames=4, size=8, conditional=True,
                      batch_size=3, steps=3, checkpoint_every=0, preview_every=3, preview_num=2, preview_steps=2,
                      device="cpu", out_dir=str(tmp_path / "run"))
    with pytest.warns(VideoSkippedWarning) as record:
        res = train(cfg)
    text = " ".join(str(w.message) for w in record)
    assert "v_MoveLeft_g03_c01.avi" in text and "v_MoveRight_g03_c01.avi" in text
    assert res.step == 3 and all(np.isfinite(res.losses))
    ck = load_checkpoint(tmp_path / "run" / "last.safetensors")
    data = ck.meta["data"]
    assert data["kind"] == "ucf101" and data["num_videos"] == 2 and data["num_classes"] == 2
    assert sorted(p.rsplit("/", 1)[-1] for p in data["skipped"]) == ["v_MoveLeft_g03_c01.avi",
                                                                     "v_MoveRight_g03_c01.avi"]
    assert ck.config.num_classes == 2 and ck.config.in_channels == 3  # colour without asking
    # Decoded frames are cached by default in OUT/cache, one .npy per decodable file (the too-short one too,
    # so it is not decoded again to find that out).
    cache = tmp_path / "run" / "cache"
    assert data["cache_dir"] == str(cache.resolve())
    assert len(list(cache.glob("*.npy"))) == 3
    # The resumed run decodes from the cache and continues exactly.
    with pytest.warns(VideoSkippedWarning):  # every dataset build names the broken files again
        full = train(cfg.replace(out_dir=str(tmp_path / "full"), steps=5))
        resumed = train(cfg.replace(steps=5, resume="auto"))
    assert resumed.losses == full.losses[3:]
    # `vdm eval` on a video checkpoint: real reference clips come from the UCF-101 test split.
    from vdm.backends.sampling import SamplingOptions
    from vdm.backends.torch.evaluation import evaluate, real_clips

    real = real_clips(data, 3, seed=0)
    assert real.shape == (3, 3, 4, 8, 8) and real.min() >= -1 and real.max() <= 1
    rep = evaluate(ckpt=tmp_path / "run" / "last.safetensors", num=2, options=SamplingOptions(steps=2),
                   device="cpu")
    assert set(rep["rows"]) == {"samples", "real", "noise"}
    assert "lag1_corr" in rep["rows"]["real"] and "coherent_fraction" not in rep["rows"]["real"]
    assert "test split 1" in rep["settings"]["real_source"]
    # The real clips came from the test split: its two files were decoded into the run's cache too.
    assert len(list(cache.glob("*.npy"))) == 5


def test_no_cache_opts_out(ucf_root, tmp_path):
    cfg = TrainConfig(data=f"ucf101:{ucf_root}", model=SMALL_MODEL, frames=4, size=8, batch_size=2, steps=1,
                      checkpoint_every=0, preview_every=0, device="cpu", out_dir=str(tmp_path / "run"), cache=False)
    with pytest.warns(VideoSkippedWarning):
        train(cfg)
    assert not (tmp_path / "run" / "cache").exists()
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").meta["data"]["cache_dir"] is None


def test_colour_default_depends_on_the_data():
    from vdm.backends.torch.data import data_channels

    assert data_channels(TrainConfig(data="folder:videos")) == 3
    assert data_channels(TrainConfig(data="ucf101:videos")) == 3
    assert data_channels(TrainConfig()) == 1  # moving shapes stay grayscale
    assert data_channels(TrainConfig(data="folder:videos", channels=1)) == 1
    with pytest.raises(ValueError, match="fps"):
        TrainConfig(fps=float("nan"))
    with pytest.raises(ValueError, match="heldout_fraction"):
        TrainConfig(heldout_fraction=1.0)


def test_cli_folder_data_names_skipped_files(ucf_root, tmp_path):
    import typer
    from vdm.cli import train as train_cli

    app = typer.Typer()
    train_cli.register(app)
    args = ["--data", f"folder:{ucf_root}", "--frames", "4", "--size", "8", "--batch-size", "2",
            "--steps", "2", "--device", "cpu", "--preview-every", "0", "--out", str(tmp_path / "cli"),
            "--model", "base_channels=8", "--model", "channel_mult=[1,2]", "--model", "attn_levels=[1]",
            "--model", "temporal_attn_levels=[1]", "--model", "norm_groups=4"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})  # the CLI prints the warnings itself
    assert res.exit_code == 0, res.output
    # The held-out files (by the documented hash rule) are never decoded for training.
    rels = sorted(p.relative_to(ucf_root).as_posix() for p in ucf_root.rglob("*.avi"))
    held = heldout_split(rels, 0.1)
    broken = {"MoveLeft/v_MoveLeft_g03_c01.avi", "MoveRight/v_MoveRight_g03_c01.avi"}
    ck = load_checkpoint(tmp_path / "cli" / "last.safetensors")
    assert ck.meta["data"]["options"]["heldout"]["files"] == sorted(held) and held
    assert ck.meta["data"]["num_videos"] == len(rels) - len(held | broken)
    assert ck.config.in_channels == 3  # colour by default for video folders
    warned = [ln for ln in res.output.splitlines() if ln.startswith("warning: skipping video")]
    assert sorted(ln.split(": ")[1].split(ucf_root.name + "/")[-1] for ln in warned) == sorted(broken - held)
    assert f"skipped {len(broken - held)} unusable video(s)" in res.output
    # -q: no warning lines and no messages at all.
    quiet = CliRunner().invoke(app, [*args, "-q", "--out", str(tmp_path / "quiet")], env={"COLUMNS": "300"})
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
    res = CliRunner().invoke(app, [*args, "--data", f"ucf101:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not found" in res.output


def test_a_run_inside_its_data_folder_never_trains_on_its_own_outputs(tmp_path):
    """OUT inside the data folder: its preview GIFs and a sampled MP4 are not videos of the dataset, so
    the classes, the file count and a resumed run see the same data as the first run."""
    from vdm.backends.torch.data.video import VideoFolder

    root = tmp_path / "data"
    for label, cls in enumerate(CLASSES):
        for g in (1, 2, 3):
            write_video(root / cls / f"{cls}_{g}.mp4", _square_video(1 if label else -1), fps=8)
    out = root / "runs" / "r1"
    write_video(out / "samples" / "s.mp4", _square_video(1), fps=8)  # e.g. `vdm sample --out OUT/samples/s.mp4`
    cfg = TrainConfig(data=f"folder:{root}", model=SMALL_MODEL, frames=4, size=8, batch_size=2, steps=2,
                      log_every=1, checkpoint_every=0, preview_every=1, preview_num=2, preview_steps=2,
                      heldout_fraction=0.0, out_dir=str(out), device="cpu")
    train(cfg)
    assert list((out / "previews").glob("*.gif"))  # the run wrote videos inside the data folder
    data = load_checkpoint(out / "last.safetensors").meta["data"]
    assert (data["num_videos"], data["num_classes"]) == (6, 2)
    # Without the exclusion the run's folder would be a third class with its own files.
    everything = VideoFolder(root)
    assert everything.num_classes == 3 and len(everything) > 6
    resumed = train(cfg.replace(steps=3, resume="auto"))
    assert len(resumed.losses) == 1 and load_checkpoint(out / "last.safetensors").meta["data"] == data
