"""Tests for the factorized space-time U-Net (vdm.backends.torch.model)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from vdm.backends.torch.models import preset
from vdm.backends.torch.models.unet import (
    GroupNorm32,
    TemporalAttention,
    UNetConfig,
    VideoUNet,
    _attention,
    count_parameters,
    flops_per_forward,
)


def micro(**overrides) -> UNetConfig:
    """A very small config so each forward takes milliseconds."""
    base = dict(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                attn_levels=(1,), temporal_attn_levels=(0, 1), num_heads=2,
                norm_groups=4, frames=4, image_size=8)
    return UNetConfig(**{**base, **overrides})


def make(cfg: UNetConfig, seed: int = 0, live_output: bool = True) -> VideoUNet:
    torch.manual_seed(seed)
    model = VideoUNet(cfg).eval()
    if live_output:  # the final conv is zero-initialised; give it weights so outputs vary
        torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    return model


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "b,c,t,h,w,num_classes,learn_sigma",
    [
        (1, 1, 1, 8, 8, 0, False),  # single image
        (2, 1, 5, 8, 12, 0, False),  # odd T, non-square
        (3, 3, 4, 16, 8, 4, False),  # RGB, conditional
        (1, 3, 7, 4, 4, 2, True),  # learn_sigma doubles channels
        (2, 1, 2, 12, 4, 0, True),
    ],
)
def test_output_shape(b, c, t, h, w, num_classes, learn_sigma):
    cfg = micro(in_channels=c, num_classes=num_classes, learn_sigma=learn_sigma)
    model = make(cfg, live_output=False)
    x = torch.randn(b, c, t, h, w)
    y = torch.randint(0, num_classes + 1, (b,)) if num_classes else None
    out = model(x, torch.rand(b) * 1000, y)
    assert out.shape == (b, c * (2 if learn_sigma else 1), t, h, w)
    assert out.dtype == torch.float32
    assert cfg.out_channels == out.shape[1]
    assert torch.count_nonzero(out) == 0  # zero-initialised final conv


@settings(max_examples=10, deadline=None)
@given(frames=st.integers(1, 12), batch=st.integers(1, 3), hw=st.sampled_from([(4, 4), (8, 4)]))
def test_any_frame_count(frames, batch, hw):
    model = _SHARED
    x = torch.randn(batch, 1, frames, *hw)
    out = model(x, torch.full((batch,), 10.0))
    assert out.shape == (batch, 1, frames, *hw)
    assert torch.isfinite(out).all()


_SHARED = make(micro(max_relative_distance=3))  # T up to 12 exceeds the clip distance


def test_integer_timesteps_are_cast():
    model = make(micro())
    x = torch.randn(2, 1, 3, 8, 8)
    out_int = model(x, torch.tensor([5, 900]))
    out_float = model(x, torch.tensor([5.0, 900.0]))
    torch.testing.assert_close(out_int, out_float)


# ----------------------------------------------------------------------------- validation


def test_bad_spatial_size_raises_clear_error():
    model = make(preset("tiny", base_channels=8), live_output=False)  # divisor 4
    with pytest.raises(ValueError, match=r"18x20.*divisible by 4"):
        model(torch.randn(1, 1, 2, 18, 20), torch.zeros(1))


def test_bad_channels_and_timestep_raise():
    model = make(micro(), live_output=False)
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(1, 3, 2, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="t must be a tensor"):
        model(torch.randn(2, 1, 2, 8, 8), 5.0)
    with pytest.raises(ValueError, match="t must be a tensor"):
        model(torch.randn(2, 1, 2, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 2, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_config_validation():
    with pytest.raises(TypeError, match="prediction"):  # the diffusion contract is not an architecture field
        micro(prediction="v")
    with pytest.raises(ValueError, match="attn_levels"):
        micro(attn_levels=(5,))
    with pytest.raises(ValueError, match="num_heads"):
        micro(num_heads=3)


# ----------------------------------------------------------------------------- temporal


def test_temporal_layers_mix_frames():
    model = make(micro())
    x = torch.randn(1, 1, 6, 8, 8)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    t = torch.tensor([100.0])
    diff = (model(x2, t) - model(x, t)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[3] > 1e-4 and diff[5] > 1e-4  # information reached frames 3 and 5


def test_without_temporal_layers_frames_are_independent():
    model = make(micro(temporal=False))
    assert not any(isinstance(m, TemporalAttention) for m in model.modules())
    x = torch.randn(1, 1, 6, 8, 8)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    t = torch.tensor([100.0])
    diff = (model(x2, t) - model(x, t)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 1e-4
    assert torch.all(diff[1:] == 0)
    # And a clip is processed exactly like its frames one by one (per-frame GroupNorm).
    per_frame = torch.cat([model(x[:, :, i : i + 1], t) for i in range(6)], dim=2)
    torch.testing.assert_close(model(x, t), per_frame, atol=1e-5, rtol=1e-5)


def _tattn(**kw) -> TemporalAttention:
    torch.manual_seed(1)
    return TemporalAttention(8, micro(**kw)).eval()


def test_relative_bias_is_toeplitz_and_clipped():
    attn = _tattn(max_relative_distance=2)
    with torch.no_grad():
        attn.rel_bias.copy_(torch.arange(10.0).reshape(2, 5))
    bias = attn.relative_bias(7)
    assert bias.shape == (2, 7, 7)
    for i in range(7):
        for j in range(7):
            expect = attn.rel_bias[:, max(-2, min(2, j - i)) + 2]
            torch.testing.assert_close(bias[:, i, j], expect)


def test_temporal_attention_uses_only_relative_positions():
    x = torch.randn(6, 8, 4, 4)  # (B*T, C, H, W) with B=1, T=6
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    attn = _tattn()
    with torch.no_grad():
        attn.rel_bias.zero_()
        # Without position bias the layer must be exactly permutation-equivariant over frames:
        # no absolute frame index leaks in anywhere.
        torch.testing.assert_close(attn(x[perm], 1), attn(x, 1)[perm], atol=1e-5, rtol=1e-5)
        attn.rel_bias.normal_(0, 1.0)
        # With the bias, frame order matters.
        assert not torch.allclose(attn(x[perm], 1), attn(x, 1)[perm], atol=1e-3)


def test_temporal_attention_frames_beyond_max_distance():
    attn = _tattn(max_relative_distance=2)
    x = torch.randn(2 * 9, 8, 2, 2)  # B=2, T=9 > max distance
    assert attn(x, 2).shape == x.shape


# ----------------------------------------------------------------------------- classes


def test_null_class_used_when_y_is_none():
    cfg = micro(num_classes=3)
    model = make(cfg)
    x = torch.randn(2, 1, 3, 8, 8)
    t = torch.tensor([10.0, 20.0])
    null = torch.full((2,), 3, dtype=torch.long)
    torch.testing.assert_close(model(x, t), model(x, t, null))
    assert not torch.allclose(model(x, t), model(x, t, torch.zeros(2, dtype=torch.long)))
    assert model.class_emb.num_embeddings == 4


# ----------------------------------------------------------------------------- config


def test_config_round_trip_json():
    cfg = preset("small", num_classes=101, learn_sigma=True)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert isinstance(d["channel_mult"], list)
    back = UNetConfig.from_dict(d)
    assert back == cfg and isinstance(back.channel_mult, tuple)
    assert back.out_channels == 6
    assert hash(back) == hash(cfg)


def test_config_rejects_unknown_keys():
    d = micro().to_dict()
    d["chanel_mult"] = [1, 2]
    with pytest.raises(ValueError, match="chanel_mult"):
        UNetConfig.from_dict(d)


def test_presets():
    with pytest.raises(ValueError, match="tiny.*small.*base"):
        preset("huge")
    assert preset("tiny", num_classes=3).num_classes == 3
    n = count_parameters(VideoUNet(preset("tiny")))
    assert 500_000 <= n <= 1_500_000


def test_flops_estimate_scales():
    cfg = micro()
    f1 = flops_per_forward(cfg, 4, 8, 1)
    assert f1 > 0
    assert flops_per_forward(cfg, 4, 8, 2) == 2 * f1
    assert flops_per_forward(cfg, 4, 16, 1) > 3 * f1


# ----------------------------------------------------------------------------- numerics


def test_float32_softmax_and_groupnorm_under_half():
    q = torch.randn(2, 2, 5, 16).half() * 30  # logits would overflow fp16 if unscaled
    out = _attention(q, q, torch.randn(2, 2, 5, 16).half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    gn = GroupNorm32(2, 4)
    x = torch.randn(3, 4, 5, 5) * 100
    torch.testing.assert_close(gn(x.half()).float(), gn(x), atol=2e-3, rtol=2e-3)
    assert gn(x.half()).dtype == torch.float16


def test_half_model_matches_float():
    model = make(micro(num_classes=2))
    half = make(micro(num_classes=2))
    half.load_state_dict(model.state_dict())
    half = half.half()
    x = torch.randn(2, 1, 3, 8, 8)
    t = torch.tensor([5.0, 999.0])  # large t: the embedding must stay float32 inside
    out = half(x.half(), t)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), model(x, t), atol=2e-2, rtol=2e-2)


def test_autocast_forward_is_finite():
    model = make(micro())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 1, 3, 8, 8), torch.tensor([999.0]))
    assert torch.isfinite(out.float()).all()


def test_deterministic_given_seed():
    x = torch.randn(1, 1, 3, 8, 8)
    t = torch.tensor([7.0])
    a, b = make(micro(), seed=3), make(micro(), seed=3)
    torch.manual_seed(0)
    out_a = a(x, t)
    torch.manual_seed(0)
    torch.testing.assert_close(out_a, b(x, t), atol=0, rtol=0)


def test_optimisation_reduces_loss():
    torch.manual_seed(0)
    model = VideoUNet(micro(num_classes=2)).train()
    x0 = torch.zeros(4, 1, 4, 8, 8)
    x0[:, :, :, 2:5, 2:5] = 1.0
    eps = torch.randn_like(x0)
    t = torch.tensor([100.0, 300.0, 500.0, 700.0])
    alpha = torch.cos(t / 1000 * torch.pi / 2)[:, None, None, None, None]
    xt = alpha * x0 + (1 - alpha**2).sqrt() * eps
    y = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = (model(xt, t, y) - eps).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(1.0, abs=0.15)  # zero output at init: loss = E[eps^2]
    assert losses[-1] < 0.5 * losses[0]
