"""Tests for the Moving Shapes dataset and clip analysis (vdm.backends.torch.moving_shapes)."""

from __future__ import annotations

import subprocess
import sys
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vdm.backends.torch.data.moving_shapes import (
    DISC,
    SQUARE,
    TRIANGLE,
    MovingShapes,
    MovingShapesConfig,
    _bounce,
    generate_clip,
)
from vdm.backends.torch.evaluation.shape_metrics import (
    _label_components,
    clip_metrics,
    constant_velocity_residual,
    detect_objects,
    is_temporally_coherent,
    object_count_consistency,
)


def test_deterministic_per_seed():
    cfg = MovingShapesConfig(channels=3, max_objects=3)
    a, la, ta = generate_clip(123, cfg)
    b, lb, tb = generate_clip(np.random.default_rng(123), cfg)
    assert np.array_equal(a, b) and la == lb
    assert np.array_equal(ta.centers, tb.centers) and np.array_equal(ta.colors, tb.colors)
    c, _, _ = generate_clip(124, cfg)
    assert not np.array_equal(a, c)


def test_dataset_items_are_pure_functions_of_seed_and_index():
    ds = MovingShapes(10, base_seed=5)
    v3, y3 = ds[3]
    again, _ = MovingShapes(10, base_seed=5)[3]
    assert np.array_equal(v3.numpy(), again.numpy())
    assert np.array_equal(v3.numpy(), generate_clip((5, 3), ds.cfg)[0])
    assert not np.array_equal(v3.numpy(), MovingShapes(10, base_seed=6)[3][0].numpy())
    assert not np.array_equal(v3.numpy(), ds[4][0].numpy())
    assert y3.dtype.is_floating_point is False and str(y3.dtype) == "torch.int64"
    with pytest.raises(IndexError):
        ds[10]


def test_dataloader_batches():
    import torch
    from torch.utils.data import DataLoader

    ds = MovingShapes(6, MovingShapesConfig(frames=4, size=16))
    videos, labels = next(iter(DataLoader(ds, batch_size=4)))
    assert videos.shape == (4, 1, 4, 16, 16) and videos.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(1, 12),
       size=st.sampled_from([8, 16, 24, 32]), channels=st.sampled_from([1, 3]),
       max_objects=st.integers(1, 3))
def test_shapes_range_and_containment(seed, frames, size, channels, max_objects):
    cfg = MovingShapesConfig(frames=frames, size=size, channels=channels,
                             max_objects=max_objects)
    video, label, truth = generate_clip(seed, cfg)
    assert video.shape == (channels, frames, size, size) and video.dtype == np.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    assert (video == -1.0).all(axis=0).mean() > 0.3  # mostly background
    assert label in (SQUARE, DISC, TRIANGLE)
    k = truth.centers.shape[0]
    assert 1 <= k <= max_objects and truth.centers.shape == (k, frames, 2)
    # The whole bounding box of every object stays inside the frame at every time step.
    lo = truth.centers - truth.extents[:, None]
    hi = truth.centers + truth.extents[:, None]
    assert (lo >= -0.5 - 1e-9).all() and (hi <= size - 0.5 + 1e-9).all()


def test_bounce_closed_form():
    pos = _bounce(np.array([2.0, 5.0]), np.array([3.0, 0.0]), np.array([0.0, 0.0]),
                  np.array([10.0, 10.0]), np.arange(8.0))
    np.testing.assert_allclose(pos[:, 0], [2, 5, 8, 9, 6, 3, 0, 3])
    np.testing.assert_allclose(pos[:, 1], 5.0)


def test_long_clip_bounces_and_stays_inside():
    cfg = MovingShapesConfig(frames=64, size=32, speed_range=(0.08, 0.08))
    for seed in range(5):
        video, _, truth = generate_clip(seed, cfg)
        vel = np.diff(truth.centers[0], axis=0)
        assert (np.sign(vel[1:]) != np.sign(vel[:-1])).any()  # it did bounce
        # The object is never clipped by the border: its pixel area stays nearly constant.
        areas = [detect_objects(video[:, f]).areas[0] for f in range(64)]
        assert max(areas) - min(areas) <= 0.25 * max(areas)


@pytest.mark.parametrize("kind", [SQUARE, DISC, TRIANGLE])
@pytest.mark.parametrize("size", [16, 32])
def test_truth_matches_detected_centroids(kind, size):
    cfg = MovingShapesConfig(frames=8, size=size, kinds=(kind,))
    for seed in range(20):
        video, label, truth = generate_clip(seed, cfg)
        assert label == kind == truth.label
        for f in range(cfg.frames):
            det = detect_objects(video[:, f])
            assert len(det.areas) == 1
            # Centroid of the rasterised shape equals the true centre up to pixelisation.
            np.testing.assert_allclose(det.centroids[0], truth.centers[0, f], atol=0.6)


@pytest.mark.parametrize("kind,fill", [(SQUARE, (0.9, 1.0)), (DISC, (0.72, 0.85)),
                                       (TRIANGLE, (0.4, 0.6))])
