"""Tests for real-video datasets and video I/O (vdm.backends.torch.video_data)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from vdm.backends.media import read_video, write_video
from vdm.backends.torch.data.video import (
    UCF101,
    ClipSpec,
    VideoClips,
    VideoDataWarning,
    VideoFolder,
    VideoPartlyDecodedWarning,
    VideoSkippedWarning,
    decode_file,
    heldout_split,
    report_warnings,
    resample_indices,
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
    assert clip.shape == (3, 1, 32, 32)
    assert clip[:, 0, :, :14].max() < 20 and clip[:, 0, :, 18:].min() > 235


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
    assert ds[0][0].shape == (3, 8, 32, 32)  # the good file still works


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


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


def test_decode_cache_hit_and_miss(class_dir, tmp_path):
    cache = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=16)
    first = VideoFolder(class_dir, spec, cache_dir=cache)
    assert first.decode_count == 3
    items = [first[i][0] for i in range(3)]
    for i in range(3):  # epochs read the cache, never the videos
        first[i]
    assert first.decode_count == 3
    files = _cache_files(cache)
    assert len(files) == 3 and all(f.endswith(".npy") for f in files)  # no temp files, no notes

    second = VideoFolder(class_dir, spec, cache_dir=cache)
    assert second.decode_count == 0 and second.rebuilt == []
    for i in range(3):
        assert torch.equal(second[i][0], items[i])
    # Clip length and stride are cut from the cached frames: they share the entries.
    assert VideoFolder(class_dir, ClipSpec(frames=2, frame_stride=2, size=16), cache_dir=cache).decode_count == 0
    # Without a cache, every item decodes its whole file again.
    plain = VideoFolder(class_dir, spec)
    assert plain.decode_count == 3
    plain[0]
    assert plain.decode_count == 4


@pytest.mark.parametrize("change", ["size", "channels", "fps", "mtime", "file size", "path"])
def test_decode_cache_invalidation(class_dir, tmp_path, change):
    cache = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=16)
    VideoFolder(class_dir, spec, cache_dir=cache)
    target = class_dir / "walk" / "a.mp4"
    if change == "mtime":
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "file size":
        write_video(target, square_video(frames=10))  # same name, new content
    elif change == "path":
        target.rename(class_dir / "walk" / "renamed.mp4")
    changed = {"size": dict(size=8), "channels": dict(channels=1), "fps": dict(fps=4.0)}.get(change, {})
    again = VideoFolder(class_dir, ClipSpec(frames=4, **{"size": 16, **changed}), cache_dir=cache)
    expect = 3 if changed else 1  # a decode setting touches every entry, a file change only its own
    assert again.decode_count == expect
    assert len(_cache_files(cache)) == 3 + expect


class _Payload:
    """Unpickling this runs code (it creates a file): a cache must never unpickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "wrong shape", "wrong dtype", "zip"])
def test_damaged_cache_entry_is_rebuilt(class_dir, tmp_path, damage):
    cache = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=16)
    first = VideoFolder(class_dir, spec, cache_dir=cache)
    items = [first[i][0] for i in range(3)]
    entry = first.cache_path(first.samples[1][0])
    marker = tmp_path / "unpickled"
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:-100])
    elif damage == "garbage":
        entry.write_bytes(np.random.default_rng(0).bytes(500))
    elif damage == "pickle":
        np.save(entry, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    elif damage == "wrong shape":
        np.save(entry, np.zeros((4, 8, 8, 3), np.uint8))
    elif damage == "wrong dtype":
        np.save(entry, np.zeros((4, 16, 16, 3), np.float32))
    else:
        with open(entry, "wb") as f:
            np.savez(f, a=np.zeros(3))
    second = VideoFolder(class_dir, spec, cache_dir=cache)
    assert second.decode_count == 1 and second.rebuilt == [entry]
    assert not marker.exists()
    for i in range(3):
        assert torch.equal(second[i][0], items[i])
    assert VideoFolder(class_dir, spec, cache_dir=cache).decode_count == 0  # repaired for good


def test_cache_that_cannot_be_written(class_dir, tmp_path, monkeypatch):
    import errno

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create the video cache folder .*file/cache"):
        VideoFolder(class_dir, ClipSpec(frames=4, size=16), cache_dir=tmp_path / "file" / "cache")

    def full(entry, decoded):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VideoClips, "_store", staticmethod(full))
    with pytest.warns(VideoDataWarning, match="No space left on device") as record:
        ds = VideoFolder(class_dir, ClipSpec(frames=4, size=16), cache_dir=tmp_path / "cache")
    assert len(record) == 1 and ds.cache_dir is None and len(ds) == 3  # said once; the run goes on uncached
    assert ds[0][0].shape == (3, 4, 16, 16)


# ----------------------------------------------------------------------------- colour, fps, partial files


