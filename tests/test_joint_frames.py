"""The network's per-frame inputs: a sample marked ``independent`` is T unrelated images (joint image-video
training), checked against the plain form (each frame run alone as a 1-frame video) and by perturbing one
frame; and one condition per frame (spec 18.8, conditional-frame models)."""

from __future__ import annotations

import pytest
import torch
from helpers import MICRO_UNET
from vdm.backends.torch.models.unet import UNetConfig, VideoUNet


@pytest.fixture(scope="module")
def net() -> VideoUNet:
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig(**{**MICRO_UNET, "num_classes": 3})).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # random weights everywhere, including the zero-initialised output
            p.normal_(0, 0.3)
    return model


def _inputs(b: int = 3, t: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 1, t, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.tensor([10.0, 500.0, 990.0][:b], dtype=torch.float64), torch.tensor([0, 2, 1][:b])


def test_independent_frames_equal_each_frame_run_alone(net):
    x, t, y = _inputs()
    independent = torch.tensor([True, False, True])
    with torch.no_grad():
        out = net(x, t, y, independent)
        alone = torch.cat([net(x[:, :, k:k + 1], t, y) for k in range(x.shape[2])], dim=2)
        video = net(x, t, y)
    for i in (0, 2):
        torch.testing.assert_close(out[i], alone[i], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[1], video[1], rtol=0, atol=0)  # video samples are untouched
    assert (video[0] - alone[0]).abs().max() > 1e-3  # as a video, frames do see each other


def test_no_frame_of_an_independent_sample_sees_another(net):
    x, t, y = _inputs()
    independent = torch.tensor([True, False, True])
    bumped = x.clone()
    bumped[:, :, 1] += 1.0
    with torch.no_grad():
        a, b = net(x, t, y, independent), net(bumped, t, y, independent)
    others = [0, 2, 3]
    assert (a[[0, 2]][:, :, others] - b[[0, 2]][:, :, others]).abs().max() < 1e-12
    assert (a[1, :, others] - b[1, :, others]).abs().max() > 1e-3  # the video sample mixes frames
    assert (a[0, :, 1] - b[0, :, 1]).abs().max() > 1e-3


def test_all_false_is_the_plain_video_forward(net):
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y, torch.zeros(3, dtype=torch.bool)), net(x, t, y), rtol=0, atol=0)


def test_gradients_of_an_independent_frame_stay_in_it(net):
    x, t, y = _inputs(b=1)
    x = x.clone().requires_grad_(True)
    net(x, t, y, torch.tensor([True]))[:, :, 2].sum().backward()
    grad = x.grad.abs().sum(dim=(0, 1, 3, 4))
    assert grad[2] > 0 and float(grad[[0, 1, 3]].max()) == 0.0


def test_bad_independent_mask_is_a_clear_error(net):
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="independent must be a bool tensor of shape"):
        net(x, t, y, torch.ones(3))


# --------------------------------------------------------------------------- the batches of joint training


def test_mix_in_images_keeps_the_clips_and_draws_every_image_from_the_batch():
    from vdm.backends.torch.training.images import mix_in_images

    torch.manual_seed(3)
    x0 = torch.randn(5, 2, 4, 3, 3)
    mixed, independent = mix_in_images(x0, 2)
    assert independent.tolist() == [False, False, False, True, True]
    assert torch.equal(mixed[:3], x0[:3])
    pool = x0.transpose(1, 2).reshape(-1, 2, 3, 3)
    for i in (3, 4):
        for k in range(4):
            assert any(torch.equal(mixed[i, :, k], frame) for frame in pool)
    assert not torch.equal(mixed[3:], x0[3:])


def test_no_images_draws_nothing():
    from vdm.backends.torch.training.images import mix_in_images

    x0 = torch.randn(3, 1, 2, 2, 2)
    state = torch.get_rng_state()
    out, independent = mix_in_images(x0, 0)
    assert out is x0 and independent is None and torch.equal(torch.get_rng_state(), state)


# --------------------------------------------------------------------------- one condition per frame (spec 18.8)


def test_per_frame_conditions_that_agree_equal_one_per_sample(net):
    x, t, y = _inputs()
    with torch.no_grad():
        one = net(x, t, y)
        per_frame = net(x, t[:, None].expand(-1, x.shape[2]).contiguous(), y)
    torch.testing.assert_close(per_frame, one, rtol=1e-12, atol=1e-12)


def test_a_frame_condition_changes_what_the_network_predicts(net):
    x, t, y = _inputs()
    tf = t[:, None].expand(-1, x.shape[2]).clone()
    tf[:, 0] = 0.0  # frame 0 shown at the given level
    with torch.no_grad():
        a, b = net(x, t, y), net(x, tf, y)
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-3
    assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-6  # temporal layers carry it to the other frames


def test_bad_condition_shape_is_a_clear_error(net):
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="one condition per frame"):
        net(x, torch.zeros(3, 5, dtype=torch.float64), y)
