"""The U-Net's "exact" speed rewrites equal the plain forms they replace (forward and backward).

Three layers in ``vdm.backends.torch.models.unet`` are written for speed rather than clarity:
``Upsample`` as one stride-2 transposed conv, the residual 3x1x1 temporal conv of ``ResBlock``
as a 3x1 conv2d on (B, C, T, H*W), and ``TemporalAttention``'s q/k/v as three GEMMs on weight
slices with 1/sqrt(d) folded into q. Each is compared in float64, on random weights (zero and
one initialisations replaced too), with the straightforward form built from the same weights:
outputs, gradients w.r.t. the inputs, and gradients w.r.t. every weight, mapped onto the plain
form's parameters. Inside the network activations are frame-major (B*T, C, H, W); the plain
forms receive exactly that and reshape to (B, C, T, H, W) / per-position sequences themselves.

The module runs GroupNorm and the attention softmax in float32 by design (fp16 stability); the
plain forms cast at the same points, so the float64 comparison measures only the rewrite. Each
rewrite also has a deliberately wrong plain form that must NOT match, showing the comparison
can fail.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vdm.backends.torch.models.unet import ResBlock, TemporalAttention, UNetConfig, Upsample

TOL = 1e-10  # relative (max |a - b| / max |b|); float64 rounding is ~1e-15
WRONG = 1e-3  # a wrong plain form must differ by at least this much


def _randomise(module: nn.Module, seed: int, std: float = 0.5) -> nn.Module:
    """Double precision, eval mode, every parameter redrawn from N(0, std^2) (biases, norm
    affines and the relative-position table included), so no zero/one init hides a mismatch."""
    module = module.double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def _randn(*shape: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _rel_err(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = torch.maximum(a.abs().max(), b.abs().max())
    return 0.0 if scale == 0 else ((a - b).abs().max() / scale).item()


def _vjp(out: Tensor, leaves: dict[str, Tensor], cotangent: Tensor) -> dict[str, Tensor]:
    """Gradients of <out, cotangent> w.r.t. each named leaf (zeros where unused)."""
    grads = torch.autograd.grad(out, list(leaves.values()), cotangent, allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), grads, strict=True)}


def _assert_all_close(pairs: dict[str, tuple[Tensor, Tensor]]) -> float:
    """Every (rewrite, plain) pair agrees to TOL; returns the worst relative error."""
    errs = {name: _rel_err(a, b) for name, (a, b) in pairs.items()}
    worst = max(errs, key=errs.get)
    assert errs[worst] < TOL, f"{worst}: relative error {errs[worst]:.3g} (all: {errs})"
    return errs[worst]


# ----------------------------------------------------------------------------- Upsample


def _plain_upsample(x: Tensor, conv: nn.Conv2d, mistake: str | None = None) -> Tensor:
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv with zero padding 1."""
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    if mistake == "transposed_kernel":
        return F.conv2d(up, conv.weight.transpose(-1, -2), conv.bias, padding=1)
    if mistake == "flipped_kernel":
        return F.conv2d(up, conv.weight.flip(-1, -2), conv.bias, padding=1)
    return conv(up)