def test_colour_is_the_default(tmp_path):
    write_video(tmp_path / "red.gif", square_video(colour=(255, 0, 0)))
    clip, _ = VideoFolder(tmp_path, ClipSpec(frames=2, size=40, mode="center", normalize=False))[0]
    r, g, b = clip[:, 0, 15, 20].tolist()
    assert clip.shape[0] == 3 and r > 240 and g < 15 and b < 15


def _ramp30(path: Path) -> Path:
    """30 uniformly grey frames at 30 fps; frame i has level 4 + 8 i, so its index is readable."""
    levels = (4 + 8 * np.arange(30)).astype(np.uint8)
    return write_video(path, np.broadcast_to(levels[:, None, None, None], (30, 16, 16, 3)).copy(), fps=30)


def _ramp30_ids(frames: np.ndarray) -> list[int]:
    return [round((float(f.mean()) - 4) / 8) for f in frames]


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_fps_resampling_by_timestamps(tmp_path, ext):
    path = _ramp30(tmp_path / f"ramp{ext}")
    native = decode_file(path, 8)
    assert _ramp30_ids(native.frames) == list(range(30))
    # 30 fps -> 10 fps: the frame on screen at t = k / 10 s is frame 3k.
    assert _ramp30_ids(decode_file(path, 8, fps=10).frames) == list(range(0, 30, 3))
    # 30 -> 7 fps: frame floor(30 k / 7) while k / 7 <= 29 / 30 s.
    assert _ramp30_ids(decode_file(path, 8, fps=7).frames) == [30 * k // 7 for k in range(7)]
    # Through a dataset: clips are cut from the resampled frames.
    clip, _ = VideoFolder(tmp_path, ClipSpec(frames=4, fps=10, mode="center", size=8, normalize=False))[0]
    assert _ramp30_ids(clip.numpy().transpose(1, 2, 3, 0)) == [9, 12, 15, 18]  # span 4 centred in 10


def test_resample_indices_exact_rationals():
    from fractions import Fraction

    times = [Fraction(i, 25) for i in range(50)]  # 2 s at 25 fps
    assert resample_indices(times, Fraction(10)) == [25 * k // 10 for k in range(20)]
    # Upsampling holds each frame on screen until the next one starts.
    assert resample_indices(times[:3], Fraction(50)) == [0, 0, 1, 1, 2]
    # Out-of-order timestamps (decode order) are taken in presentation order; a start offset is kept.
    shuffled = [Fraction(1, 2) + t for t in (times[2], times[0], times[1])]
    assert resample_indices(shuffled, Fraction(25)) == [1, 2, 0]
    assert resample_indices([], Fraction(10)) == []
    with pytest.raises(ValueError, match="fps"):
        ClipSpec(fps=0)


def _truncated_avi(tmp_path: Path) -> tuple[Path, int]:
    """A 30-frame AVI cut at 80 % of its bytes, and the frames PyAV itself gets out of it."""
    data = _ramp30(tmp_path / "full.avi").read_bytes()
    (tmp_path / "full.avi").unlink()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: int(len(data) * 0.8)])
    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                count += 1
        except av.FFmpegError:
            pass
    assert 0 < count < 30
    return path, count


def test_partly_decodable_file_is_reported_with_its_frame_count(tmp_path):
    path, count = _truncated_avi(tmp_path)
    cache = tmp_path / "cache"
    for expect_decodes in (1, 0):  # the note survives in the cache
        with pytest.warns(VideoPartlyDecodedWarning) as record:
            ds = VideoFolder(tmp_path, ClipSpec(frames=4, size=8), cache_dir=cache)
        assert ds.decode_count == expect_decodes
        assert [n for _, _, n in ds.samples] == [count]
        (message,) = [str(w.message) for w in record]
        assert f"yielded {count} of 30 frames" in message and "cut.avi" in message and "\n" not in message
    with pytest.warns(VideoSkippedWarning) as record:
        with pytest.raises(ValueError, match="no usable videos"):
            VideoFolder(tmp_path, ClipSpec(frames=count + 1, size=8), cache_dir=cache)
    assert any(f"yielded {count} of 30 frames" in str(w.message) and "too few frames" in str(w.message)
               for w in record)


def test_decode_error_after_some_frames_keeps_them(monkeypatch, tmp_path):
    """A decoder that raises part-way (frame threading usually hides this, so it is staged): the frames before
    the error are kept and the note carries the error."""
    from fractions import Fraction
    from types import SimpleNamespace

    import vdm.backends.torch.data.video as video_mod

    def frames():
        for t in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((8, 8, 3), 40 * t, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 25)
            yield frame
        raise OSError("Invalid data found when processing input")

    class Container:
        duration = None
        streams = SimpleNamespace(video=[SimpleNamespace(frames=30, guessed_rate=Fraction(25), average_rate=None)])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def decode(self, stream):
            return frames()

    monkeypatch.setattr(video_mod.av, "open", lambda path: Container())
    decoded = decode_file(tmp_path / "x.mp4", 8)
    assert len(decoded.frames) == 5 and [int(f.mean()) for f in decoded.frames] == [0, 40, 80, 120, 160]
    assert decoded.note == "yielded 5 of 30 frames (OSError: Invalid data found when processing input)"


