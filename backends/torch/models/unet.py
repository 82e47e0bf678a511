"""Factorized space-time U-Net video denoiser (Ho et al. 2022, "Video Diffusion Models").

Layout is (B, C, T, H, W). Spatial layers are 1x3x3 convolutions and per-frame attention;
frames interact only through 3x1x1 temporal convolutions and temporal self-attention with a
learned relative-position bias, so the network accepts any frame count T >= 1. Downsampling is
spatial only (stride (1, 2, 2)).

Export notes (the model is exported to ONNX opset 17 with dynamic B/T/H/W):
- attention is written as matmul + softmax, never F.scaled_dot_product_attention;
- reshapes use -1 or sizes read from ``x.shape`` at run time, never captured Python ints;
- softmax and GroupNorm run in float32 and cast back, so fp16 graphs stay stable;
- the timestep is always a tensor input.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import configs


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`VideoUNet`. ``frames``/``image_size`` are defaults for presets,
    tests and benchmarks; the network itself accepts other sizes."""

    in_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    # Downsample levels (0 = full resolution, 1 = half, ...) that get spatial / temporal
    # self-attention. Level indices, not pixel sizes.
    attn_levels: tuple[int, ...] = (2,)
    temporal_attn_levels: tuple[int, ...] = (1, 2)
    num_heads: int = 4
    norm_groups: int = 32  # effective groups = gcd(norm_groups, channels)
    dropout: float = 0.0
    num_classes: int = 0  # 0 = unconditional; else the table has num_classes + 1 rows (null)
    learn_sigma: bool = False  # 2C output channels: the prediction and the variance values (spec 4.5)
    # False drops every temporal layer: the net becomes a per-frame image model (ablation).
    temporal: bool = True
    max_relative_distance: int = 32  # relative-position bias is clipped beyond this distance
    time_embed_mult: int = 4
    frames: int = 8
    image_size: int = 32

    def __post_init__(self) -> None:
        # Tuples may arrive as lists (JSON); normalise so the config stays hashable.
        for name in ("channel_mult", "attn_levels", "temporal_attn_levels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be non-empty positive ints: {self.channel_mult}")
        for name in ("in_channels", "base_channels", "num_heads", "norm_groups",
                     "time_embed_mult", "max_relative_distance", "frames", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_res_blocks < 1 or self.num_classes < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("need num_res_blocks >= 1, num_classes >= 0, 0 <= dropout < 1")
        levels = len(self.channel_mult)
        for name in ("attn_levels", "temporal_attn_levels"):
            bad = [lv for lv in getattr(self, name) if not 0 <= lv < levels]
            if bad:
                raise ValueError(f"{name} has levels {bad} outside 0..{levels - 1}")
        levels_with_attn = set(self.attn_levels)
        if self.temporal:
            levels_with_attn |= set(self.temporal_attn_levels)
        for lv in sorted(levels_with_attn | {levels - 1}):  # the middle block always attends
            ch = self.base_channels * self.channel_mult[lv]
            if ch % self.num_heads:
                raise ValueError(f"channels {ch} at level {lv} not divisible by "
                                 f"num_heads={self.num_heads}")

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def size_divisor(self) -> int:
        """H and W must be multiples of this (one factor 2 per downsample)."""
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @staticmethod
    def upgrade(d: dict[str, Any]) -> dict[str, Any]:
        """A config stored by vdm 0.1 in today's names: the attention fields held level indices
        under the name ``*_resolutions``, and ``prediction`` (now beside the config, in the
        checkpoint's diffusion contract) was a field."""
        d = dict(d)
        d.pop("prediction", None)
        for old, new in (("attn_resolutions", "attn_levels"), ("temporal_attn_resolutions", "temporal_attn_levels")):
            if old in d:
                d.setdefault(new, d.pop(old))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        return configs.from_dict(cls, d, "UNetConfig")


PRESETS: dict[str, dict[str, Any]] = {
    # CPU-trainable in minutes: grayscale, 8 frames at 16x16 or 32x32.
    "tiny": dict(in_channels=1, base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
                 attn_levels=(2,), temporal_attn_levels=(2,), num_heads=4,
                 norm_groups=8, frames=8, image_size=32),
    # Single-GPU scale: RGB, 16 frames at 64x64.
    "small": dict(in_channels=3, base_channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                  attn_levels=(2, 3), temporal_attn_levels=(1, 2, 3), num_heads=4,
                  norm_groups=32, frames=16, image_size=64),
    "base": dict(in_channels=3, base_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                 attn_levels=(2, 3), temporal_attn_levels=(1, 2, 3), num_heads=8,
                 norm_groups=32, frames=16, image_size=64),
}



# --------------------------------------------------------------------------- layers
#
# Inside the network activations are kept frame-major as (B*T, C, H, W): every spatial layer
# is then a plain per-frame 2D op with no copies, and only the temporal layers reshape to
# expose the frame axis (recovered at run time from the batch size of the embedding).


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (stable under fp16/autocast).

    Applied to (B*T, C, H, W), so statistics are per frame: frames stay independent outside
    the temporal layers (``temporal=False`` is an exact image model) and the output does not
    depend on how many frames are in the clip.
    """

    def forward(self, x: Tensor) -> Tensor:
        # Affine parameters are cast too, so a plain ``model.half()`` still works.
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def _norm(channels: int, groups: int) -> GroupNorm32:
    return GroupNorm32(math.gcd(channels, groups), channels)


class SpatialConv(nn.Conv3d):
    """A 1xkxk Conv3d (weights shaped like a 3D U-Net's) applied to (B*T, C, H, W).

    It runs as conv2d on the frames: identical maths, but CPU conv3d kernels are slower for
    1xkxk kernels and would need (B, C, T, H, W) copies around every layer.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(cin, cout, (1, kernel, kernel), stride=(1, stride, stride),
                         padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight.squeeze(2), self.bias, self.stride[1:], self.padding[1:])


def _attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None,
               head_dim: int | None = None, prescaled: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over the last two dims; softmax in float32.

    Pass ``head_dim`` (d) as a Python int rather than letting it be read from ``q.shape``: the
    scale is then a constant in exported graphs, not a Shape/Cast/Pow chain computed per run."""
    # Split between q and k so fp16 logits don't overflow.
    scale = (q.shape[-1] if head_dim is None else head_dim) ** -0.25
    if prescaled:  # q already carries the whole 1/sqrt(d)
        logits = (q @ k.transpose(-1, -2)).float()
    else:
        logits = ((q * scale) @ (k * scale).transpose(-1, -2)).float()
    if bias is not None:
        logits = logits + bias.float()
    return torch.softmax(logits, dim=-1).to(v.dtype) @ v


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim), computed in float32 (t may be up to ~1000)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """Spatial residual block + timestep embedding + optional residual 3x1x1 temporal conv
    (the (2+1)D factorization)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cin, cfg.norm_groups)
        self.conv1 = SpatialConv(cin, cout)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(cout, cfg.norm_groups)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = SpatialConv(cout, cout)
        self.temporal = cfg.temporal
        if cfg.temporal:
            self.norm_t = _norm(cout, cfg.norm_groups)
            self.conv_t = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0))
        self.skip = nn.Identity() if cin == cout else SpatialConv(cin, cout, kernel=1)

    def forward(self, x: Tensor, emb: Tensor, independent: Tensor | None = None) -> Tensor:
        b = emb.shape[0]
        h = self.conv1(F.silu(self.norm1(x)))
        _, c, hh, ww = h.shape
        e = self.emb(F.silu(emb))  # (B, C), or (B, T, C) with one condition per frame
        h = h.reshape(b, -1, c, hh, ww) + (e[:, :, :, None, None] if e.dim() == 3 else e[:, None, :, None, None])
        h = self.conv2(self.dropout(F.silu(self.norm2(h.reshape(-1, c, hh, ww)))))
        if self.temporal:
            # The 3x1x1 Conv3d runs as a 3x1 conv2d on (B, C, T, H*W): same weights and maths, but
            # a 2D conv, which ONNX Runtime runs with its blocked NCHWc kernels (its Conv3d has none).
            ht = F.silu(self.norm_t(h)).reshape(b, -1, c, hh * ww).transpose(1, 2)
            w = self.conv_t.weight.squeeze(-1)
            out_t = F.conv2d(ht, w, self.conv_t.bias, padding=(1, 0))
            if independent is not None:
                # Independent frames see the conv as a 1-frame video does: the centre tap only.
                alone = F.conv2d(ht, w[:, :, 1:2], self.conv_t.bias)
                out_t = torch.where(independent[:, None, None, None], alone, out_t)
            h = h + out_t.transpose(1, 2).reshape(-1, c, hh, ww)
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Self-attention over the H*W positions of each frame independently."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.head_dim = channels // cfg.num_heads
        self.norm = _norm(channels, cfg.norm_groups)
        self.qkv = SpatialConv(channels, 3 * channels, kernel=1)
        self.proj = SpatialConv(channels, channels, kernel=1)

    def forward(self, x: Tensor) -> Tensor:
        _, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(-1, 3, self.heads, c // self.heads, hh * ww)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B*T, heads, HW, d)
        out = _attention(q, k, v, head_dim=self.head_dim).transpose(-1, -2).reshape(-1, c, hh, ww)
        return x + self.proj(out)


class TemporalAttention(nn.Module):
    """Self-attention over the frames at each spatial position with a learned
    relative-position bias ``table[head, clip(j - i)]``: a Toeplitz bias with no absolute
    positions, so it applies unchanged to any T >= 1, including T above the training length."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.head_dim = channels // cfg.num_heads
        self.max_dist = cfg.max_relative_distance
        self.norm = _norm(channels, cfg.norm_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.rel_bias = nn.Parameter(torch.randn(cfg.num_heads, 2 * self.max_dist + 1) * 0.02)

    def relative_bias(self, frames: int, device: torch.device | None = None) -> Tensor:
        """(heads, T, T) bias; entry [h, i, j] = table[h, clip(j - i)]."""
        pos = torch.arange(frames, device=device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_dist, self.max_dist) + self.max_dist
        return self.rel_bias[:, rel]

    def forward(self, x: Tensor, batch: int, independent: Tensor | None = None) -> Tensor:
        _, c, hh, ww = x.shape
        seq = self.norm(x).reshape(batch, -1, c, hh, ww).permute(0, 3, 4, 1, 2)
        t = seq.shape[3]
        # The linears see 2D (B*H*W*T, C) inputs: one GEMM with the bias fused (also in ONNX).
        # q, k and v as three GEMMs on weight slices (no split copy of a fused qkv output), with
        # the 1/sqrt(d) scale folded into the q weights (a constant in exported graphs).
        seq = seq.reshape(-1, c)
        w, b = self.qkv.weight, self.qkv.bias
        scale = self.head_dim ** -0.5
        q, k, v = (F.linear(seq, w[i * c:(i + 1) * c] * s, b[i * c:(i + 1) * c] * s)
                   .reshape(-1, t, self.heads, self.head_dim).transpose(1, 2)
                   for i, s in ((0, scale), (1, 1.0), (2, 1.0)))  # each (B*H*W, heads, T, d)
        out = _attention(q, k, v, self.relative_bias(t, x.device), self.head_dim, prescaled=True)
        if independent is not None:
            # A frame that may attend only to itself gets its own value: softmax over one key is 1.
            out = torch.where(independent.repeat_interleave(hh * ww)[:, None, None, None], v, out)
        out = self.proj(out.transpose(1, 2).reshape(-1, c))
        return x + out.reshape(batch, hh, ww, t, c).permute(0, 3, 4, 1, 2).reshape(-1, c, hh, ww)


class Downsample(SpatialConv):
    """Strided 1x3x3 conv: halves H and W, never T."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, stride=2)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = SpatialConv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        # conv3x3(nearest_upsample_2x(x)) computed at the input resolution as one stride-2
        # transposed conv: output row 2i+a sees input rows {i-1, i} (a=0, taps W0 and W1+W2) or
        # {i, i+1} (a=1, taps W0+W1 and W2), likewise for columns, and zero padding maps to zero
        # padding. 4x4 kernel [W2, W1+W2, W0+W1, W0] per axis: 16 instead of 36 multiply-adds per
        # 2x2 output block, and no upsampled copy of the input. Same weights (state_dict).
        w = self.conv.weight.squeeze(2)  # (C, C, 3, 3)
        w = torch.stack([w[:, :, 2], w[:, :, 1] + w[:, :, 2], w[:, :, 0] + w[:, :, 1], w[:, :, 0]], 2)
        w = torch.stack([w[..., 2], w[..., 1] + w[..., 2], w[..., 0] + w[..., 1], w[..., 0]], -1)
        return F.conv_transpose2d(x, w.transpose(0, 1), self.conv.bias, stride=2, padding=1)


class _Stage(nn.Module):
    """A res block followed by optional spatial then temporal attention."""

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig, level: int) -> None:
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, cfg)
        self.attn = SpatialAttention(cout, cfg) if level in cfg.attn_levels else None
        use_tattn = cfg.temporal and level in cfg.temporal_attn_levels
        self.tattn = TemporalAttention(cout, cfg) if use_tattn else None

    def forward(self, x: Tensor, emb: Tensor, independent: Tensor | None = None) -> Tensor:
        x = self.res(x, emb, independent)
        if self.attn is not None:
            x = self.attn(x)
        if self.tattn is not None:
            x = self.tattn(x, emb.shape[0], independent)
        return x