def _upsample_pair(channels: int, seed: int) -> tuple[Upsample, nn.Conv2d]:
    """The module and a plain nn.Conv2d holding its 3x3 weights (stored as (C, C, 1, 3, 3))."""
    up = _randomise(Upsample(channels), seed)
    conv = nn.Conv2d(channels, channels, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(up.conv.weight.squeeze(2))
        conv.bias.copy_(up.conv.bias)
    return up, conv


@pytest.mark.parametrize("n,c,h,w", [(3 * 5, 4, 3, 5), (3 * 7, 3, 4, 4), (3 * 1, 2, 1, 1), (2, 5, 2, 7)])
def test_upsample_transposed_conv_equals_nearest_then_conv3x3(n, c, h, w):
    """Upsample's 4x4 stride-2 transposed conv (kernel [W2, W1+W2, W0+W1, W0] per axis) equals
    interpolate(nearest, 2x) then conv3x3(padding 1) on the frame-major (B*T, C, H, W) input,
    borders included (odd and 1-pixel sizes); weight gradients agree as 3x3 gradients."""
    up, conv = _upsample_pair(c, seed=n * 100 + h)
    x = _randn(n, c, h, w, seed=1).requires_grad_()
    x_plain = x.detach().clone().requires_grad_()
    out, ref = up(x), _plain_upsample(x_plain, conv)
    assert out.shape == ref.shape == (n, c, 2 * h, 2 * w)
    cot = _randn(*out.shape, seed=2)
    g = _vjp(out, {"x": x, "weight": up.conv.weight, "bias": up.conv.bias}, cot)
    g_ref = _vjp(ref, {"x": x_plain, "weight": conv.weight, "bias": conv.bias}, cot)
    _assert_all_close({"out": (out, ref), "grad_x": (g["x"], g_ref["x"]),
                       "grad_weight": (g["weight"].squeeze(2), g_ref["weight"]),
                       "grad_bias": (g["bias"], g_ref["bias"])})


@pytest.mark.parametrize("mistake", ["transposed_kernel", "flipped_kernel"])
def test_upsample_comparison_detects_a_wrong_kernel(mistake):
    """Sensitivity: a 3x3 kernel transposed or flipped in the plain form does not match."""
    up, conv = _upsample_pair(4, seed=3)
    x = _randn(6, 4, 3, 5, seed=1)
    with torch.no_grad():
        assert _rel_err(up(x), _plain_upsample(x, conv, mistake)) > WRONG


# ----------------------------------------------------------------------------- temporal conv


def _temporal_cfg(channels: int) -> UNetConfig:
    return UNetConfig(base_channels=channels, channel_mult=(1,), attn_levels=(), temporal_attn_levels=(),
                      num_heads=1, norm_groups=4, temporal=True)


def _plain_resblock(blk: ResBlock, conv_t: nn.Conv3d, x: Tensor, emb: Tensor, mistake: str | None = None) -> Tensor:
    """ResBlock with its temporal branch as a plain Conv3d (3, 1, 1) on (B, C, T, H, W).

    The spatial part reuses ``blk``'s layers; only the temporal conv is written plainly."""
    b = emb.shape[0]
    h = blk.conv1(F.silu(blk.norm1(x)))
    n, c, hh, ww = h.shape
    frames = n // b
    h = (h.reshape(b, frames, c, hh, ww) + blk.emb(F.silu(emb))[:, None, :, None, None]).reshape(n, c, hh, ww)
    h = blk.conv2(F.silu(blk.norm2(h)))
    a = F.silu(blk.norm_t(h))
    if mistake == "no_transpose":  # reads frame-major memory as if it were (B, C, T, H, W)
        video = a.reshape(b, c, frames, hh, ww)
    else:
        video = a.reshape(b, frames, c, hh, ww).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
    if mistake == "shifted_padding":  # pad two frames before, none after: a causal, shifted conv
        y = F.conv3d(F.pad(video, (0, 0, 0, 0, 2, 0)), conv_t.weight, conv_t.bias)
    elif mistake == "flipped_kernel":
        y = F.conv3d(video, conv_t.weight.flip(2), conv_t.bias, padding=(1, 0, 0))
    else:
        y = conv_t(video)
    if mistake == "no_transpose":
        y = y.reshape(n, c, hh, ww)
    else:
        y = y.permute(0, 2, 1, 3, 4).reshape(n, c, hh, ww)
    return blk.skip(x) + h + y


def _resblock_pair(cin: int, cout: int, seed: int) -> tuple[ResBlock, ResBlock, nn.Conv3d]:
    """The module, an independent copy for the plain form, and a plain Conv3d with conv_t's weights."""
    emb_dim = 6
    blk = _randomise(ResBlock(cin, cout, emb_dim, _temporal_cfg(cout)), seed)
    plain = copy.deepcopy(blk)
    conv_t = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0)).double()
    with torch.no_grad():
        conv_t.weight.copy_(blk.conv_t.weight)
        conv_t.bias.copy_(blk.conv_t.bias)
    return blk, plain, conv_t


@pytest.mark.parametrize("b,t,cin,cout,h,w", [(3, 5, 4, 8, 3, 2), (3, 7, 8, 8, 2, 2), (3, 1, 4, 8, 2, 3),
                                              (1, 7, 8, 4, 1, 1)])
