"""A small DDPM U-Net for tiny images (Ho et al. 2020, scaled down).

Layout for the defaults (``base_channels=32, channel_mults=(1, 2)``) on an 8x8 input::

    conv_in                       [B, 32, 8, 8]
    down 0: ResBlock x n          [B, 32, 8, 8]   -> skips
            Downsample            [B, 32, 4, 4]
    down 1: ResBlock(+Attn) x n   [B, 64, 4, 4]   -> skips
    mid:    ResBlock, Attn, ResBlock  [B, 64, 4, 4]
    up 1:   ResBlock(+Attn) x n+1 (concat skips)  [B, 64, 4, 4]
            Upsample              [B, 64, 8, 8]
    up 0:   ResBlock x n+1 (concat skips)         [B, 32, 8, 8]
    out:    GroupNorm, SiLU, conv [B, C, 8, 8]

Every residual block receives the time embedding as a per-channel bias. The network knows nothing
about the noise schedule: it maps ``(x_t, t)`` to a prediction of the noise ε.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. / Ho et al.).

    Args:
        t: ``[B]`` timesteps (any numeric dtype).
        dim: embedding size (even or odd; an odd size gets a zero last column).

    Returns:
        ``[B, dim]`` float32 tensor ``[cos(t·f_0) .. cos(t·f_{h-1}), sin(t·f_0) .. sin(t·f_{h-1})]``
        with frequencies ``f_i = max_period^(−i/h)``, ``h = dim // 2``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _groups(channels: int) -> int:
    """Largest group count ≤ 8 that divides ``channels`` (GroupNorm needs an exact division)."""
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → (+ time bias) → GroupNorm → SiLU → dropout → conv, plus a skip.

    Input ``x [B, in_ch, H, W]`` and ``emb [B, time_dim]``; output ``[B, out_ch, H, W]``.
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions with a residual connection.

    ``x [B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        if channels % num_heads:
            num_heads = 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class _Level(nn.Module):
    """Residual blocks at one resolution, each optionally followed by self-attention."""

    def __init__(self, chans: list[tuple[int, int]], time_dim: int, attention: bool, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(i, o, time_dim, dropout) for i, o in chans)
        self.attns = nn.ModuleList(SelfAttention(o) if attention else nn.Identity() for _, o in chans)


class UNet(nn.Module):
    """A small U-Net ε-predictor for images.

    Args:
        in_channels: image channels ``C`` (1 for grey digits); the output has the same count.
        base_channels: channels at full resolution.
        channel_mults: channel multiplier per resolution level; there are ``len(channel_mults) − 1``
            down/upsamplings by 2, so H and W must be divisible by ``2^(len(channel_mults) − 1)``.
        attention_at_lowest: add self-attention at the lowest resolution (in its blocks and the middle).
        time_dim: size of the time embedding after the MLP (default ``4 · base_channels``).
        num_res_blocks: residual blocks per level on the way down (``+1`` on the way up).
        dropout: dropout inside residual blocks.

    ``forward(x [B, C, H, W], t LongTensor [B]) -> eps [B, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        attention_at_lowest: bool = True,
        time_dim: int | None = None,
        num_res_blocks: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or num_res_blocks < 1 or not channel_mults:
            raise ValueError("in_channels, base_channels, num_res_blocks and channel_mults must be positive/non-empty")
        time_dim = time_dim or 4 * base_channels
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.channel_mults = tuple(channel_mults)
        self.num_levels = len(channel_mults)
        self.config = dict(
            in_channels=in_channels,
            base_channels=base_channels,
            channel_mults=list(channel_mults),
            attention_at_lowest=attention_at_lowest,
            time_dim=time_dim,
            num_res_blocks=num_res_blocks,
            dropout=dropout,
        )

        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        chs = [base_channels * m for m in channel_mults]
        lowest = self.num_levels - 1
        skip_chs = [base_channels]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = base_channels
        for lvl, out in enumerate(chs):
            pairs = []
            for _ in range(num_res_blocks):
                pairs.append((ch, out))
                ch = out
                skip_chs.append(ch)
            self.down.append(_Level(pairs, time_dim, attention_at_lowest and lvl == lowest, dropout))
            if lvl != lowest:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_chs.append(ch)

        self.mid1 = ResBlock(ch, ch, time_dim, dropout)
        self.mid_attn = SelfAttention(ch) if attention_at_lowest else nn.Identity()
        self.mid2 = ResBlock(ch, ch, time_dim, dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(self.num_levels)):
            out = chs[lvl]
            pairs = []
            for _ in range(num_res_blocks + 1):
                pairs.append((ch + skip_chs.pop(), out))
                ch = out
            self.up.append(_Level(pairs, time_dim, attention_at_lowest and lvl == lowest, dropout))
            if lvl != 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))

        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x`` (``[B, C, H, W]``) at timesteps ``t`` (``[B]`` or a scalar)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        factor = 2 ** (self.num_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"H and W must be divisible by {factor} for {self.num_levels} levels, got {tuple(x.shape[2:])}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(x.dtype))  # [B, time_dim]

        h = self.conv_in(x)
        skips = [h]
        for lvl, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
                skips.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))

        return self.conv_out(F.silu(self.norm_out(h)))