def test_warnings_are_one_line_each_and_quiet_drops_them(tmp_path, capsys):
    write_video(tmp_path / "good.mp4", square_video())
    (tmp_path / "bad.mp4").write_bytes(b"not\na\nvideo" * 50)
    lines: list[str] = []
    with report_warnings(lines.append):
        VideoFolder(tmp_path, ClipSpec(frames=4))
        VideoFolder(tmp_path, ClipSpec(frames=4))  # every build reports again
    assert len(lines) == 4 and all("\n" not in ln and ln.startswith("warning: ") for ln in lines)
    assert sum("bad.mp4" in ln for ln in lines) == 2
    with report_warnings(None):
        VideoFolder(tmp_path, ClipSpec(frames=4))
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- held-out split


def test_heldout_split_rule():
    import hashlib

    names = [f"class{i % 3}/video {i}.mp4" for i in range(200)]

    def held(name: str, fraction: float) -> bool:  # the rule as documented, written out again
        return int(hashlib.sha1(name.encode()).hexdigest()[:16], 16) < fraction * 2**64

    split = heldout_split(names, 0.1)
    assert split == {n for n in names if held(n, 0.1)} and 5 < len(split) < 40
    # Membership depends on the file's own name: more files never move a held-out one back.
    assert split <= heldout_split([*names, "new/a.mp4", "new/b.mp4"], 0.1)
    assert heldout_split(names, 0.0) == set() and heldout_split(names[:1], 0.5) == set()
    # Small folders: at least one held out, at least one kept.
    for n in (2, 3):
        assert 1 <= len(heldout_split(names[:n], 0.1)) < n
        assert len(heldout_split(names[:n], 0.99)) == n - 1


def test_video_folder_subsets(tmp_path):
    for cls in ("a", "b"):
        for i in range(5):
            write_video(tmp_path / cls / f"{i}.gif", square_video(frames=4))
    spec = ClipSpec(frames=2, size=8)
    parts = {sub: VideoFolder(tmp_path, spec, heldout_fraction=0.3, subset=sub) for sub in ("all", "train", "heldout")}
    names = {sub: {p.relative_to(tmp_path).as_posix() for p, _, _ in ds.samples} for sub, ds in parts.items()}
    assert names["heldout"] == set(parts["all"].heldout_files) and names["heldout"]
    assert names["train"] | names["heldout"] == names["all"] and not names["train"] & names["heldout"]
    assert parts["train"].classes == parts["heldout"].classes == ["a", "b"]


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


def test_ucf101_names_with_spaces(tmp_path):
    root, splits = tmp_path / "UCF 101", tmp_path / "split files"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Apply Eye Makeup\n2\tBasketball\n")
    for rel in ("Apply Eye Makeup/v_Apply Eye Makeup_g08_c01.avi", "Basketball/v_Basketball g08 c01 2.avi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / rel, ramp_video(frames=6))
    (splits / "trainlist01.txt").write_text("Apply Eye Makeup/v_Apply Eye Makeup_g08_c01.avi 1\n"
                                            "Basketball/v_Basketball g08 c01 2.avi\t2\n")
    (splits / "testlist01.txt").write_text("Basketball/v_Basketball g08 c01 2.avi\n")
    train = UCF101(root, splits, "train", clip=ClipSpec(frames=4, size=8))
    assert train.classes == ["Apply Eye Makeup", "Basketball"]
    assert [(p.name, lab) for p, lab, _ in train.samples] == [("v_Apply Eye Makeup_g08_c01.avi", 0),
                                                              ("v_Basketball g08 c01 2.avi", 1)]
    # Without a label the trailing " 2" before ".avi" stays part of the name.
    (test,) = UCF101(root, splits, "test", clip=ClipSpec(frames=4, size=8)).samples
    assert test[0].name == "v_Basketball g08 c01 2.avi" and test[1] == 1


@pytest.mark.parametrize("name,text,line", [
    ("trainlist01.txt", "Basketball/v_Basketball_g08_c01.avi 2\nBasketball/v_x.avi two\n", 2),
    ("trainlist01.txt", "\n\nnot a path\n", 3),
    ("trainlist01.txt", "Basketball/v_Basketball_g08_c01.avi 2\n\nBasketball/v_x.avi 1\n", 3),
    ("classInd.txt", "1 ApplyEyeMakeup\nBasketball\n3 HandstandPushups\n", 2),
    ("classInd.txt", "1 ApplyEyeMakeup\n1 Basketball\n", 2),
])
def test_ucf101_split_file_errors_name_file_and_line(ucf, name, text, line):
    root, splits = ucf
    (splits / name).write_text(text)
    with pytest.raises(ValueError) as info:
        UCF101(root, splits, "train", clip=ClipSpec(frames=4, size=8))
    message = str(info.value)
    assert f"{splits / name} line {line}:" in message and "\n" not in message