def test_resblock_temporal_conv2d_equals_conv3d(b, t, cin, cout, h, w):
    """ResBlock's 3x1 conv2d on (B, C, T, H*W) equals Conv3d(kernel (3, 1, 1), padding (1, 0, 0))
    on (B, C, T, H, W) with the same weights: whole-block outputs and the gradients w.r.t. the
    frame-major input, the embedding and every parameter (conv_t's against the plain Conv3d's)."""
    blk, plain, conv_t = _resblock_pair(cin, cout, seed=10 * t + b)
    x = _randn(b * t, cin, h, w, seed=1).requires_grad_()
    emb = _randn(b, 6, seed=2).requires_grad_()
    x_p, emb_p = (v.detach().clone().requires_grad_() for v in (x, emb))
    out, ref = blk(x, emb), _plain_resblock(plain, conv_t, x_p, emb_p)
    assert out.shape == ref.shape == (b * t, cout, h, w)
    cot = _randn(*out.shape, seed=3)
    params = dict(blk.named_parameters())
    plain_params = {k: getattr(conv_t, k[len("conv_t."):]) if k.startswith("conv_t.") else p
                    for k, p in plain.named_parameters()}
    g = _vjp(out, {"x": x, "emb": emb, **params}, cot)
    g_ref = _vjp(ref, {"x": x_p, "emb": emb_p, **plain_params}, cot)
    assert g.keys() == g_ref.keys()
    _assert_all_close({"out": (out, ref), **{f"grad_{k}": (g[k], g_ref[k]) for k in g}})


@pytest.mark.parametrize("mistake", ["shifted_padding", "flipped_kernel", "no_transpose"])
def test_resblock_comparison_detects_a_wrong_temporal_conv(mistake):
    """Sensitivity: time padding shifted by a frame, a time-flipped kernel, or frame-major memory
    read as (B, C, T, H, W) in the plain form does not match."""
    blk, plain, conv_t = _resblock_pair(4, 8, seed=4)
    x, emb = _randn(3 * 5, 4, 3, 2, seed=1), _randn(3, 6, seed=2)
    with torch.no_grad():
        assert _rel_err(blk(x, emb), _plain_resblock(plain, conv_t, x, emb, mistake)) > WRONG


# ----------------------------------------------------------------------------- temporal attention


class _PlainTemporalAttention(nn.Module):
    """Textbook multi-head self-attention over the frame axis at each (b, h, w), from the maths:
    GroupNorm per frame, one fused ``Linear(C, 3C)`` split into q, k, v, heads as contiguous
    channel blocks, softmax(q k^T / sqrt(d) + B) v with B[h, i, j] = table[h, clip(j - i, -m, m)],
    heads concatenated, an output Linear, and a residual. GroupNorm and softmax run in float32
    and cast back, as in the module."""

    def __init__(self, mod: TemporalAttention, cfg: UNetConfig, channels: int) -> None:
        super().__init__()
        self.heads, self.max_dist = cfg.num_heads, cfg.max_relative_distance
        self.groups = math.gcd(channels, cfg.norm_groups)
        self.norm_weight = nn.Parameter(mod.norm.weight.detach().clone())
        self.norm_bias = nn.Parameter(mod.norm.bias.detach().clone())
        self.qkv = nn.Linear(channels, 3 * channels).double()
        self.proj = nn.Linear(channels, channels).double()
        self.table = nn.Parameter(mod.rel_bias.detach().clone())
        with torch.no_grad():
            for plain, own in ((self.qkv, mod.qkv), (self.proj, mod.proj)):
                plain.weight.copy_(own.weight)
                plain.bias.copy_(own.bias)

    def forward(self, x: Tensor, batch: int, mistake: str | None = None) -> Tensor:
        n, c, hh, ww = x.shape
        t, heads = n // batch, self.heads
        d = c // heads
        normed = F.group_norm(x.float(), self.groups, self.norm_weight.float(), self.norm_bias.float(), 1e-5)
        normed = normed.to(x.dtype).reshape(batch, t, c, hh, ww)
        seq = normed.permute(0, 3, 4, 1, 2)  # (B, H, W, T, C): one length-T sequence per position
        q, k, v = self.qkv(seq).split(c, dim=-1)
        q, k, v = (z.reshape(batch, hh, ww, t, heads, d).transpose(-2, -3) for z in (q, k, v))  # (B,H,W,heads,T,d)
        scale = 1.0 if mistake == "no_scale" else 1.0 / math.sqrt(d)
        logits = (q @ k.transpose(-1, -2)) * scale  # [..., i, j] = q_i . k_j / sqrt(d)
        sign = -1 if mistake == "transposed_bias" else 1
        index = torch.tensor([[min(max(sign * (j - i), -self.max_dist), self.max_dist) + self.max_dist
                               for j in range(t)] for i in range(t)])
        bias = self.table[:, index]  # (heads, T, T)
        weights = torch.softmax(logits.float() + bias.float(), dim=-1).to(v.dtype)
        out = (weights @ v).transpose(-2, -3).reshape(batch, hh, ww, t, c)  # heads concatenated
        out = self.proj(out).permute(0, 3, 4, 1, 2).reshape(n, c, hh, ww)  # back to (B*T, C, H, W)
        return x + out


