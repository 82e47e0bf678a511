"""Tests for real-video datasets and video I/O (vdm.backends.torch.video_data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from vdm.backends.media import read_video, write_video
from vdm.backends.torch.data.video import (
    UCF101,
    ClipSpec,
    VideoFolder,
    VideoSkippedWarning,
)


def square_video(frames: int = 12, h: int = 40, w: int = 48, colour=(230, 230, 230)):
    """A bright square moving 3 px/frame to the right on a dark background."""
    v = np.full((frames, h, w, 3), 20, np.uint8)
    for t in range(frames):
        v[t, 10:20, 2 + 3 * t : 12 + 3 * t] = colour
    return v


def ramp_video(frames: int = 12, h: int = 16, w: int = 16):
    """Frame t is uniformly grey at level 10 + 20 t, so a frame's index is readable."""
    levels = 10 + 20 * np.arange(frames, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, h, w, 3)).copy()


def frame_ids(video: torch.Tensor) -> list[int]:
    """Recover ramp_video frame indices from a normalised (C, T, H, W) clip."""
    levels = (video.float().mean(dim=(0, 2, 3)) + 1) * 127.5
    return [round((lv - 10) / 20) for lv in levels.tolist()]


# ----------------------------------------------------------------------------- I/O


@pytest.mark.parametrize("ext,tol", [(".mp4", 6), (".avi", 6), (".webm", 8), (".gif", 0)])
def test_write_read_round_trip(tmp_path, ext, tol):
    video = square_video()
    path = write_video(tmp_path / f"clip{ext}", video, fps=8)
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - video).mean() <= tol / 3
    # The square's centroid moves right by 3 px per frame.
    cols = [np.nonzero(f[..., 0] > 128)[1].mean() for f in back]
    np.testing.assert_allclose(np.diff(cols), 3.0, atol=0.3)
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{ext}"]  # no temp files left


