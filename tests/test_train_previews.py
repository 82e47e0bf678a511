"""Pillow outputs shared by training and `vdm sample`: GIF grids, contact sheets, loss curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from vdm.backends.media import save_contact_sheet, save_gif, save_loss_plot, to_uint8


def test_to_uint8_maps_range_and_clips():
    v = np.array([-1.0, 0.0, 1.0, 3.0, -7.0, np.nan], np.float32).reshape(1, 1, 1, 1, 6)
    assert to_uint8(v).reshape(-1).tolist() == [0, 128, 255, 255, 0, 128]
    assert to_uint8(torch.zeros(1, 4, 2, 2)).shape == (1, 4, 2, 2, 1)  # single (C, T, H, W) clip, tensor input
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        to_uint8(np.zeros((2, 2, 4, 8, 8)))
    with pytest.raises(ValueError, match="N, C, T, H, W"):
        to_uint8(np.zeros((8, 8)))


@pytest.mark.parametrize("channels", [1, 3])
def test_gif_grid(tmp_path, channels):
    rng = np.random.default_rng(0)
    videos = rng.uniform(-1, 1, (5, channels, 6, 8, 8)).astype(np.float32)
    path = save_gif(tmp_path / "sub" / "a.gif", videos, ncols=3, scale=2, pad=1, fps=10)
    im = Image.open(path)
    assert im.n_frames == 6
    # 3 columns x 2 rows of 16x16 clips with 1-pixel gaps.
    assert im.size == (3 * 17 + 1, 2 * 17 + 1)
    assert im.info["duration"] == 100


def test_contact_sheet_rows_are_clips_and_columns_frames(tmp_path):
    videos = np.full((2, 1, 4, 8, 8), -1.0, np.float32)
    videos[1, :, 2] = 1.0  # clip 1, frame 2 is white
    im = Image.open(save_contact_sheet(tmp_path / "s.png", videos, scale=1, pad=0)).convert("L")
    assert im.size == (4 * 8, 2 * 8)
    arr = np.asarray(im)
    assert arr[8:, 16:24].min() == 255 and arr[:8].max() == 0 and arr[8:, :16].max() == 0


def test_loss_plot_handles_edge_cases(tmp_path):
    steps = np.arange(1, 301)
    for name, losses in [("decay", 1 / np.sqrt(steps)), ("flat", np.full(300, 0.3)),
                         ("with_nan", np.where(steps == 50, np.nan, 1.0 / steps))]:
        im = Image.open(save_loss_plot(tmp_path / f"{name}.png", steps, losses))
        assert im.size == (720, 420)
    assert Image.open(save_loss_plot(tmp_path / "one.png", [5], [0.1])).size == (720, 420)
    assert Image.open(save_loss_plot(tmp_path / "none.png", [], [])).size == (720, 420)