def _attention_pair(channels: int, heads: int, max_dist: int, seed: int):
    cfg = UNetConfig(base_channels=channels, channel_mult=(1,), attn_levels=(), temporal_attn_levels=(0,),
                     num_heads=heads, norm_groups=4, max_relative_distance=max_dist)
    mod = _randomise(TemporalAttention(channels, cfg), seed)
    return mod, _PlainTemporalAttention(mod, cfg, channels)


@pytest.mark.parametrize("b,t,c,heads,max_dist,h,w", [(3, 5, 12, 3, 32, 2, 3), (3, 7, 8, 2, 3, 2, 2),
                                                      (3, 1, 8, 2, 3, 1, 2), (1, 7, 8, 1, 2, 3, 1)])
def test_temporal_attention_sliced_qkv_equals_fused_qkv(b, t, c, heads, max_dist, h, w):
    """TemporalAttention's three GEMMs on qkv weight slices, with 1/sqrt(d) folded into q's
    weights and bias, equal one fused Linear(C, 3C) split into q, k, v followed by standard
    softmax(q k^T / sqrt(d) + relative bias) v: outputs, gradients w.r.t. the frame-major input,
    and gradients w.r.t. norm, qkv, proj and the bias table (T=7 > max distance clips it)."""
    mod, plain = _attention_pair(c, heads, max_dist, seed=10 * t + c)
    x = _randn(b * t, c, h, w, seed=1).requires_grad_()
    x_p = x.detach().clone().requires_grad_()
    out, ref = mod(x, b), plain(x_p, b)
    assert out.shape == ref.shape == x.shape
    cot = _randn(*out.shape, seed=2)
    names = {"norm.weight": "norm_weight", "norm.bias": "norm_bias", "qkv.weight": "qkv.weight",
             "qkv.bias": "qkv.bias", "proj.weight": "proj.weight", "proj.bias": "proj.bias", "rel_bias": "table"}
    assert set(names) == {k for k, _ in mod.named_parameters()}
    plain_params = dict(plain.named_parameters())
    g = _vjp(out, {"x": x, **{k: p for k, p in mod.named_parameters()}}, cot)
    g_ref = _vjp(ref, {"x": x_p, **{k: plain_params[v] for k, v in names.items()}}, cot)
    _assert_all_close({"out": (out, ref), **{f"grad_{k}": (g[k], g_ref[k]) for k in g}})


@pytest.mark.parametrize("mistake", ["no_scale", "transposed_bias"])
def test_temporal_attention_comparison_detects_a_wrong_plain_form(mistake):
    """Sensitivity: the plain form without 1/sqrt(d), or with the bias indexed by i - j instead
    of j - i, does not match."""
    mod, plain = _attention_pair(8, 2, 3, seed=5)
    x = _randn(3 * 5, 8, 2, 3, seed=1)
    with torch.no_grad():
        assert _rel_err(mod(x, 3), plain(x, 3, mistake)) > WRONG