def test_write_video_grayscale_and_validation(tmp_path):
    gray = square_video()[..., :1]
    back = read_video(write_video(tmp_path / "g.mp4", gray))
    assert back.shape == (12, 40, 48, 3)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 9, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "x.txt", np.zeros((2, 8, 8, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.mp4"]


# ----------------------------------------------------------------------------- folders


@pytest.fixture
def class_dir(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "walk").mkdir(parents=True)
    (root / "jump" / "sub").mkdir(parents=True)
    write_video(root / "walk" / "a.mp4", square_video())
    write_video(root / "walk" / "b.avi", square_video())
    write_video(root / "jump" / "sub" / "c.gif", square_video())  # nested: still "jump"
    (root / "walk" / "notes.txt").write_text("not a video")
    return root


def test_video_folder_labels_and_item_format(class_dir):
    ds = VideoFolder(class_dir, ClipSpec(frames=8, size=32, channels=1))
    assert ds.classes == ["jump", "walk"] and ds.num_classes == 2
    assert sorted((p.name, lab) for p, lab, _ in ds.samples) == [
        ("a.mp4", 1), ("b.avi", 1), ("c.gif", 0)]
    video, label = ds[0]
    assert video.shape == (1, 8, 32, 32) and video.dtype == torch.float32
    assert label.dtype == torch.int64
    assert video.min() >= -1 and video.max() <= 1
    assert video.max() > 0.6 and video.min() < -0.6  # square and background survive resizing

    rgb = VideoFolder(class_dir, ClipSpec(frames=4, size=16, channels=3, normalize=False))
    video, _ = rgb[1]
    assert video.shape == (3, 4, 16, 16) and video.dtype == torch.uint8

    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch.shape == (3, 1, 8, 32, 32) and labels.tolist() == [0, 1, 1]


def test_unlabelled_folder(tmp_path):
    write_video(tmp_path / "x.mp4", square_video())
    ds = VideoFolder(tmp_path, ClipSpec(frames=4))
    assert ds.classes == [] and ds[0][1].item() == -1


def test_grayscale_vs_rgb(tmp_path):
    write_video(tmp_path / "red.gif", square_video(colour=(255, 0, 0)))
    spec = dict(frames=2, size=40, mode="center")
    rgb, _ = VideoFolder(tmp_path, ClipSpec(channels=3, normalize=False, **spec))[0]
    gray, _ = VideoFolder(tmp_path, ClipSpec(channels=1, normalize=False, **spec))[0]
    r, g, b = rgb[:, 0, 15, 20].tolist()  # inside the square
    assert r > 240 and g < 15 and b < 15
    assert abs(gray[0, 0, 15, 20].item() - 0.299 * r - 0.587 * g - 0.114 * b) <= 1


def test_resize_shorter_side_then_centre_crop(tmp_path):
    v = np.zeros((3, 40, 80, 3), np.uint8)
    v[:, :, 40:] = 255  # right half bright
    write_video(tmp_path / "half.gif", v)
    clip, _ = VideoFolder(tmp_path, ClipSpec(frames=1, size=32, normalize=False))[0]
    # 40x80 -> 32x64, crop columns 16..47: left half of the crop dark, right half bright.
    assert clip.shape == (1, 1, 32, 32)
    assert clip[0, 0, :, :14].max() < 20 and clip[0, 0, :, 18:].min() > 235


def test_center_random_and_stride(tmp_path):
    write_video(tmp_path / "ramp.gif", ramp_video(12))
    center = VideoFolder(tmp_path, ClipSpec(frames=4, frame_stride=2, mode="center", size=8))
    assert frame_ids(center[0][0]) == [2, 4, 6, 8]  # span 7 centred in 12 frames

    spec = ClipSpec(frames=3, frame_stride=3, mode="random", size=8)
    ds = VideoFolder(tmp_path, spec, seed=1)
    starts = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        ids = frame_ids(ds[0][0])
        assert ids == [ids[0], ids[0] + 3, ids[0] + 6] and 0 <= ids[0] <= 5
        assert frame_ids(ds[0][0]) == ids  # same (seed, epoch, index) -> same clip
        starts.add(ids[0])
    assert len(starts) >= 3
    again = VideoFolder(tmp_path, spec, seed=1)
    again.set_epoch(11)
    assert frame_ids(again[0][0]) == ids


# ----------------------------------------------------------------------------- failures


def test_bad_files_are_skipped_with_warnings(tmp_path):
    good = write_video(tmp_path / "good.mp4", square_video())
    data = good.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    write_video(tmp_path / "short.mp4", square_video(frames=3))
    with pytest.warns(VideoSkippedWarning) as record:
        ds = VideoFolder(tmp_path, ClipSpec(frames=8))
    assert [p.name for p, _, _ in ds.samples] == ["good.mp4"]
    messages = [str(w.message) for w in record]
    for name, reason in (("trunc.mp4", "unreadable"), ("corrupt.mp4", "unreadable"),
                         ("short.mp4", "too few frames")):
        assert any(name in m and reason in m for m in messages), (name, messages)
    assert any("skipped 3 of 4" in m for m in messages)
    assert ds[0][0].shape == (1, 8, 32, 32)  # the good file still works


def test_empty_or_unusable_folder_raises(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        VideoFolder(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.avi").write_bytes(b"definitely not a video")
    with pytest.warns(VideoSkippedWarning), pytest.raises(ValueError, match=str(bad)):
        VideoFolder(bad)
    with pytest.raises(ValueError, match="does not exist"):
        VideoFolder(tmp_path / "nope")


# ----------------------------------------------------------------------------- cache


def test_decode_cache_is_reused(class_dir, tmp_path):
    cache = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=16)
    first = VideoFolder(class_dir, spec, cache_dir=cache)
    assert first.decode_count == 3
    items = [first[i][0] for i in range(3)]
    for i in range(3):  # epochs read the cache, never the videos
        first[i]
    assert first.decode_count == 3
    files = sorted(cache.iterdir())
    assert len(files) == 3 and all(f.suffix == ".npy" for f in files)

    second = VideoFolder(class_dir, spec, cache_dir=cache)
    assert second.decode_count == 0
    for i in range(3):
        assert torch.equal(second[i][0], items[i])

    # Other resize parameters or a modified file get their own entries.
    assert VideoFolder(class_dir, ClipSpec(frames=4, size=8), cache_dir=cache).decode_count == 3
    target = class_dir / "walk" / "a.mp4"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert VideoFolder(class_dir, spec, cache_dir=cache).decode_count == 1


# ----------------------------------------------------------------------------- UCF-101


@pytest.fixture
def ucf(tmp_path: Path) -> tuple[Path, Path]:
    root, splits = tmp_path / "UCF-101", tmp_path / "splits"
    splits.mkdir()
    names = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    train, test = [], []
    for name in names:
        (root / name).mkdir(parents=True)
        stem = "HandStandPushups" if name == "HandstandPushups" else name  # real quirk
        for g in (1, 8):
            rel = f"{name}/v_{stem}_g{g:02d}_c01.avi"
            write_video(root / rel, ramp_video(frames=6))
            (train if g == 8 else test).append(rel)
    (splits / "trainlist01.txt").write_text("".join(f"{r} {names.index(r.split('/')[0]) + 1}\r\n"
                                                    for r in train))
    (splits / "testlist01.txt").write_text("\n".join(test) + "\n\n")
    return root, splits


def test_ucf101_splits(ucf):
    root, splits = ucf
    spec = ClipSpec(frames=4, size=8)
    train = UCF101(root, splits, "train", 1, spec)
    test = UCF101(root, splits, "test", 1, spec)
    assert train.classes == ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
    assert [(p.name[:-4], lab) for p, lab, _ in train.samples] == [
        ("v_ApplyEyeMakeup_g08_c01", 0), ("v_Basketball_g08_c01", 1),
        ("v_HandStandPushups_g08_c01", 2)]
    assert [lab for _, lab, _ in test.samples] == [0, 1, 2]
    assert all("_g01_" in p.name for p, _, _ in test.samples)
    assert train[2][1].item() == 2
    with pytest.raises(ValueError, match="fold"):
        UCF101(root, splits, "train", 4, spec)
    with pytest.raises(ValueError, match="trainlist02"):
        UCF101(root, splits, "train", 2, spec)


def test_ucf101_inconsistent_or_missing_entries(ucf):
    root, splits = ucf
    (splits / "testlist01.txt").write_text("Basketball/v_Basketball_g01_c01.avi\n"
                                           "Basketball/v_missing.avi\n")
    with pytest.warns(VideoSkippedWarning) as record:
        ds = UCF101(root, splits, "test", clip=ClipSpec(frames=4, size=8))
    assert len(ds) == 1
    messages = [str(w.message) for w in record]
    assert any("v_missing.avi" in m and "missing file" in m for m in messages)
    assert any("skipped 1 of 2" in m for m in messages)
    (splits / "trainlist01.txt").write_text("Basketball/v_Basketball_g08_c01.avi 3\n")
    with pytest.raises(ValueError, match="classInd says 2"):
        UCF101(root, splits, "train")
    (splits / "trainlist01.txt").write_text("Skiing/v_Skiing_g08_c01.avi 1\n")
    with pytest.raises(ValueError, match="Skiing"):
        UCF101(root, splits, "train")