def test_class_is_the_shape(kind, fill):
    cfg = MovingShapesConfig(frames=1, size=64, size_range=(0.5, 0.5), kinds=(kind,))
    video, label, truth = generate_clip(0, cfg)
    assert label == kind
    mask = video[0, 0] > 0
    rows, cols = np.nonzero(mask)
    bbox = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    assert fill[0] <= mask.sum() / bbox <= fill[1]


def test_colour_objects():
    cfg = MovingShapesConfig(channels=3, max_objects=1)
    video, _, truth = generate_clip(3, cfg)
    fg = (video != -1).any(axis=0)
    pixels = video[:, fg]  # (3, n) all the object's pixels share one colour
    np.testing.assert_allclose(pixels, np.broadcast_to(truth.colors[0][:, None], pixels.shape))
    assert all(len(detect_objects(video[:, f]).areas) == 1 for f in range(cfg.frames))


# ----------------------------------------------------------------------------- analysis


def _bfs_labels(mask: np.ndarray) -> np.ndarray:
    """Reference 8-connected labelling by breadth-first search."""
    h, w = mask.shape
    labels = -np.ones((h, w), dtype=int)
    count = 0
    for r in range(h):
        for c in range(w):
            if mask[r, c] and labels[r, c] < 0:
                labels[r, c] = count
                queue = deque([(r, c)])
                while queue:
                    y, x = queue.popleft()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            v, u = y + dy, x + dx
                            if 0 <= v < h and 0 <= u < w and mask[v, u] and labels[v, u] < 0:
                                labels[v, u] = count
                                queue.append((v, u))
                count += 1
    return labels


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), p=st.floats(0.1, 0.8), h=st.integers(1, 12),
       w=st.integers(1, 12))
def test_component_labelling_matches_bfs(seed, p, h, w):
    masks = np.random.default_rng(seed).random((2, h, w)) < p
    labels = _label_components(masks)
    for f in range(2):
        ref = _bfs_labels(masks[f])
        assert ((labels[f] >= 0) == masks[f]).all()
        fg = masks[f]
        # Same partition: the pairs (ours, reference) form a one-to-one mapping.
        pairs = set(zip(labels[f][fg].tolist(), ref[fg].tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        assert len(pairs) == (ref.max() + 1 if fg.any() else 0)


def test_detect_objects_basic():
    frame = -np.ones((16, 16), dtype=np.float32)
    frame[2:5, 2:5] = 1.0  # 9 px at (3, 3)
    frame[10:12, 8:14] = 0.9  # 12 px at (10.5, 10.5)
    frame[0, 15] = 1.0  # 1 px speck: below min_area
    frame[5, 5] = 1.0  # diagonal neighbour of the square: 8-connected -> same object
    det = detect_objects(frame)
    assert list(det.areas) == [12, 10]
    np.testing.assert_allclose(det.centroids[0], [10.5, 10.5])
    np.testing.assert_allclose(det.centroids[1], [(27 + 5) / 10, (27 + 5) / 10])
    assert len(detect_objects(frame, min_area=11).areas) == 1
    assert len(detect_objects(-np.ones((3, 8, 8))).areas) == 0
    with pytest.raises(TypeError, match="thresh"):
        object_count_consistency(np.zeros((1, 3, 8, 8)), thresh=0.1)


def _real(n: int, **kw) -> np.ndarray:
    return MovingShapes(n, MovingShapesConfig(**kw), base_seed=11).numpy_batch(range(n))[0]


@pytest.mark.parametrize("size,channels", [(32, 1), (16, 1), (32, 3)])
def test_metrics_separate_real_clips_from_noise(size, channels):
    real = _real(40, size=size, channels=channels)
    noise = np.clip(np.random.default_rng(0).standard_normal(real.shape), -1, 1)
    m_real, m_noise = clip_metrics(real), clip_metrics(noise)
    assert m_real["coherent_fraction"] >= 0.95 and m_real["count_consistency"] >= 0.98
    assert m_real["velocity_residual"] < 0.03
    assert m_noise["coherent_fraction"] <= 0.05
    assert m_noise["velocity_residual"] > 0.3
    # Per-clip helpers agree with the batch function.
    assert is_temporally_coherent(real[0]) and not is_temporally_coherent(noise[0])
    assert object_count_consistency(real[1]) == 1.0
    assert constant_velocity_residual(real[2]) < 0.06


def test_metrics_flag_shuffled_and_empty_clips():
    real = _real(40)
    rng = np.random.default_rng(1)
    shuffled = np.stack([v[:, rng.permutation(v.shape[1])] for v in real])
    assert clip_metrics(shuffled)["coherent_fraction"] < 0.5
    assert clip_metrics(shuffled)["velocity_residual"] > 3 * clip_metrics(real)[
        "velocity_residual"]
    blank = -np.ones((2, 1, 8, 16, 16), dtype=np.float32)
    assert clip_metrics(blank)["coherent_fraction"] == 0.0
    assert object_count_consistency(blank[0]) == 0.0


def test_module_imports_without_torch():
    code = ("import sys; import vdm.backends.torch.data.moving_shapes as m; "
            "m.generate_clip(0); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