# --------------------------------------------------------------------------- network


def _tracing() -> bool:
    # Shape checks would bake example sizes into traced/exported graphs; skip them there.
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting())


class VideoUNet(nn.Module):
    """Denoiser ``forward(x (B,C,T,H,W), t (B,), y (B,) | None) -> (B, C or 2C, T, H, W)``.

    ``t`` may also be (B, T), one condition per frame: a conditional-frame model (spec 18.8) sees
    its given frames at the given level and the others at the call's level.

    ``independent`` (B,) bool marks samples whose T frames are unrelated images (joint
    image-video training): their temporal layers see each frame as a 1-frame video, so each
    output frame equals the network run on that frame alone, and no frame sees another."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch0 = cfg.base_channels
        emb_dim = ch0 * cfg.time_embed_mult
        self.time_mlp = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        # Row num_classes is the learned null class used for classifier-free guidance.
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None

        self.conv_in = SpatialConv(cfg.in_channels, ch0)
        self.down = nn.ModuleList()
        skip_channels = [ch0]
        ch = ch0
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(_Stage(ch, ch0 * mult, emb_dim, cfg, level))
                ch = ch0 * mult
                skip_channels.append(ch)
            if level < levels - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)

        # Middle: res + spatial + temporal attention, then a plain res block.
        mid_cfg = dataclasses.replace(cfg, attn_levels=(levels - 1,),
                                      temporal_attn_levels=(levels - 1,))
        self.mid = nn.ModuleList([_Stage(ch, ch, emb_dim, mid_cfg, levels - 1),
                                  _Stage(ch, ch, emb_dim, cfg, -1)])

        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            cout = ch0 * cfg.channel_mult[level]
            for i in range(cfg.num_res_blocks + 1):
                self.up.append(_Stage(ch + skip_channels.pop(), cout, emb_dim, cfg, level))
                ch = cout
                if level > 0 and i == cfg.num_res_blocks:
                    self.up.append(Upsample(ch))

        self.norm_out = _norm(ch, cfg.norm_groups)
        self.conv_out = SpatialConv(ch, cfg.out_channels)
        # Zero init: the untrained model predicts 0, the standard stable start for diffusion.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_input(self, x: Tensor, t: Tensor, y: Tensor | None = None,
                    independent: Tensor | None = None) -> None:
        """Raise ValueError with a clear message for malformed inputs."""
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"x must be (B, C, T, H, W), got shape {tuple(x.shape)}")
        b, c, _, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"x has {c} channels (shape {tuple(x.shape)}), model expects "
                             f"in_channels={cfg.in_channels}")
        div = cfg.size_divisor
        if h % div or w % div:
            raise ValueError(
                f"x spatial size {h}x{w} (shape {tuple(x.shape)}) must be divisible by "
                f"{div} = 2**(len(channel_mult)-1) for channel_mult={cfg.channel_mult}")
        if not isinstance(t, Tensor) or tuple(t.shape) not in ((b,), (b, x.shape[2])):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a tensor of shape ({b},), or ({b}, {x.shape[2]}) with one condition per "
                             f"frame, got {got}")
        if y is not None:
            if not cfg.num_classes:
                raise ValueError("class labels y given but the model is unconditional "
                                 "(num_classes=0)")
            if tuple(y.shape) != (b,) or y.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"y must be an integer tensor of shape ({b},), got "
                                 f"{tuple(y.shape)} {y.dtype}")
        if independent is not None and (tuple(independent.shape) != (b,) or independent.dtype != torch.bool):
            raise ValueError(f"independent must be a bool tensor of shape ({b},), got "
                             f"{tuple(independent.shape)} {independent.dtype}")

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, independent: Tensor | None = None) -> Tensor:
        if not _tracing():
            self.check_input(x, t, y, independent)
        dtype = self.conv_in.weight.dtype
        flat = t if t.dim() == 1 else t.reshape(-1)
        emb = self.time_mlp(timestep_embedding(flat, self.config.base_channels).to(dtype))
        if t.dim() == 2:  # one condition per frame (spec 18.8): (B, T, D)
            emb = emb.reshape(t.shape[0], t.shape[1], -1)
        if self.class_emb is not None:
            if y is None:  # unconditional call: every sample gets the null class
                y = torch.full_like(t if t.dim() == 1 else t[:, 0], self.config.num_classes, dtype=torch.long)
            c = self.class_emb(y.long())
            emb = emb + (c[:, None] if emb.dim() == 3 else c)

        b, c, t_frames, hh, ww = x.shape
        h = self.conv_in(x.to(dtype).transpose(1, 2).reshape(-1, c, hh, ww))
        skips = [h]
        for block in self.down:
            h = block(h, emb, independent) if isinstance(block, _Stage) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb, independent)
        for block in self.up:
            if isinstance(block, _Stage):
                h = block(torch.cat([h, skips.pop()], dim=1), emb, independent)
            else:
                h = block(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.reshape(b, t_frames, -1, hh, ww).transpose(1, 2)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@lru_cache(maxsize=64)
def flops_per_forward(config: UNetConfig, frames: int, size: int, batch: int = 1) -> int:
    """FLOPs (2 per multiply-add; convs, linears and matmuls) of one forward pass, counted
    with FlopCounterMode on the meta device (no memory or compute used)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = VideoUNet(config)
        x = torch.empty(batch, config.in_channels, frames, size, size)
        t = torch.empty(batch)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, t)
    return int(counter.get_total_flops())
